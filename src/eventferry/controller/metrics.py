"""The operator's Prometheus metrics and its small HTTP server: ``/metrics``, ``/healthz``, ``/readyz``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from eventferry.net.httpserver import ProbeServer

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.reconciles = Counter("eventferry_operator_reconciles", "Reconciles, by kind", ["kind"], registry=r)
        self.errors = Counter("eventferry_operator_reconcile_errors", "Reconciles that raised, by kind", ["kind"],
                              registry=r)
        self.duration = Histogram("eventferry_operator_reconcile_seconds", "Duration of a reconcile, by kind",
                                  ["kind"], buckets=BUCKETS, registry=r)
        self.status_writes = Counter("eventferry_operator_status_writes", "Status patches, by kind", ["kind"],
                                     registry=r)
        self.contract_writes = Counter("eventferry_operator_contract_writes", "Writes of the contract ConfigMap",
                                       registry=r)
        self.contract_generation = Gauge("eventferry_operator_contract_generation",
                                         "Generation of the contract last written", registry=r)
        self.contract_bytes = Gauge("eventferry_operator_contract_bytes", "Size of the contract last compiled",
                                    registry=r)
        self.loaded_generation = Gauge("eventferry_operator_dataplane_loaded_generation",
                                       "Contract generation every fresh data plane replica has loaded (-1: none)",
                                       registry=r)
        self.leader = Gauge("eventferry_operator_leader", "1 while this replica holds the Lease", registry=r)
        # Autoscaling of source adapters (built-in engine); one series per autoscaled source.
        self.source_lag = Gauge("eventferry_operator_source_lag",
                                "Consumer-group lag of an autoscaled source at the last read",
                                ["kind", "namespace", "name"], registry=r)
        self.source_desired_replicas = Gauge("eventferry_operator_source_desired_replicas",
                                             "Adapter replicas the built-in autoscaler wants",
                                             ["kind", "namespace", "name"], registry=r)
        self.scaling_decisions = Counter("eventferry_operator_scaling_decisions",
                                         "Changes of replicas by the built-in autoscalers, by the kind scaled "
                                         "(KafkaSource, RocketMQSource, Subscriber) and direction",
                                         ["kind", "direction"], registry=r)
        # Trigger subscribers scaled from their backlog; one series per workload.
        self.subscriber_desired_replicas = Gauge("eventferry_operator_subscriber_desired_replicas",
                                                 "Replicas the subscriber scaler wants for a workload",
                                                 ["namespace", "workload"], registry=r)
        self.subscriber_ready_replicas = Gauge("eventferry_operator_subscriber_ready_endpoints",
                                               "Ready endpoints of the Services of a scaled workload's Triggers",
                                               ["namespace", "workload"], registry=r)

    def subscriber_scaling(self, namespace: str, workload: str, desired: int, ready: int) -> None:
        self.subscriber_desired_replicas.labels(namespace, workload).set(desired)
        self.subscriber_ready_replicas.labels(namespace, workload).set(ready)

    def forget_subscriber(self, namespace: str, kind: str, name: str) -> None:
        for gauge in (self.subscriber_desired_replicas, self.subscriber_ready_replicas):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, f"{kind}/{name}")

    def source_scaling(self, kind: str, namespace: str, name: str, lag: int, replicas: int) -> None:
        self.source_lag.labels(kind, namespace, name).set(lag)
        self.source_desired_replicas.labels(kind, namespace, name).set(replicas)

    def forget_source(self, kind: str, namespace: str, name: str) -> None:
        for gauge in (self.source_lag, self.source_desired_replicas):
            with contextlib.suppress(KeyError):
                gauge.remove(kind, namespace, name)

    @contextlib.contextmanager
    def reconcile(self, kind: str) -> Iterator[None]:
        started = time.perf_counter()
        self.reconciles.labels(kind).inc()
        try:
            yield
        except BaseException:
            self.errors.labels(kind).inc()
            raise
        finally:
            self.duration.labels(kind).observe(time.perf_counter() - started)


@dataclass
class OperatorHealth:
    leader: bool = False
    synced: bool = False
    """The first contract pass after taking the lead is done."""


class HealthServer(ProbeServer):
    """``/healthz``: the process answers. ``/readyz``: 200 as a standby or once the leader has synced.
    Also what else every replica serves (``extra``: the RocketMQ backlog endpoint for KEDA)."""

    def __init__(self, metrics: OperatorMetrics, health: OperatorHealth, host: str, port: int,
                 extra: list[web.RouteDef] | None = None) -> None:
        def alive() -> tuple[bool, str]:
            return True, "ok"

        def ready() -> tuple[bool, str]:
            if not health.leader:
                return True, "standby: another replica holds the lease"
            if not health.synced:
                return False, "leader: first sync in progress"
            return True, "leader: synced"

        super().__init__(metrics.registry, alive, ready, host, port)
        self.routes += extra or []
