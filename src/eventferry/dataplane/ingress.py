"""The broker ingress: ``POST /<namespace>/<broker>`` takes CloudEvents in (binary, structured, batch).

A request goes through four steps, each of which may refuse it with a precise status: the guard
(method, role, contract loaded, broker known, declared length), the sender (a valid token for the Broker's
audience, 401, and a policy that lets it in, 403, when the Broker asks for them: before the body is read),
the body and parse (the whole body up to the limit, in time, and a valid event that can be delivered as it
is, and allowed by the sender's policy's filters), and admission (the broker stores it, or says it is full or
unavailable). Every answer is counted once, in ``_count``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from eventferry.dataplane.admission import (
    DEFAULT_TTL,
    Overloaded,
    Unavailable,
    arrival_time,
    stamp_arrival,
    ttl_of,
)
from eventferry.dataplane.authentication import KeysUnavailable, Unauthenticated
from eventferry.dataplane.authorization import Forbidden
from eventferry.dataplane.dataplane import BrokerRuntime, DataPlane
from eventferry.dataplane.keys import DATAPLANE_KEY
from eventferry.events import CloudEvent, InvalidEvent
from eventferry.events.http import from_http
from eventferry.net.httpbody import BodyTooLarge, read_body

log = logging.getLogger(__name__)

ALLOW = "POST, OPTIONS"


class Refused(Exception):
    """An answer other than 202; ``close`` when the rest of the request body is not worth reading."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None, close: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers
        self.close = close

    def response(self) -> web.Response:
        response = web.Response(status=self.status, text=self.reason + "\n", headers=self.headers)
        if self.close:
            response.force_close()
        return response


async def handle(request: web.Request) -> web.StreamResponse:
    dataplane = request.app[DATAPLANE_KEY]
    if request.method == "OPTIONS":
        return web.Response(status=200, headers={"Allow": ALLOW, "WebHook-Allowed-Origin": "*",
                                                 "WebHook-Allowed-Rate": "*"})
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    started = time.monotonic()
    events: list[CloudEvent] = []
    broker: BrokerRuntime | None = None
    try:
        broker = _guard(request, dataplane, namespace, name)
        check_events = await _sender(request, dataplane, broker)
        body = await _body(request, dataplane)
        events = _parse(request, body)
        check_events(events)
        await _admit(dataplane, broker, events)
    except Refused as refusal:
        _count(dataplane, namespace, name, broker is not None, events, str(refusal.status))
        return refusal.response()
    _count(dataplane, namespace, name, True, events, "202")
    dataplane.metrics.ingress_latency.labels(namespace, name).observe(time.monotonic() - started)
    return web.Response(status=202)


def _guard(request: web.Request, dataplane: DataPlane, namespace: str, name: str) -> BrokerRuntime:
    if request.method != "POST":
        raise Refused(405, f"method {request.method} not allowed: send CloudEvents with POST", {"Allow": ALLOW})
    if dataplane.settings.https_only and not request.secure:
        raise Refused(403, "this ingress takes events over HTTPS only: use the Broker's https address "
                           "(status.address.url)", close=True)
    if dataplane.settings.role == "dispatcher":
        raise Refused(503, "this replica only dispatches: send events to the ingress replicas", {"Retry-After": "1"})
    if not dataplane.loaded:
        # Not "no such broker": the contract that may name it is still loading (a restart, say).
        raise Refused(503, "the data plane is loading its routing contract: retry shortly", {"Retry-After": "1"})
    broker = dataplane.broker(namespace, name)
    if broker is None:
        raise Refused(404, f"no broker {namespace}/{name} here: check the Broker's status.address.url")
    limit = dataplane.settings.max_event_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, f"request body of {request.content_length} bytes exceeds the limit of {limit} bytes",
                      close=True)
    return broker


def _no_check(_: list[CloudEvent]) -> None:
    return None


