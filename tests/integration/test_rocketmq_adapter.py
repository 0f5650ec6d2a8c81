"""The RocketMQSource adapter against the real RocketMQ 5 (gRPC proxy) and real HTTP sinks on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventferry.adapters import config_from_manifest, run_adapter
from eventferry.adapters.config import AdapterConfig, Limits
from eventferry.adapters.metrics import AdapterMetrics
from eventferry.contract.model import Delivery
from tests.env.servers import RocketMQ
from tests.support.processes import start_eventferry
from tests.support.subscriber import Answer, Received, Subscriber, Subscribers

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
FAST = Limits(drain_timeout=3, invisible_duration=10, await_duration=2)
TOPICS = {"mapping": "NORMAL", "flaky": "NORMAL", "dead": "NORMAL", "ordered": "FIFO", "kill": "NORMAL"}


@pytest.fixture(scope="module")
def topics(rocketmq: RocketMQ) -> Iterator[dict[str, str]]:
    """The topics of this module, made at once (each admin call starts a JVM)."""
    names = {purpose: f"src-{purpose}-{uuid.uuid4().hex[:8]}" for purpose in TOPICS}
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        for done in [pool.submit(rocketmq.create_topic, names[p], 4, kind) for p, kind in TOPICS.items()]:
            done.result()
    yield names


def message(topic: str, body: bytes, *, tag: str | None = None, keys: tuple[str, ...] = (),
            properties: dict[str, str] | None = None, group: str | None = None) -> Any:
    from rocketmq import Message

    msg = Message()
    msg.topic = topic
    msg.body = body
    if tag:
        msg.tag = tag
    for key in keys:
        msg.keys = key  # the setter adds one key
    for name, value in (properties or {}).items():
        msg.add_property(name, value)
    if group:
        msg.message_group = group
    return msg


def send_blocking(endpoint: str, topic: str, messages: list[Any], in_order: bool = False) -> list[str]:
    from rocketmq import ClientConfiguration, Credentials, Producer

    producer = Producer(ClientConfiguration(endpoint, Credentials(), request_timeout=10), (topic,))
    producer.startup()
    try:
        if in_order:
            return [producer.send(m).message_id for m in messages]
        futures = [producer.send_async(m) for m in messages]
        return [f.result(timeout=30).message_id for f in futures]
    finally:
        producer.shutdown()


async def send(rocketmq: RocketMQ, topic: str, messages: list[Any], in_order: bool = False) -> list[str]:
    return await asyncio.to_thread(send_blocking, rocketmq.endpoint, topic, messages, in_order)


def manifest(topic: str, endpoint: str, sink: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "eventferry.dev/v1alpha1", "kind": "RocketMQSource",
            "metadata": {"name": "comments", "namespace": "live"},
            "spec": {"endpoints": endpoint, "topic": topic, "consumerGroup": f"group-{topic}", "sink": {"uri": sink},
                     **spec}}


@contextlib.asynccontextmanager
async def running(config: AdapterConfig, metrics: AdapterMetrics | None = None) -> AsyncIterator[None]:
    from eventferry.adapters.health import AdapterHealth

    stop = asyncio.Event()
    health = AdapterHealth()
    task = asyncio.ensure_future(run_adapter(config, stop, metrics=metrics, health=health))
    try:
        deadline = time.monotonic() + 60
        while not health.ready:
            assert not task.done(), f"the adapter ended before it was ready: {task.exception()!r}"
            assert time.monotonic() < deadline, f"adapter not ready: {health.reason}"
            await asyncio.sleep(0.05)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def distinct(sink: Subscriber, count: int, timeout: float) -> None:
    """Waits until the sink accepted ``count`` distinct events (duplicates do not count)."""
    deadline = time.monotonic() + timeout
    while len({r.event.id for r in sink.received}) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def test_messages_and_cloudevents_are_mapped_end_to_end(rocketmq: RocketMQ, topics: dict[str, str],
                                                              subscribers: Subscribers) -> None:
    topic = topics["mapping"]
    sink, dead_letters = await subscribers(), await subscribers()
    config = config_from_manifest(
        manifest(topic, rocketmq.endpoint, sink.url, filterExpression="comment || ce",
                 ceOverrides={"extensions": {"team": "moderation"}}),
        sink.url, delivery=Delivery(retry=0, dead_letter_sink=dead_letters.url), limits=FAST)
    async with running(config):
        structured = json.dumps({"specversion": "1.0", "id": "c-2", "source": "/chat", "type": "live.comment",
                                 "data": {"text": "hi"}}).encode()
        ids = await send(rocketmq, topic, [
            message(topic, b"great stream!", tag="comment", keys=("room-9", "user-1"),
                    properties={"Room-Id": "9", "traceparent": TRACEPARENT}),
            message(topic, b"a gift", tag="gift"),  # filtered out by the tag expression
            message(topic, b"binary data", tag="ce", properties={
                "CE_specversion": "1.0", "CE_id": "c-1", "CE_source": "/chat/room-9", "CE_type": "live.comment",
                "CE_contenttype": "text/plain"}),
            message(topic, structured, tag="ce",
                    properties={"CE_contenttype": "application/cloudevents+json; charset=UTF-8"}),
            message(topic, b"half an event", tag="ce", properties={"CE_specversion": "1.0", "CE_id": "broken"}),
        ], in_order=True)
        await sink.wait_for(3, timeout=30)
        dead = await dead_letters.wait_for(1, timeout=30)
        await asyncio.sleep(1)  # time for the filtered-out message to show up, were it not filtered
    by_id = {r.event.id: r for r in sink.received}
    assert set(by_id) == {ids[0], "c-1", "c-2"}, f"got {sorted(by_id)}"
    plain = by_id[ids[0]].event
    born = plain.attributes.pop("time")
    assert isinstance(born, str) and born.endswith("Z")
    assert plain.attributes == {
        "specversion": "1.0", "id": ids[0], "type": "dev.eventferry.rocketmq.message",
        "source": f"/apis/v1/namespaces/live/rocketmqsources/comments#{topic}", "subject": "comment",
        "rocketmqtopic": topic, "rocketmqtag": "comment", "rocketmqkeys": "room-9 user-1", "rocketmqmsgid": ids[0],
        "rocketmqdeliveryattempt": "1", "rocketmqproproomid": "9", "rocketmqproptraceparent": TRACEPARENT,
        "team": "moderation"}
    assert plain.data == b"great stream!"
    assert by_id[ids[0]].headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    binary = by_id["c-1"].event
    assert binary.attributes == {"specversion": "1.0", "id": "c-1", "source": "/chat/room-9", "type": "live.comment",
                                 "datacontenttype": "text/plain"}  # passed through unchanged
    assert binary.data == b"binary data"
    assert json.loads(by_id["c-2"].event.data or b"") == {"text": "hi"}
    broken = dead[0].event
    assert broken.attributes["rocketmqmsgid"] == ids[4]
    assert broken.data == b"half an event"
    assert "not valid" in base64.b64decode(str(broken.attributes["knativeerrordata"])).decode()


async def test_a_sink_failing_for_a_while_loses_nothing(rocketmq: RocketMQ, topics: dict[str, str],
                                                        subscribers: Subscribers) -> None:
    topic = topics["flaky"]
    count = 100
    recovers_at = time.monotonic() + 1e9

    def flaky(received: Received, seen: int) -> Answer:
        return Answer(status=503 if time.monotonic() < recovers_at else 200)

    sink = await subscribers(flaky)
    config = config_from_manifest(manifest(topic, rocketmq.endpoint, sink.url), sink.url, limits=FAST,
                                  delivery=Delivery(retry=0, timeout=5))
    metrics = AdapterMetrics("rocketmq", "live", "comments")
    async with running(config, metrics):
        recovers_at = time.monotonic() + 3
        await send(rocketmq, topic, [message(topic, f"{i}".encode()) for i in range(count)])
        await distinct(sink, count, timeout=60)
    bodies = collections.Counter(r.event.data for r in sink.received)
    missing = {f"{i}".encode() for i in range(count)} - set(bodies)
    assert not missing, f"{len(missing)} messages lost"
    assert metrics.value("eventferry_adapter_events_sent_total", outcome="failed", code="503") > 0
    redelivered = [r for r in sink.received if r.event.attributes["rocketmqdeliveryattempt"] != "1"]
    assert redelivered, "the failed deliveries should come back as redeliveries of RocketMQ"


async def test_dead_letter_sink_gets_the_events_a_sink_always_refuses(rocketmq: RocketMQ, topics: dict[str, str],
                                                                      subscribers: Subscribers) -> None:
    topic = topics["dead"]
    sink, dead_letters = await subscribers(lambda r, n: Answer(status=500, body=b"down")), await subscribers()
    config = config_from_manifest(manifest(topic, rocketmq.endpoint, sink.url), sink.url, limits=FAST,
                                  delivery=Delivery(retry=1, backoff_delay=0.01, dead_letter_sink=dead_letters.url))
    async with running(config):
        ids = await send(rocketmq, topic, [message(topic, f"v{i}".encode()) for i in range(5)])
        dead = await dead_letters.wait_for(5, timeout=30)
        await asyncio.sleep(2)  # acknowledged: nothing comes back
    assert sorted(r.event.id for r in dead) == sorted(ids)
    for received in dead:
        assert received.event.attributes["knativeerrordest"] == sink.url
        assert received.event.attributes["knativeerrorcode"] == "500"
        assert base64.b64decode(str(received.event.attributes["knativeerrordata"])) == b"down"
    assert len(dead_letters.received) == 5
    assert len(sink.requests) == 10  # each: the first attempt and one retry, then the dead-letter sink


async def test_ordered_delivery_keeps_the_order_of_each_message_group(rocketmq: RocketMQ, topics: dict[str, str],
                                                                      subscribers: Subscribers) -> None:
    topic = topics["ordered"]
    count = 90

    def jittery(received: Received, seen: int) -> Answer:
        return Answer(delay=(hash(received.event.id) % 5) / 1000)

    sink = await subscribers(jittery)
    config = config_from_manifest(manifest(topic, rocketmq.endpoint, sink.url, ordering="ordered"), sink.url,
                                  limits=FAST)
    async with running(config):
        await send(rocketmq, topic, [message(topic, f"room-{i % 3}:{i}".encode(), group=f"room-{i % 3}")
                                     for i in range(count)], in_order=True)
        await sink.wait_for(count, timeout=60)
    arrivals: dict[str, list[int]] = collections.defaultdict(list)
    for received in sink.received:
        group, number = (received.event.data or b"").decode().split(":")
        arrivals[group].append(int(number))
    assert len(arrivals) == 3
    for group, numbers in arrivals.items():
        assert numbers == sorted(numbers), f"{group} delivered out of order: {numbers}"


# --- the adapter as a process ------------------------------------------------------------------------------

def adapter_env(source: dict[str, Any], **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("K_")}
    env.update({"K_SINK": source["spec"]["sink"]["uri"], "K_SOURCE_SPEC": json.dumps(source["spec"]),
                "K_SOURCE_NAME": source["metadata"]["name"], "K_SOURCE_NAMESPACE": source["metadata"]["namespace"],
                "K_DRAIN_TIMEOUT": "3", "K_ROCKETMQ_INVISIBLE_DURATION": "10", "K_ROCKETMQ_AWAIT_DURATION": "2"})
    env.update(extra)
    return env


def start_adapter(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return start_eventferry(["adapter", "rocketmq"], log, env)
