"""Serving the data plane over HTTP until asked to stop, then stopping gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from aiohttp import web

from eventferry.dataplane.app import build_app
from eventferry.dataplane.dataplane import DataPlane
from eventferry.net.httpserver import start_site

log = logging.getLogger(__name__)


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


class Server:
    def __init__(self, dataplane: DataPlane, host: str, port: int, extra_routes: Sequence[web.RouteDef] = ()) -> None:
        self.dataplane = dataplane
        self.extra_routes = extra_routes
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    async def start(self) -> None:
        app = build_app(self.dataplane, self.extra_routes)
        self._runner, self._site, self.port = await start_site(app, self.host, self.port, backlog=1024,
                                                               idle_timeout=self.dataplane.settings.idle_timeout)

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stops taking requests, lets accepted events finish delivery (InMemory), then closes."""
        if self._site is not None:
            await self._site.stop()
        if not await self.dataplane.drain(drain_timeout):
            log.warning("stopped with undelivered in-memory events after waiting %.0fs", drain_timeout)
        if self._runner is not None:
            await self._runner.cleanup()