async def _sender(request: web.Request, dataplane: DataPlane,
                  broker: BrokerRuntime) -> Callable[[list[CloudEvent]], None]:
    """Authenticates and authorizes the sender when the Broker asks (``audience`` in the contract); the
    returned check then refuses the events that the sender's policies' filters do not let through."""
    audience = broker.spec.audience
    if not audience:
        return _no_check
    verifier, policies = dataplane.verifier, dataplane.sender_policies.get(broker.spec.key)
    if verifier is None or policies is None:
        raise Refused(503, "this data plane cannot verify senders' tokens (no access to the API server's "
                           "service-account keys): check its service account and the API server", {"Retry-After": "5"},
                      close=True)
    try:
        caller = await verifier.verify(request.headers.get("Authorization"), audience)
    except Unauthenticated as error:
        raise Refused(401, f"unauthenticated: {error}", {"WWW-Authenticate": _challenge(audience, str(error))},
                      close=True) from None
    except KeysUnavailable as error:
        raise Refused(503, f"cannot verify the token yet: {error}", {"Retry-After": "2"}, close=True) from None
    try:
        admitting = policies.admitting(caller.subject)
    except Forbidden as error:
        raise Refused(403, f"forbidden: {error}", close=True) from None

    def check_events(events: list[CloudEvent]) -> None:
        try:
            policies.check_events(caller.subject, admitting, events)
        except Forbidden as error:
            raise Refused(403, f"forbidden: {error}") from None

    return check_events


def _challenge(audience: str, reason: str) -> str:
    quoted = reason.replace("\\", "").replace('"', "'")
    return f'Bearer realm="eventferry", audience="{audience}", error="invalid_token", error_description="{quoted}"'


async def _body(request: web.Request, dataplane: DataPlane) -> bytes:
    limit, timeout = dataplane.settings.max_event_bytes, dataplane.settings.body_timeout
    try:
        async with asyncio.timeout(timeout):
            return await read_body(request.content, limit)
    except BodyTooLarge:
        raise Refused(413, f"request body exceeds the limit of {limit} bytes", close=True) from None
    except TimeoutError:
        raise Refused(408, f"the request body did not arrive within {timeout:g}s", close=True) from None
    except HttpProcessingError as error:  # broken chunked encoding, a body shorter than its Content-Length
        raise Refused(400, f"malformed request body: {error.message}", close=True) from None


def _parse(request: web.Request, body: bytes) -> list[CloudEvent]:
    try:
        return from_http(request.headers, body)
    except InvalidEvent as error:
        raise Refused(400, f"invalid CloudEvent: {error}") from None


async def _admit(dataplane: DataPlane, broker: BrokerRuntime, events: list[CloudEvent]) -> None:
    accepted = []
    arrived = arrival_time()  # one request, one arrival
    for event in events:
        ttl = ttl_of(event)
        if ttl is not None and ttl <= 0:
            dataplane.metrics.dropped.labels(broker.spec.namespace, broker.spec.name, "ttl_expired").inc()
            continue
        stamp_arrival(event, DEFAULT_TTL if ttl is None else None, arrived)  # an own TTL stays as it came
        accepted.append(event)
    if not accepted:
        return
    try:
        await broker.ingest(accepted)
    except Overloaded as error:
        raise Refused(429, f"broker overloaded, retry later: {error}", {"Retry-After": str(error.retry_after)}) \
            from None
    except Unavailable as error:
        raise Refused(503, f"broker storage unavailable, retry later: {error}",
                      {"Retry-After": str(error.retry_after)}) from None


def _count(dataplane: DataPlane, namespace: str, name: str, known: bool, events: list[CloudEvent],
           code: str) -> None:
    """One count per event answered (one per request when no event was parsed); labels stay bounded."""
    metrics = dataplane.metrics
    if not known:
        metrics.received_unknown(code)
        return
    if not events:
        metrics.received.labels(namespace, name, "", code).inc()
        return
    # A batch is mostly of a few types: one label lookup per type, not per event.
    for event_type, count in collections.Counter(event.type for event in events).items():
        metrics.received.labels(namespace, name, metrics.event_type(event_type), code).inc(count)
