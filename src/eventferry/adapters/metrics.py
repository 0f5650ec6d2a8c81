"""Prometheus metrics of a source adapter, in a registry of its own (served on /metrics)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SOURCE_LABELS = ("kind", "namespace", "source")


class AdapterMetrics:
    """Every series carries the source's kind (kafka|rocketmq), namespace and name."""

    def __init__(self, kind: str, namespace: str, name: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.labels = {"kind": kind, "namespace": namespace, "source": name}
        r = self.registry
        self._received = Counter("eventferry_adapter_messages_received", "Messages read from the topic",
                                 [*SOURCE_LABELS, "topic"], registry=r)
        self._outcomes = Counter("eventferry_adapter_events_sent",
                                 "Deliveries that ended, by outcome: delivered, dead_lettered, failed (failed ones "
                                 "are tried again later, never skipped)", [*SOURCE_LABELS, "outcome", "code"],
                                 registry=r)
        self._retried = Counter("eventferry_adapter_events_retried", "Failed attempts that will be retried",
                                [*SOURCE_LABELS, "code"], registry=r)
        self._malformed = Counter("eventferry_adapter_messages_malformed",
                                  "Messages that claim to be CloudEvents but are not valid ones, by what became of "
                                  "them (dead_lettered or dropped)", [*SOURCE_LABELS, "action"], registry=r)
        self._headers_skipped = Counter("eventferry_adapter_headers_skipped",
                                        "Message headers left out of the event, by reason", [*SOURCE_LABELS, "reason"],
                                        registry=r)
        self._latency = Histogram("eventferry_adapter_delivery_seconds",
                                  "Time from reading a message to the end of its delivery",
                                  SOURCE_LABELS, buckets=LATENCY_BUCKETS, registry=r)
        self._in_flight = Gauge("eventferry_adapter_messages_in_flight", "Messages read and not yet settled",
                                SOURCE_LABELS, registry=r)
        self._lag = Gauge("eventferry_adapter_consumer_lag",
                          "Kafka: records of the partition not yet delivered (high watermark minus the lowest "
                          "undelivered offset)", [*SOURCE_LABELS, "topic", "partition"], registry=r)

    def received(self, topic: str, count: int = 1) -> None:
        self._received.labels(**self.labels, topic=topic).inc(count)

    def outcome(self, outcome: str, code: int | None) -> None:
        self._outcomes.labels(**self.labels, outcome=outcome, code="" if code is None else str(code)).inc()

    def retried(self, code: int | None) -> None:
        self._retried.labels(**self.labels, code="" if code is None else str(code)).inc()

    def malformed(self, action: str) -> None:
        self._malformed.labels(**self.labels, action=action).inc()

    def header_skipped(self, reason: str) -> None:
        self._headers_skipped.labels(**self.labels, reason=reason).inc()

    def latency(self, seconds: float) -> None:
        self._latency.labels(**self.labels).observe(seconds)

    def in_flight(self, count: int) -> None:
        self._in_flight.labels(**self.labels).set(count)

    def lag(self, topic: str, partition: int, value: int) -> None:
        self._lag.labels(**self.labels, topic=topic, partition=str(partition)).set(value)

    def forget_lag(self, topic: str, partition: int) -> None:
        with contextlib.suppress(KeyError):
            self._lag.remove(*self.labels.values(), topic, str(partition))

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent), for tests and the benchmark."""
        found = self.registry.get_sample_value(name, {**self.labels, **labels})
        return 0.0 if found is None else found
