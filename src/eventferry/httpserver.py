"""Starting an aiohttp application on a host and port, and learning the port when 0 asked for a free one.

Shared by the data plane, the operator's probes and the adapters' probes.
"""

from __future__ import annotations

from aiohttp import web


async def start_site(app: web.Application, host: str, port: int,
                     backlog: int = 128) -> tuple[web.AppRunner, web.TCPSite, int]:
    """Serves ``app``; returns the runner (for ``cleanup()``), the site (for ``stop()``) and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=backlog)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    return runner, site, (sockets[0].getsockname()[1] if sockets else port)
