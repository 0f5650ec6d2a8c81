"""Starting an aiohttp application on a host and port, and learning the port when 0 asked for a free one.

Shared by the data plane, the operator's probes and the adapters' probes. Every server closes
connections that stay idle (or never finish their headers) after ``idle_timeout`` seconds, and
answers headers past aiohttp's limits with 431 rather than a bare 400.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

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
