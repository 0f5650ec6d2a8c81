"""The broker ingress: ``POST /<namespace>/<broker>`` takes CloudEvents in (binary, structured, batch)."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from eventferry.dataplane.dataplane import DataPlane
from eventferry.dataplane.dispatch import Overloaded, Unavailable, stamp_arrival, ttl_of
from eventferry.dataplane.keys import DATAPLANE_KEY
from eventferry.events import CloudEvent, InvalidEvent
from eventferry.events.http import from_http

log = logging.getLogger(__name__)

ALLOW = "POST, OPTIONS"


def _answer(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=reason + "\n", headers=headers)


async def handle(request: web.Request) -> web.StreamResponse:
    dataplane = request.app[DATAPLANE_KEY]
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    if request.method == "OPTIONS":
        return web.Response(status=200, headers={"Allow": ALLOW, "WebHook-Allowed-Origin": "*",
                                                 "WebHook-Allowed-Rate": "*"})
    if request.method != "POST":
        return _answer(405, f"method {request.method} not allowed: send CloudEvents with POST", {"Allow": ALLOW})
    if dataplane.settings.role == "dispatcher":
        return _answer(503, "this replica only dispatches: send events to the ingress replicas",
                       {"Retry-After": "1"})
    broker = dataplane.broker(namespace, name)
    started = time.monotonic()
    metrics = dataplane.metrics
    if broker is None:
        metrics.received.labels(namespace, name, "", "404").inc()
        return _answer(404, f"no broker {namespace}/{name} here: check the Broker's status.address.url")
    limit = dataplane.settings.max_event_bytes
    if request.content_length is not None and request.content_length > limit:
        metrics.received.labels(namespace, name, "", "413").inc()
        return _answer(413, f"request body of {request.content_length} bytes exceeds the limit of {limit} bytes")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        metrics.received.labels(namespace, name, "", "413").inc()
        return _answer(413, f"request body exceeds the limit of {limit} bytes")
    try:
        events = from_http(request.headers, body)
    except InvalidEvent as error:
        metrics.received.labels(namespace, name, "", "400").inc()
        return _answer(400, f"invalid CloudEvent: {error}")
    accepted = []
    for event in events:
        ttl = ttl_of(event)
        if ttl is not None and ttl <= 0:
            metrics.dropped.labels(namespace, name, "ttl_expired").inc()
            continue
        stamp_arrival(event)
        accepted.append(event)
    try:
        if accepted:
            await broker.ingest(accepted)
    except Overloaded as error:
        _count(dataplane, namespace, name, events, "429")
        return _answer(429, f"broker overloaded, retry later: {error}", {"Retry-After": str(error.retry_after)})
    except Unavailable as error:
        _count(dataplane, namespace, name, events, "503")
        return _answer(503, f"broker storage unavailable, retry later: {error}",
                       {"Retry-After": str(error.retry_after)})
    _count(dataplane, namespace, name, events, "202")
    metrics.ingress_latency.labels(namespace, name).observe(time.monotonic() - started)
    return web.Response(status=202)


def _count(dataplane: DataPlane, namespace: str, name: str, events: list[CloudEvent], code: str) -> None:
    for event in events:
        dataplane.metrics.received.labels(namespace, name, event.type, code).inc()
