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
from eventferry.net.tls import RELOAD_CHECK_SECONDS, ServerCertificate

log = logging.getLogger(__name__)


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


class Server:
    def __init__(self, dataplane: DataPlane, host: str, port: int, extra_routes: Sequence[web.RouteDef] = (),
                 tls: ServerCertificate | None = None, tls_port: int = 0,
                 tls_check_interval: float = RELOAD_CHECK_SECONDS) -> None:
        """``tls``: also serve HTTPS on ``tls_port`` (0: a free one), with a certificate that follows its files."""
        self.dataplane = dataplane
        self.extra_routes = extra_routes
        self.host = host
        self.port = port
        self.tls = tls
        self.tls_port = tls_port
        self.tls_check_interval = tls_check_interval
        self._runner: web.AppRunner | None = None
        self._sites: list[web.TCPSite] = []
        self._stop_following = asyncio.Event()
        self._following: asyncio.Task[None] | None = None

    async def start(self) -> None:
        app = build_app(self.dataplane, self.extra_routes)
        self._runner, site, self.port = await start_site(app, self.host, self.port, backlog=1024,
                                                         idle_timeout=self.dataplane.settings.idle_timeout)
        self._sites.append(site)
        if self.tls is not None:
            secure = web.TCPSite(self._runner, self.host, self.tls_port, ssl_context=self.tls.context, backlog=1024)
            await secure.start()
            self._sites.append(secure)
            sockets = getattr(secure._server, "sockets", None) or []
            self.tls_port = sockets[0].getsockname()[1] if sockets else self.tls_port
            self._following = asyncio.ensure_future(self.tls.follow(self._stop_following, self.tls_check_interval))

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stops taking requests, lets accepted events finish delivery (InMemory), then closes."""
        self._stop_following.set()
        if self._following is not None:
            await self._following
        for site in self._sites:
            await site.stop()
        if not await self.dataplane.drain(drain_timeout):
            log.warning("stopped with undelivered in-memory events after waiting %.0fs", drain_timeout)
        if self._runner is not None:
            await self._runner.cleanup()
