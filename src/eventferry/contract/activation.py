"""What the operator and the data plane tell each other about autoscaled subscribers, besides the contract.

Two small ConfigMaps in the system namespace, so that neither a pod getting ready nor a backlog that grows
rewrites the contract (which may hold thousands of Triggers):

- ``eventferry-subscriber-endpoints`` (the operator writes, every data plane replica watches): per
  autoscaled Trigger, how many ready endpoints its subscriber has, or that the broker stops holding its
  events (the subscriber did not get ready within its activation timeout). A Trigger the contract marks
  ``autoscaled`` and that is not listed here is held: a data plane that just started holds until told.
- ``eventferry-dataplane-backlog`` (each data plane replica writes its own key, the operator watches):
  per autoscaled Trigger, the events it holds. Written at once when a held Trigger's backlog appears (so
  that a subscriber at zero wakes at once), else at most every second while it changes, and as a heartbeat.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENDPOINTS_CONFIGMAP = "eventferry-subscriber-endpoints"
ENDPOINTS_KEY = "endpoints.json"
BACKLOG_CONFIGMAP = "eventferry-dataplane-backlog"


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class SubscriberEndpoints(_Model):
    ready: int = Field(default=0, ge=0, description="ready endpoints of the subscriber Service")
    released: bool = Field(default=False, description="hold no longer: the subscriber missed its activation "
                                                       "timeout, its events take the normal retry path")


def endpoints_data(endpoints: Mapping[str, SubscriberEndpoints]) -> dict[str, str]:
    """The endpoints ConfigMap's data, by Trigger key (namespace/name)."""
    document = {key: value.model_dump(exclude_defaults=True) for key, value in sorted(endpoints.items())}
    return {ENDPOINTS_KEY: json.dumps(document, separators=(",", ":"), sort_keys=True)}


def endpoints_from_data(data: Mapping[str, str] | None) -> dict[str, SubscriberEndpoints]:
    """The endpoints by Trigger key; ValueError when the document is not one."""
    text = (data or {}).get(ENDPOINTS_KEY)
    if not text:
        return {}
    try:
        document = json.loads(text)
        return {str(key): SubscriberEndpoints.model_validate(value) for key, value in dict(document).items()}
    except (ValueError, TypeError, ValidationError) as error:
        raise ValueError(f"{ENDPOINTS_KEY} is not a map of subscriber endpoints: {error}") from None


class TriggerBacklog(_Model):
    waiting: int = Field(default=0, ge=0, description="events waiting for an attempt (in memory or, Kafka "
                                                      "class, unread in the Trigger's consumer group)")
    parked: int = Field(default=0, ge=0, description="events waiting for a retry")
    in_flight: int = Field(default=0, ge=0, alias="inFlight", description="attempts in flight")
    oldest: float = Field(default=0.0, ge=0, description="seconds the longest-waiting event has waited")

    @property
    def total(self) -> int:
        return self.waiting + self.parked + self.in_flight

    def plus(self, other: TriggerBacklog) -> TriggerBacklog:
        return TriggerBacklog(waiting=self.waiting + other.waiting, parked=self.parked + other.parked,
                              in_flight=self.in_flight + other.in_flight, oldest=max(self.oldest, other.oldest))


class BacklogReport(_Model):
    """One data plane replica's report (its key in the backlog ConfigMap is its pod name)."""

    at: datetime
    triggers: dict[str, TriggerBacklog] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_defaults=False)


def backlogs(data: Mapping[str, str] | None, now: datetime, stale_after: float) -> dict[str, TriggerBacklog]:
    """Every fresh replica's report added up, by Trigger key; a report older than ``stale_after`` seconds (a
    replica that died without withdrawing it) or that does not parse counts for nothing."""
    total: dict[str, TriggerBacklog] = {}
    for text in (data or {}).values():
        try:
            report = BacklogReport.model_validate_json(text)
        except ValidationError:
            continue
        if (now - report.at).total_seconds() > stale_after:
            continue
        for key, backlog in report.triggers.items():
            total[key] = total[key].plus(backlog) if key in total else backlog
    return total
