"""The readiness gate: a Broker or Trigger is Ready only once the data plane routes by its current spec.

Each data plane replica writes ``{"generation": G, "heartbeat": T}`` under its pod name into the
ConfigMap ``eventferry-dataplane-status``. The operator remembers, for each Broker and Trigger, the
first contract generation that holds its current entry (``ContractHistory``); the entry is live once
every replica that reported recently has loaded that generation or a later one (``loaded_generation``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eventferry.contract.model import Contract
from eventferry.resources.conditions import Cond, true, unknown

BROKER = "Broker"
TRIGGER = "Trigger"


@dataclass(frozen=True)
class Report:
    replica: str
    generation: int
    heartbeat: datetime


def encode_report(generation: int, now: datetime) -> str:
    return json.dumps({"generation": generation, "heartbeat": now.astimezone(UTC).isoformat()})


def report_patch(replica: str, generation: int | None, now: datetime) -> dict[str, Any]:
    """Merge patch of the status ConfigMap for one replica; ``generation=None`` removes the replica."""
    return {"data": {replica: None if generation is None else encode_report(generation, now)}}


def parse_reports(data: Mapping[str, str] | None) -> dict[str, Report]:
    """The reports of a status ConfigMap's data; entries that do not parse are left out."""
    reports = {}
    for replica, text in (data or {}).items():
        try:
            document = json.loads(text)
            heartbeat = datetime.fromisoformat(document["heartbeat"])
            if heartbeat.tzinfo is None:
                heartbeat = heartbeat.replace(tzinfo=UTC)
            reports[replica] = Report(replica, int(document["generation"]), heartbeat)
        except (ValueError, KeyError, TypeError):
            continue
    return reports


def fresh(reports: Mapping[str, Report], now: datetime, stale_after: float) -> list[Report]:
    horizon = now - timedelta(seconds=stale_after)
    return [r for r in reports.values() if r.heartbeat >= horizon]


def loaded_generation(reports: Mapping[str, Report], now: datetime, stale_after: float) -> int | None:
    """The generation that every replica heard from within ``stale_after`` seconds has loaded;
    None when no replica reported recently (then nothing can be known to be routed)."""
    recent = fresh(reports, now, stale_after)
    return min(r.generation for r in recent) if recent else None


def gate(required: int | None, loaded: int | None, condition: str) -> Cond:
    """``condition`` True once generation ``required`` is loaded everywhere, Unknown while waiting."""
    if required is None:
        return unknown(condition, "NotInContract", "not in the routing contract yet")
    if loaded is None:
        return unknown(condition, "DataPlaneUnavailable",
                       f"waiting for the broker data plane to load contract generation {required}: "
                       "no data plane replica has reported recently")
    if loaded < required:
        return unknown(condition, "ContractNotLoaded",
                       f"waiting for the broker data plane to load contract generation {required} "
                       f"(loaded by every replica: {loaded})")
    return true(condition)


class ContractHistory:
    """For each Broker and Trigger of the written contracts: the first generation holding its entry as it is."""

    def __init__(self) -> None:
        self._first: dict[tuple[str, str, str], tuple[Any, int]] = {}
        self.removed: dict[tuple[str, str], int] = {}
        """Broker (namespace, name) -> the first generation without it."""

    def record(self, contract: Contract) -> None:
        seen: dict[tuple[str, str, str], Any] = {}
        for broker in contract.brokers:
            seen[(BROKER, broker.namespace, broker.name)] = broker.model_copy(update={"triggers": []})
            for trigger in broker.triggers:
                seen[(TRIGGER, trigger.namespace, trigger.name)] = trigger
        for key in [k for k in self._first if k not in seen]:
            del self._first[key]
            if key[0] == BROKER:
                self.removed[(key[1], key[2])] = contract.generation
        for key, entry in seen.items():
            known = self._first.get(key)
            if known is None or known[0] != entry:
                self._first[key] = (entry, contract.generation)
            if key[0] == BROKER:
                self.removed.pop((key[1], key[2]), None)

    def first_generation(self, kind: str, namespace: str, name: str) -> int | None:
        known = self._first.get((kind, namespace, name))
        return known[1] if known else None

    def entry(self, kind: str, namespace: str, name: str) -> Any:
        """The entry as last written (a contract Broker without its Triggers, or a contract Trigger)."""
        known = self._first.get((kind, namespace, name))
        return known[0] if known else None
