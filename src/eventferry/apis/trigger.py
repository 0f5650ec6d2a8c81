"""Trigger: types, defaults and validation (as Knative's eventing/v1 trigger_*.go)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from eventferry.apis.autoscaling import SubscriberScaling, subscriber_scaling_of
from eventferry.apis.delivery import DeliverySpec
from eventferry.apis.duck import Destination
from eventferry.apis.meta import ApiModel, Resource, Status, cel
from eventferry.apis.source import ORDERED, UNORDERED, Ordering

DELIVERY_ORDER_ANNOTATION = "eventferry.dev/delivery.order"
KNATIVE_DELIVERY_ORDER_ANNOTATION = "kafka.eventing.knative.dev/delivery.order"

ATTRIBUTE_NAME_PATTERN = "^[a-z][a-z0-9]*$"
ATTRIBUTE_NAME = re.compile(ATTRIBUTE_NAME_PATTERN)
_KEY_MESSAGE = "attribute names must start with a lower-case letter and contain only lower-case letters and digits"
_ATTRIBUTE_KEYS_RULE = cel(f"self.all(k, k.matches('{ATTRIBUTE_NAME_PATTERN}'))", _KEY_MESSAGE)

DIALECTS = ("all", "any", "not", "exact", "prefix", "suffix", "cesql")
# The API server refuses CEL rules whose worst-case cost is unbounded: every list of filters gets a
# maximum length, so that the rules on the filters nested in it have a bounded cost.
MAX_FILTERS = 32


def _check_attribute_names(attributes: dict[str, str]) -> None:
    for name in attributes:
        if not ATTRIBUTE_NAME.match(name):
            raise ValueError(f"invalid attribute name {name!r}: {_KEY_MESSAGE}")


def _single_attribute_map() -> Any:
    """The field of the exact, prefix and suffix dialects: one attribute and its value, as Knative."""
    return Field(default=None, json_schema_extra={"minProperties": 1, "maxProperties": 1, **_ATTRIBUTE_KEYS_RULE})


class TriggerFilter(ApiModel):
    """Exact matches on event attributes; a value of "" matches any value of a present attribute."""

    attributes: dict[str, str] | None = Field(default=None, json_schema_extra=_ATTRIBUTE_KEYS_RULE)

    @field_validator("attributes")
    @classmethod
    def _names(cls, attributes: dict[str, str] | None) -> dict[str, str] | None:
        _check_attribute_names(attributes or {})
        return attributes


class SubscriptionsAPIFilter(ApiModel):
    """One CloudEvents Subscriptions API filter expression: exactly one dialect per object."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            "[" + ", ".join(f"has(self.{d})" for d in DIALECTS) + "].filter(x, x).size() == 1",
            "a filter must set exactly one dialect: all, any, not, exact, prefix, suffix or cesql",
        )
    )

    all_: list[SubscriptionsAPIFilter] | None = Field(default=None, alias="all", min_length=1, max_length=MAX_FILTERS)
    """Matches when every nested filter matches."""
    any_: list[SubscriptionsAPIFilter] | None = Field(default=None, alias="any", min_length=1, max_length=MAX_FILTERS)
    """Matches when at least one nested filter matches."""
    not_: SubscriptionsAPIFilter | None = Field(default=None, alias="not")
    """Matches when the nested filter does not."""
    exact: dict[str, str] | None = _single_attribute_map()
    """One attribute that must equal the value."""
    prefix: dict[str, str] | None = _single_attribute_map()
    """One attribute that must start with the value."""
    suffix: dict[str, str] | None = _single_attribute_map()
    """One attribute that must end with the value."""
    cesql: str | None = Field(default=None, min_length=1)
    """A CloudEvents SQL v1 expression (parsed by the data plane, not here)."""

    @field_validator("exact", "prefix", "suffix")
    @classmethod
    def _one_attribute(cls, attributes: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        if attributes is not None:
            if len(attributes) != 1:
                raise ValueError(f"{info.field_name} takes exactly one attribute and its value, got {len(attributes)}")
            _check_attribute_names(attributes)
        return attributes

    @model_validator(mode="after")
    def _one_dialect(self) -> SubscriptionsAPIFilter:
        found = self.dialects()
        if len(found) != 1:
            got = ", ".join(found) if found else "none"
            raise ValueError(f"a filter must set exactly one dialect of {', '.join(DIALECTS)}; got {got}")
        return self

    def dialects(self) -> list[str]:
        values = (self.all_, self.any_, self.not_, self.exact, self.prefix, self.suffix, self.cesql)
        return [name for name, value in zip(DIALECTS, values, strict=True) if value is not None]

    @property
    def dialect(self) -> str:
        """The name of the dialect this filter uses."""
        return self.dialects()[0]


MIN_PACING_RATE = 0.001  # one attempt in about 17 minutes
MAX_PACING_RATE = 1_000_000.0
MAX_PACING_CONCURRENCY = 10_000


class PacingSpec(ApiModel):
    """Beyond Knative: the pace the subscriber can take. Events over it wait in the broker (InMemory: in the
    Trigger's bounded queue; Kafka: in the log, the Trigger's lag); waiting spends no retry."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.maxConcurrency) || has(self.rate)",
         "message": "pacing must set maxConcurrency, rate, or both"},
        {"rule": "!has(self.burst) || has(self.rate)", "message": "pacing.burst needs pacing.rate"},
    ]})

    max_concurrency: int | None = Field(default=None, ge=1, le=MAX_PACING_CONCURRENCY)
    """Deliveries to the subscriber in flight at once, at most."""
    rate: float | None = Field(default=None, ge=MIN_PACING_RATE, le=MAX_PACING_RATE)
    """Delivery attempts per second, on average (a token bucket), retries included."""
    burst: int | None = Field(default=None, ge=1, le=int(MAX_PACING_RATE))
    """Attempts that may go at once above the rate after a quiet spell; default: the rate, at least 1."""

    @model_validator(mode="after")
    def _complete(self) -> PacingSpec:
        if self.burst is not None and self.rate is None:
            raise ValueError("pacing.burst needs pacing.rate")
        if self.max_concurrency is None and self.rate is None:
            raise ValueError("pacing must set maxConcurrency, rate, or both")
        return self


class TriggerSpec(ApiModel):
    """The desired state of a Trigger."""

    broker: str = Field(min_length=1, json_schema_extra=cel("self == oldSelf", "spec.broker is immutable"))
    """Name of the Broker, in the Trigger's namespace, whose events this Trigger receives."""
    filter: TriggerFilter | None = None
    """Exact attribute matches; ignored when filters is non-empty."""
    filters: list[SubscriptionsAPIFilter] | None = Field(default=None, max_length=MAX_FILTERS)
    """Subscriptions API filters, ANDed together; overrides filter when non-empty."""
    subscriber: Destination
    """Where matching events are delivered."""
    delivery: DeliverySpec | None = None
    """Delivery to the subscriber; fully overrides the Broker's delivery."""
    pacing: PacingSpec | None = None
    """Beyond Knative: caps on the concurrency and rate of deliveries to the subscriber."""


class SubscriberScaleStatus(ApiModel):
    """Beyond Knative: the scale of the subscriber's workload, set while the Trigger's autoscaling class is."""

    workload: str | None = None
    """The workload scaled, as Kind/name."""
    desired_replicas: int | None = None
    """Replicas wanted by the backlog of every Trigger to that workload."""
    ready_replicas: int | None = None
    """Ready endpoints of the subscriber Service."""
    held_events: int | None = None
    """This Trigger's events the broker holds for the subscriber (waiting, parked for a retry)."""
    message: str | None = None
    """Why: the backlog against the target, or what keeps it from scaling."""


class TriggerStatus(Status):
    """Observed state: Ready, BrokerReady, SubscriberResolved and DeadLetterSinkResolved conditions (and
    SubscriberScaled while autoscaled)."""

    subscriber_uri: str | None = None
    """The resolved URL of spec.subscriber."""
    subscriber_ca_certs: str | None = Field(default=None, alias="subscriberCACerts")
    subscriber_audience: str | None = None
    dead_letter_sink_uri: str | None = None
    dead_letter_sink_ca_certs: str | None = Field(default=None, alias="deadLetterSinkCACerts")
    dead_letter_sink_audience: str | None = None
    subscriber_scale: SubscriberScaleStatus | None = None


class Trigger(Resource):
    """A Trigger delivers the events of a Broker that pass its filters to a subscriber."""

    api_version: Literal["eventferry.dev/v1alpha1"] = "eventferry.dev/v1alpha1"
    kind: Literal["Trigger"] = "Trigger"
    spec: TriggerSpec
    status: TriggerStatus | None = None

    @model_validator(mode="after")
    def _order_annotation(self) -> Trigger:
        order = self.annotation(DELIVERY_ORDER_ANNOTATION, KNATIVE_DELIVERY_ORDER_ANNOTATION)
        if order is not None and order not in (ORDERED, UNORDERED):
            raise ValueError(
                f"metadata.annotations[{DELIVERY_ORDER_ANNOTATION}] must be {ORDERED!r} or {UNORDERED!r}, got {order!r}"
            )
        subscriber_scaling_of(self.metadata.annotations)
        return self

    @property
    def scaling(self) -> SubscriberScaling:
        """How the subscriber's workload scales with this Trigger's backlog (disabled by default)."""
        return subscriber_scaling_of(self.metadata.annotations)

    @property
    def delivery_order(self) -> Ordering:
        """``ordered`` or ``unordered`` (default), from the delivery.order annotation (ours or Knative's)."""
        order = self.annotation(DELIVERY_ORDER_ANNOTATION, KNATIVE_DELIVERY_ORDER_ANNOTATION)
        return ORDERED if order == ORDERED else UNORDERED
