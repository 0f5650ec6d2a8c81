"""The aiohttp application of the broker data plane: ingress, probes, metrics, loaded contract."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from eventferry.dataplane import ingress
from eventferry.dataplane.dataplane import DataPlane
from eventferry.dataplane.keys import DATAPLANE_KEY
from eventferry.net.httpserver import probe_routes


def _ready(dataplane: DataPlane) -> tuple[bool, str]:
    if not dataplane.loaded:
        return False, "no contract loaded yet"
    if not dataplane.ready():
        return False, "brokers are starting (Kafka consumers joining their groups)"
    return True, f"ready: contract generation {dataplane.contract.generation}"


async def contract_status(request: web.Request) -> web.Response:
    """What the operator reads to know that a Trigger's routing is live."""
    dataplane: DataPlane = request.app[DATAPLANE_KEY]
    return web.json_response({
        "generation": dataplane.contract.generation,
        "loaded": dataplane.loaded,
        "triggers": {t.key: t.uid for b in dataplane.contract.brokers for t in b.triggers},
    })


def build_app(dataplane: DataPlane, extra_routes: Sequence[web.RouteDef] = ()) -> web.Application:
    # The ingress enforces its own, configurable body limit; aiohttp's must not cut in first.
    app = web.Application(client_max_size=dataplane.settings.max_event_bytes + 1024)
    app[DATAPLANE_KEY] = dataplane
    app.router.add_routes(probe_routes(dataplane.metrics.registry, lambda: (True, "ok"), lambda: _ready(dataplane)))
    app.router.add_get("/contract", contract_status)
    app.router.add_routes(extra_routes)
    app.router.add_route("*", "/{namespace}/{name}", ingress.handle)

    async def close_dataplane(_: web.Application) -> None:
        await dataplane.close()

    app.on_cleanup.append(close_dataplane)
    return app
