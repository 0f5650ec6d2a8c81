"""Prometheus metrics of the broker data plane (one registry per data plane, served on /metrics).

Labels fed by client input are bounded: requests for brokers this data plane does not serve share
one series (``UNKNOWN``), and event types past ``max_event_types`` distinct values count as ``OTHER``.
Names of brokers and Triggers come from the contract, not from clients.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from eventferry.events.event import is_unicode_text

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DEFAULT_MAX_EVENT_TYPES = 100
UNKNOWN = "_unknown"
OTHER = "other"
MAX_LABEL_CHARS = 200


class BoundedLabel:
    """The first ``limit`` distinct values keep their own series; later ones share ``OTHER``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit or len(value) > MAX_LABEL_CHARS or not is_unicode_text(value):
            return OTHER
        self._seen.add(value)
        return value


class BrokerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None,
                 max_event_types: int = DEFAULT_MAX_EVENT_TYPES) -> None:
        self.registry = registry or CollectorRegistry()
        self.event_type = BoundedLabel(max_event_types)
        r = self.registry
        self.received = Counter("eventferry_broker_events_received", "Events answered by the ingress",
                                ["namespace", "broker", "event_type", "code"], registry=r)
        self.ingress_latency = Histogram("eventferry_broker_ingress_seconds",
                                         "Time from request to answer at the ingress",
                                         ["namespace", "broker"], buckets=LATENCY_BUCKETS, registry=r)
        self.delivered = Counter("eventferry_trigger_events_delivered", "Deliveries that ended, by outcome",
                                 ["namespace", "broker", "trigger", "event_type", "code", "outcome"], registry=r)
        self.retried = Counter("eventferry_trigger_events_retried", "Failed attempts that will be retried",
                               ["namespace", "broker", "trigger", "code"], registry=r)
        self.dispatch_latency = Histogram("eventferry_trigger_dispatch_seconds",
                                          "Time from arrival at the broker to the end of a delivery",
                                          ["namespace", "broker", "trigger"], buckets=LATENCY_BUCKETS, registry=r)
        self.dropped = Counter("eventferry_broker_events_dropped", "Events dropped without delivery, by reason",
                               ["namespace", "broker", "reason"], registry=r)
        self.queued = Gauge("eventferry_broker_events_queued", "Deliveries waiting or in flight",
                            ["namespace", "broker"], registry=r)
        trigger_labels = ["namespace", "broker", "trigger"]
        self.trigger_waiting = Gauge("eventferry_trigger_events_waiting",
                                     "Events held for a paced Trigger in this process (queued, or waiting for "
                                     "its pace); a Kafka-class Trigger's backlog in the log is its lag",
                                     trigger_labels, registry=r)
        self.trigger_wait_age = Gauge("eventferry_trigger_oldest_wait_seconds",
                                      "How long the longest-waiting event of the Trigger has waited for its pace",
                                      trigger_labels, registry=r)
        self.trigger_in_flight = Gauge("eventferry_trigger_attempts_in_flight",
                                       "Attempts at the Trigger's subscriber in flight", trigger_labels, registry=r)
        self.contract_generation = Gauge("eventferry_contract_generation", "Generation of the loaded contract",
                                         registry=r)

    def received_unknown(self, code: str) -> None:
        """A request not for a broker served here: one series whatever path the client asked for."""
        self.received.labels(UNKNOWN, UNKNOWN, "", code).inc()
