"""The adapter's small HTTP server: ``/healthz``, ``/readyz`` (ready once consuming) and ``/metrics``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from eventferry.httpserver import start_site

log = logging.getLogger(__name__)


@dataclass
class Health:
    ready: bool = False
    alive: bool = True
    reason: str = "starting"  # why it is not ready (or not alive)

    def set_ready(self) -> None:
        self.ready, self.reason = True, ""

    def set_not_ready(self, reason: str) -> None:
        self.ready, self.reason = False, reason


class HealthServer:
    def __init__(self, health: Health, registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
        self.health = health
        self.registry = registry
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner, _, self.port = await start_site(app, self.host, self.port)
        log.info("serving /healthz, /readyz and /metrics on port %d", self.port, extra={"fields": {"port": self.port}})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        if self.health.alive:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=f"not alive: {self.health.reason}\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.health.ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {self.health.reason}\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
