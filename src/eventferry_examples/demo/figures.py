"""Per-Trigger figures read from the data plane's Prometheus registry (the series of ``/metrics``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry


@dataclass
class TriggerFigures:
    delivered: float = 0.0
    dead_lettered: float = 0.0
    failed: float = 0.0  # retries spent and no dead-letter sink took it: dropped, and counted
    retried: float = 0.0
    waiting: float | None = None  # only a paced Trigger reports it
    in_flight: float | None = None
    latency_buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count

    @property
    def ended(self) -> float:
        """Deliveries that ended, whatever the outcome."""
        return self.delivered + self.dead_lettered + self.failed


@dataclass
class Snapshot:
    at: float
    triggers: dict[str, TriggerFigures]
    received: dict[str, float]  # event type -> events the ingress took (2xx)


def read(registry: CollectorRegistry, namespace: str, broker: str, at: float) -> Snapshot:
    triggers: dict[str, TriggerFigures] = {}
    received: dict[str, float] = {}

    def figures(labels: dict[str, str]) -> TriggerFigures | None:
        if labels.get("namespace") != namespace or labels.get("broker") != broker or "trigger" not in labels:
            return None
        return triggers.setdefault(labels["trigger"], TriggerFigures())

    for family in registry.collect():
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "eventferry_broker_events_received_total":
                if labels.get("namespace") == namespace and labels.get("broker") == broker \
                        and labels.get("code", "").startswith("2"):
                    received[labels["event_type"]] = received.get(labels["event_type"], 0.0) + sample.value
                continue
            trigger = figures(labels)
            if trigger is None:
                continue
            if sample.name == "eventferry_trigger_events_delivered_total":
                outcome = labels.get("outcome")
                if outcome == "delivered":
                    trigger.delivered += sample.value
                elif outcome == "dead_lettered":
                    trigger.dead_lettered += sample.value
                else:
                    trigger.failed += sample.value
            elif sample.name == "eventferry_trigger_events_retried_total":
                trigger.retried += sample.value
            elif sample.name == "eventferry_trigger_events_waiting":
                trigger.waiting = sample.value
            elif sample.name == "eventferry_trigger_attempts_in_flight":
                trigger.in_flight = sample.value
            elif sample.name == "eventferry_trigger_dispatch_seconds_bucket":
                trigger.latency_buckets[float(labels["le"])] = sample.value
    return Snapshot(at, triggers, received)


def quantile(now: dict[float, float], then: dict[float, float], q: float = 0.99) -> float | None:
    """The upper bound of the bucket that holds the ``q`` quantile of what ended between two readings
    (a histogram tells no more); None when nothing ended; ``inf`` past the largest bucket."""
    bounds = sorted(now)
    counts = [now[b] - then.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    wanted = math.ceil(q * counts[-1])
    for bound, count in zip(bounds, counts, strict=True):
        if count >= wanted:
            return bound
    return math.inf
