"""What every example service shares: CloudEvents in and out (the ``cloudevents`` SDK), ``GET /healthz``,
and serving on a host and port, in this process or as ``python -m eventferry_examples.<service>``."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from aiohttp import web
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_http, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

JSON_FORMAT = JSONFormat()
HEALTHY: web.AppKey[Callable[[], bool]] = web.AppKey("healthy")


class NotAnEvent(Exception):
    """The request does not carry a valid CloudEvent; the message says why."""


async def read_event(request: web.Request) -> BaseCloudEvent:
    message = HTTPMessage(headers=dict(request.headers), body=await request.read())
    try:
        return from_http(message, JSON_FORMAT)
    except Exception as error:  # the SDK raises several kinds (validation, JSON, missing attributes)
        raise NotAnEvent(str(error) or type(error).__name__) from None


def data_of(event: BaseCloudEvent) -> dict[str, Any]:
    """The event's JSON object data; an event with other data has none of the fields a service reads."""
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError:
            return {}
    return data if isinstance(data, dict) else {}


def event_response(event_type: str, source: str, data: dict[str, Any], status: int = 200) -> web.Response:
    """A reply in binary mode: the broker routes it like any event it receives."""
    event = CloudEvent({"type": event_type, "source": source, "datacontenttype": "application/json"}, data)
    message = to_binary(event, JSON_FORMAT)
    return web.Response(status=status, headers=message.headers, body=message.body)


def bad_request(error: Exception) -> web.Response:
    return web.json_response({"error": f"not a CloudEvent: {error}"}, status=400)


async def _healthz(request: web.Request) -> web.Response:
    healthy = request.app[HEALTHY]()
    return web.Response(status=200 if healthy else 503, text="ok\n" if healthy else "starting\n")


def make_app(routes: list[web.RouteDef], healthy: Callable[[], bool] = lambda: True) -> web.Application:
    app = web.Application()
    app[HEALTHY] = healthy
    app.add_routes([web.get("/healthz", _healthz), *routes])
    return app


class Served:
    """An app served on loopback (or any host) in the running event loop."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.runner = web.AppRunner(app, access_log=None)
        self.port = 0
        self.host = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Served:
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        self.host, self.port = host, int(self.runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()


def serve_main(build: Callable[[], web.Application], description: str) -> None:
    """``python -m eventferry_examples.<service>``: serves until stopped (HOST and PORT from the
    environment, as a container gets them, or the options)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    args = parser.parse_args()
    web.run_app(build(), host=args.host, port=args.port, access_log=None, print=None)
