"""The operator's Prometheus metrics and its small HTTP server: ``/metrics``, ``/healthz``, ``/readyz``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from eventferry.httpserver import start_site

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
class Health:
    leader: bool = False
    synced: bool = False
    """The first contract pass after taking the lead is done."""


class HealthServer:
    """``/healthz``: the process answers. ``/readyz``: 200 as a standby or once the leader has synced."""

    def __init__(self, metrics: OperatorMetrics, health: Health, host: str, port: int) -> None:
        self.metrics = metrics
        self.health = health
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner, _, self.port = await start_site(app, self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if not self.health.leader:
            return web.Response(text="standby: another replica holds the lease\n")
        if not self.health.synced:
            return web.Response(status=503, text="leader: first sync in progress\n")
        return web.Response(text="leader: synced\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
