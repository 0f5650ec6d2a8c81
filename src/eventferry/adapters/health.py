"""The adapter's small HTTP server: ``/healthz``, ``/readyz`` (ready once consuming) and ``/metrics``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from eventferry.net.httpserver import ProbeServer

log = logging.getLogger(__name__)


@dataclass
class AdapterHealth:
    ready: bool = False
    alive: bool = True
    reason: str = "starting"  # why it is not ready (or not alive)

    def set_ready(self) -> None:
        self.ready, self.reason = True, ""

    def set_not_ready(self, reason: str) -> None:
        self.ready, self.reason = False, reason


class HealthServer(ProbeServer):
    """The adapter's probes: ready once consuming."""

    def __init__(self, health: AdapterHealth, registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
        def alive() -> tuple[bool, str]:
            return (True, "ok") if health.alive else (False, f"not alive: {health.reason}")

        def ready() -> tuple[bool, str]:
            return (True, "ready") if health.ready else (False, f"not ready: {health.reason}")

        super().__init__(registry, alive, ready, host, port)

    async def start(self) -> None:
        await super().start()
        log.info("serving /healthz, /readyz and /metrics on port %d", self.port, extra={"fields": {"port": self.port}})
