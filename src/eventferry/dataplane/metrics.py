"""Prometheus metrics of the broker data plane (one registry per data plane, served on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class BrokerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
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
        self.contract_generation = Gauge("eventferry_contract_generation", "Generation of the loaded contract",
                                         registry=r)
