"""Properties of the live ingress over real sockets (hypothesis): arbitrary header and body bytes never
get a 5xx, and valid events of up to several MiB, sent in many small pieces, reach the subscriber
byte for byte in binary, structured and batch modes."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventferry.dataplane.dataplane import DataPlaneSettings
from eventferry.events import CloudEvent
from eventferry.events.http import BATCH, to_binary, to_json_object, to_structured
from tests.support import manifests
from tests.support.broker import RunningBroker, start_broker
from tests.support.rawhttp import send_raw
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.integration

T = TypeVar("T")
_ids = itertools.count()  # hypothesis replays examples: each send gets an id of its own


class Live:
    """A broker and a subscriber on an event loop of their own thread, so that sync hypothesis tests can use them."""

    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.subscriber: Subscriber = self.run(Subscriber().start())
        self.broker: RunningBroker = self.run(start_broker(
            tmp_path, manifests.broker() + manifests.trigger("all-events", "default", f"{self.subscriber.url}/all"),
            settings=DataPlaneSettings(max_event_bytes=16 * 1024 * 1024, body_timeout=5)))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self.broker.stop())
        self.run(self.subscriber.stop())

        async def cancel_the_rest() -> None:
            rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    running = Live(tmp_path_factory.mktemp("ingress-properties"))
    yield running
    running.close()


header_bytes = st.binary(min_size=0, max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
header_names = st.sampled_from([b"ce-specversion", b"ce-id", b"ce-source", b"ce-type", b"ce-time", b"ce-ext",
                                b"content-type", b"traceparent", b"knative-x", b"ce-", b"x-other"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(header_names, header_bytes), max_size=8), st.binary(max_size=300),
       st.sampled_from([0, 1, 7]))
def test_arbitrary_header_and_body_bytes_never_get_a_5xx(live: Live, headers: list[tuple[bytes, bytes]], body: bytes,
                                                         chunk: int) -> None:
    answer = live.run(send_raw(live.broker.server.port, "/default/default", headers, body, chunk=chunk))
    assert answer.status < 500, (answer.status, answer.body)


@st.composite
def events(draw: st.DrawFn) -> CloudEvent:
    data = draw(st.sampled_from([b"", b"small", bytes(range(256)) * 40])) + draw(st.binary(max_size=500))
    if draw(st.booleans()):
        data = (data or b"z") * (3 * 1024 * 1024 // len(data or b"z"))  # about 3 MiB
    text = draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20))
    return CloudEvent({"specversion": "1.0", "id": "placeholder", "source": "/rooms/" + (text or "x"),
                       "type": "com.example.prop", "datacontenttype": "application/octet-stream", "note": text or "n"},
                      data)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events(), st.sampled_from(["binary", "structured", "batch"]), st.sampled_from([1024, 16 * 1024, 65536]))
def test_valid_events_round_trip_through_ingress_and_delivery(live: Live, event: CloudEvent, mode: str,
                                                              chunk: int) -> None:
    event.attributes["id"] = f"prop-{next(_ids)}"
    if mode == "binary":
        wire, body = to_binary(event)
    elif mode == "structured":
        wire, body = to_structured(event)
    else:
        wire, body = {"content-type": BATCH}, json.dumps([to_json_object(event)]).encode()
    headers = [(k.encode(), v.encode()) for k, v in wire.items()]
    answer = live.run(send_raw(live.broker.server.port, "/default/default", headers, body, chunk=chunk,
                               chunked=chunk == 1024))
    assert answer.status == 202, answer.body[:200]

    async def arrived() -> CloudEvent:
        async with asyncio.timeout(20):
            while True:
                for received in live.subscriber.received:
                    if received.event.id == event.id:
                        return received.event
                await asyncio.sleep(0.01)

    got = live.run(arrived())
    assert hashlib.sha256(got.data or b"").hexdigest() == hashlib.sha256(event.data or b"").hexdigest()
    assert got.attributes["note"] == event.attributes["note"]
    assert got.source == event.source
