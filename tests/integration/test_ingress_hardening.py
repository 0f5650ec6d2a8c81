"""The ingress against hostile and unusual input, over real sockets: whole bodies, precise 4xx, nothing lost.

Each test names the finding of the hardening issue it covers (findings 1 to 7).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventferry.dataplane.dataplane import DataPlane, DataPlaneSettings
from eventferry.dataplane.server import Server
from eventferry.events.http import BATCH, STRUCTURED
from tests.support import manifests
from tests.support.broker import RunningBroker, start_broker
from tests.support.rawhttp import read_answer, request_head, send_raw
from tests.support.subscriber import Answer, Subscriber, Subscribers

pytestmark = pytest.mark.integration

LIMIT = 8 * 1024 * 1024


def one_trigger(url: str, delivery: str = "{retry: 1, backoffDelay: PT0.05S}") -> str:
    return manifests.broker() + manifests.trigger("all-events", "default", f"{url}/all", delivery)


def binary_headers(event_id: str = "e1", **extra: bytes) -> list[tuple[bytes, bytes]]:
    headers = [(b"ce-specversion", b"1.0"), (b"ce-id", event_id.encode()), (b"ce-source", b"/test"),
               (b"ce-type", b"com.example.big"), (b"content-type", b"application/octet-stream")]
    return headers + [(f"ce-{k}".encode(), v) for k, v in extra.items()]


@pytest.fixture
async def broker(tmp_path: Path, subscriber: Subscriber) -> AsyncIterator[RunningBroker]:
    settings = DataPlaneSettings(max_event_bytes=LIMIT, body_timeout=1.5, idle_timeout=1.0, max_event_types=5)
    running = await start_broker(tmp_path, one_trigger(subscriber.url), settings=settings)
    yield running
    await running.stop()


def port_of(broker: RunningBroker) -> int:
    return broker.server.port


# --- finding 1: bodies larger than one read ---------------------------------------------------------------

async def test_a_binary_event_of_several_mib_in_small_pieces_arrives_whole(broker: RunningBroker,
                                                                           subscriber: Subscriber) -> None:
    data = bytes(range(256)) * (5 * 4096)  # 5 MiB
    answer = await send_raw(port_of(broker), "/default/default", binary_headers("big"), data, chunk=16 * 1024)
    assert answer.status == 202, answer.body
    [got] = await subscriber.wait_for(1)
    assert got.event.data == data


async def test_a_chunked_binary_event_arrives_whole(broker: RunningBroker, subscriber: Subscriber) -> None:
    data = b"x" * (3 * 1024 * 1024 + 7)
    answer = await send_raw(port_of(broker), "/default/default", binary_headers("chunked"), data, chunk=100_000,
                            chunked=True)
    assert answer.status == 202, answer.body
    [got] = await subscriber.wait_for(1)
    assert got.event.data == data


async def test_structured_and_batch_bodies_of_a_mib_are_parsed_whole(broker: RunningBroker,
                                                                     subscriber: Subscriber) -> None:
    payload = base64.b64encode(b"\x00\x01" * 400_000).decode()
    event = {"specversion": "1.0", "id": "s1", "source": "/t", "type": "t.structured", "data_base64": payload}
    answer = await send_raw(port_of(broker), "/default/default", [(b"content-type", STRUCTURED.encode())],
                            json.dumps(event).encode(), chunk=8192)
    assert answer.status == 202, answer.body
    batch = [dict(event, id=f"b{i}", data_base64=base64.b64encode(bytes([i]) * 250_000).decode()) for i in range(4)]
    answer = await send_raw(port_of(broker), "/default/default", [(b"content-type", BATCH.encode())],
                            json.dumps(batch).encode(), chunk=8192, chunked=True)
    assert answer.status == 202, answer.body
    got = await subscriber.wait_for(5)
    by_id = {r.event.id: r.event.data for r in got}
    assert by_id["s1"] == b"\x00\x01" * 400_000
    assert all(by_id[f"b{i}"] == bytes([i]) * 250_000 for i in range(4))


async def test_a_chunked_upload_past_the_limit_is_refused_with_413(broker: RunningBroker,
                                                                   subscriber: Subscriber) -> None:
    answer = await send_raw(port_of(broker), "/default/default", binary_headers("too-big"), b"y" * (LIMIT + 1),
                            chunk=256 * 1024, chunked=True)
    assert answer.status == 413
    assert b"exceeds the limit" in answer.body
    await asyncio.sleep(0.2)
    assert not subscriber.requests


async def test_a_slow_body_within_the_timeout_is_accepted(broker: RunningBroker, subscriber: Subscriber) -> None:
    answer = await send_raw(port_of(broker), "/default/default", binary_headers("slow"), b"abcdefghij", chunk=2,
                            pause=0.1)
    assert answer.status == 202, answer.body
    [got] = await subscriber.wait_for(1)
    assert got.event.data == b"abcdefghij"


async def test_a_body_that_stalls_past_the_timeout_gets_408(broker: RunningBroker) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(broker))
    try:
        writer.write(request_head("/default/default", binary_headers("stall"), length=100) + b"only a part")
        await writer.drain()
        answer = await read_answer(reader, timeout=10)
        assert answer.status == 408
        assert b"did not arrive within 1.5s" in answer.body
    finally:
        writer.close()


async def test_a_large_reply_reenters_the_broker_whole(tmp_path: Path, subscribers: Subscribers) -> None:
    reply_data = b"r" * (2 * 1024 * 1024)
    replies: Subscriber

    def script(received: object, count: int) -> Answer:
        event = received.event  # type: ignore[attr-defined]
        if event.type != "com.example.ask":
            return Answer()
        return Answer(200, {"ce-specversion": "1.0", "ce-id": "reply-1", "ce-source": "/replier",
                            "ce-type": "com.example.answer", "content-type": "application/octet-stream"}, reply_data)

    replies = await subscribers(script)
    running = await start_broker(tmp_path, one_trigger(replies.url))
    try:
        async with aiohttp.ClientSession() as session, session.post(
                running.url(), headers={"ce-specversion": "1.0", "ce-id": "ask", "ce-source": "/t",
                                        "ce-type": "com.example.ask"}) as response:
            assert response.status == 202
        got = await replies.wait_for(2)
        [answer] = [r for r in got if r.event.type == "com.example.answer"]
        assert answer.event.data == reply_data
    finally:
        await running.stop()


# --- findings 2 and 3: client faults get 400, never 500 or a silent loss ----------------------------------

@pytest.mark.parametrize(("content_type", "body", "reason"), [
    (STRUCTURED, b"[" * 100_000, b"too deeply"),
    (BATCH, b"[" * 100_000, b"too deeply"),
    (STRUCTURED, b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":"\\ud800"}', b"surrogate"),
    (STRUCTURED, b'{"specversion":"1.0","id":"1","source":"/s\\ud800","type":"t"}', b"UTF-8"),
    (STRUCTURED, b'{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"a\\r\\nb: c"}',
     b"control characters"),
])
async def test_structured_client_faults_get_400(broker: RunningBroker, subscriber: Subscriber, content_type: str,
                                               body: bytes, reason: bytes) -> None:
    answer = await send_raw(port_of(broker), "/default/default", [(b"content-type", content_type.encode())], body)
    assert answer.status == 400, answer.body
    assert reason in answer.body


@pytest.mark.parametrize("header", [b"ce-source", b"ce-type", b"traceparent"])
async def test_invalid_utf8_in_a_header_is_refused_not_lost(broker: RunningBroker, subscriber: Subscriber,
                                                           header: bytes) -> None:
    headers = [h for h in binary_headers("bad-utf8") if h[0] != header] + [(header, b"/caf\xc3(\xff")]
    answer = await send_raw(port_of(broker), "/default/default", headers, b"data")
    assert answer.status == 400, answer.body
    assert b"not valid UTF-8" in answer.body
    # the metrics page still renders, and a good event after it is delivered
    good = await send_raw(port_of(broker), "/default/default", binary_headers("good"), b"ok")
    assert good.status == 202
    await subscriber.wait_for(1)
    async with aiohttp.ClientSession() as session, session.get(f"{broker.base_url}/metrics") as response:
        assert response.status == 200


# --- finding 4: labels fed by clients are bounded ---------------------------------------------------------

async def test_unknown_paths_and_many_event_types_keep_metrics_bounded(broker: RunningBroker,
                                                                       subscriber: Subscriber) -> None:
    async with aiohttp.ClientSession() as session:
        for i in range(30):
            async with session.post(f"{broker.base_url}/ns-{i}/nope-{i}", headers={"ce-specversion": "1.0"}) as r:
                assert r.status == 404
        for i in range(30):
            headers = {"ce-specversion": "1.0", "ce-id": str(i), "ce-source": "/s", "ce-type": f"type.{i}"}
            async with session.post(broker.url(), headers=headers) as r:
                assert r.status == 202
        await subscriber.wait_for(30)
        async with session.get(f"{broker.base_url}/metrics") as response:
            page = await response.text()
    received = [line for line in page.splitlines() if line.startswith("eventferry_broker_events_received_total")]
    assert not any("ns-" in line for line in received)
    assert any('namespace="_unknown"' in line and 'code="404"' in line and line.endswith(" 30.0")
               for line in received)
    types = {line.split('event_type="')[1].split('"')[0] for line in received if 'code="202"' in line}
    assert types == {"type.0", "type.1", "type.2", "type.3", "type.4", "other"}


# --- finding 5: RFC 3339 only -----------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["2020-01-01", "2020-01-01T10:00:00", "20200101T100000Z", "2020-W01-1",
                                   "2020-13-01T10:00:00Z", "2020-01-01T25:00:00Z", "2020-01-01 10:00:00Z"])
async def test_time_that_is_not_rfc3339_is_refused(broker: RunningBroker, value: str) -> None:
    answer = await send_raw(port_of(broker), "/default/default", [*binary_headers("t"), (b"ce-time", value.encode())],
                            b"")
    assert answer.status == 400
    assert b"RFC 3339" in answer.body


@pytest.mark.parametrize("value", ["2020-01-01T10:00:00Z", "2020-01-01t10:00:00.123456789+05:30",
                                   "1985-04-12T23:20:50.52-00:00"])
async def test_rfc3339_time_is_accepted(broker: RunningBroker, value: str) -> None:
    answer = await send_raw(port_of(broker), "/default/default", [*binary_headers("t"), (b"ce-time", value.encode())],
                            b"")
    assert answer.status == 202, answer.body


# --- finding 6: header limits and idle connections --------------------------------------------------------

async def test_oversized_headers_get_431(broker: RunningBroker) -> None:
    answer = await send_raw(port_of(broker), "/default/default", [*binary_headers("h"), (b"ce-big", b"v" * 20_000)],
                            b"")
    assert answer.status == 431
    many = [(f"x-h{i}".encode(), b"1") for i in range(200)]
    answer = await send_raw(port_of(broker), "/default/default", [*binary_headers("h"), *many], b"")
    assert answer.status == 431


async def test_idle_and_half_sent_connections_are_closed(broker: RunningBroker) -> None:
    for opening in (b"", b"POST /default/default HTTP/1.1\r\nHost: x\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(broker))
        writer.write(opening)
        await writer.drain()
        async with asyncio.timeout(10):
            rest = await reader.read()  # returns b"" once the server closed the connection
        assert rest == b""
        writer.close()


# --- finding 7: 503, not 404, while the contract loads ----------------------------------------------------

async def test_before_the_contract_is_loaded_the_answer_is_503_with_retry_after() -> None:
    server = Server(DataPlane(), "127.0.0.1", 0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{server.port}/default/default",
                headers={"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            assert "loading its routing contract" in await response.text()
    finally:
        await server.stop(drain_timeout=0)


# --- a delivery that raises is a failed attempt -------------------------------------------------------------

async def test_a_delivery_that_raises_is_retried_then_dead_lettered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    subscribers: Subscribers) -> None:
    from eventferry.delivery import sender as sender_module

    real_to_binary = sender_module.to_binary

    def failing_to_binary(event: Any) -> Any:
        if event.id == "boom" and "knativeerrordest" not in event.attributes:
            raise RuntimeError("cannot encode this one")  # a fault inside the attempt, not an HTTP failure
        return real_to_binary(event)

    monkeypatch.setattr(sender_module, "to_binary", failing_to_binary)
    subscriber, dls = await subscribers(), await subscribers()
    running = await start_broker(tmp_path, one_trigger(
        subscriber.url, f'{{retry: 1, backoffDelay: PT0.05S, deadLetterSink: {{uri: "{dls.url}/dls"}}}}'))
    try:
        async with aiohttp.ClientSession() as session:
            for event_id in ("boom", "fine"):
                async with session.post(running.url(), headers={"ce-specversion": "1.0", "ce-id": event_id,
                                                                "ce-source": "/s", "ce-type": "t"}) as response:
                    assert response.status == 202
            [dead] = await dls.wait_for(1)
            await subscriber.wait_for(1)
            async with session.get(f"{running.base_url}/metrics") as response:
                page = await response.text()
    finally:
        await running.stop()
    assert dead.event.id == "boom"
    assert b"cannot encode this one" in base64.b64decode(str(dead.event.attributes["knativeerrordata"]))
    assert [r.event.id for r in subscriber.received] == ["fine"]
    assert any(line.startswith("eventferry_trigger_events_retried_total") and line.endswith(" 1.0")
               for line in page.splitlines())
    assert any('outcome="dead_lettered"' in line and line.endswith(" 1.0") for line in page.splitlines())
