"""The aiohttp application of the broker data plane: ingress, probes, metrics, loaded contract."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventferry.dataplane import ingress
from eventferry.dataplane.dataplane import DataPlane
from eventferry.dataplane.keys import DATAPLANE_KEY


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    dataplane: DataPlane = request.app[DATAPLANE_KEY]
    if not dataplane.loaded:
        return web.Response(status=503, text="no contract loaded yet\n")
    if not dataplane.ready():
        return web.Response(status=503, text="brokers are starting (Kafka consumers joining their groups)\n")
    return web.Response(text=f"ready: contract generation {dataplane.contract.generation}\n")


async def metrics(request: web.Request) -> web.Response:
    dataplane: DataPlane = request.app[DATAPLANE_KEY]
    return web.Response(body=generate_latest(dataplane.metrics.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


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
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/contract", contract_status)
    app.router.add_routes(extra_routes)
    app.router.add_route("*", "/{namespace}/{name}", ingress.handle)

    async def close_dataplane(_: web.Application) -> None:
        await dataplane.close()

    app.on_cleanup.append(close_dataplane)
    return app
