"""Starting an aiohttp application on a host and port, and learning the port when 0 asked for a free one.

Shared by the data plane, the operator and the adapters, with the probes (``/healthz``, ``/readyz``,
``/metrics``) they all serve. Every server closes
connections that stay idle (or never finish their headers) after ``idle_timeout`` seconds, and
answers headers past aiohttp's limits with 431 rather than a bare 400.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

DEFAULT_IDLE_TIMEOUT = 60.0
MAX_HEADERS = 128  # header lines per request
MAX_FIELD_BYTES = 8190  # one header line (name or value)
MAX_URL_BYTES = 4096  # the request target; kept apart from MAX_FIELD_BYTES so that the two errors differ


class _RequestHandler(web_protocol.RequestHandler):
    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status == 400 and isinstance(exc, LineTooLong) and exc.args[1:2] == (MAX_URL_BYTES,):
            status, message = 414, f"request target longer than {MAX_URL_BYTES} bytes\n"
        elif status == 400 and _headers_too_large(exc):
            status = 431
            message = (f"request header fields too large: at most {MAX_HEADERS} header lines of "
                       f"{MAX_FIELD_BYTES} bytes each\n")
        return super().handle_error(request, status, exc, message)


def _headers_too_large(exc: BaseException | None) -> bool:
    if isinstance(exc, LineTooLong):
        return True
    return isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower()


class _Server(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _RequestHandler(self, loop=self._loop, **self._kwargs)


class _AppRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds a plain Server here; ours only differs in the handler class it makes per connection.
        server.__class__ = _Server
        return server


async def start_site(app: web.Application, host: str, port: int, backlog: int = 128,
                     idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> tuple[web.AppRunner, web.TCPSite, int]:
    """Serves ``app``; returns the runner (for ``cleanup()``), the site (for ``stop()``) and the bound port."""
    handler_args: dict[str, Any] = {"keepalive_timeout": idle_timeout, "max_headers": MAX_HEADERS,
                                    "max_field_size": MAX_FIELD_BYTES, "max_line_size": MAX_URL_BYTES}
    runner = _AppRunner(app, access_log=None, handle_signals=False, **handler_args)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=backlog)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    return runner, site, (sockets[0].getsockname()[1] if sockets else port)


# A probe's verdict: (passing, the text of the answer). Passing answers 200, failing 503.
Probe = Callable[[], tuple[bool, str]]


def probe_routes(registry: CollectorRegistry, alive: Probe, ready: Probe) -> list[web.RouteDef]:
    """``/healthz``, ``/readyz`` and ``/metrics``: the probes every component serves, the same way."""

    def answer(probe: Probe) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            passing, text = probe()
            return web.Response(status=200 if passing else 503, text=text + "\n")
        return handle

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [web.get("/healthz", answer(alive)), web.get("/readyz", answer(ready)), web.get("/metrics", metrics)]


class ProbeServer:
    """A component's own small server for its probes (the operator's and the adapters'; the data plane
    serves the same routes beside its ingress)."""

    def __init__(self, registry: CollectorRegistry, alive: Probe, ready: Probe, host: str, port: int) -> None:
        self.routes = probe_routes(registry, alive, ready)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_routes(self.routes)
        self._runner, _, self.port = await start_site(app, self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
