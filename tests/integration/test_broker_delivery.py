"""Delivery through the InMemory broker to real HTTP subscribers: Knative's semantics of design sections 5 and 6."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from eventferry.dataplane.dataplane import DataPlaneSettings
from eventferry.dataplane.memory import MemoryLimits
from tests.support.broker import RunningBroker, start_broker
from tests.support.pacing import Meter
from tests.support.subscriber import Answer, Received, Subscriber, Subscribers

pytestmark = pytest.mark.integration

BROKER = """
apiVersion: eventferry.dev/v1alpha1
kind: Broker
metadata: {name: default}
"""


def trigger(name: str, subscriber: str, extra: str = "") -> str:
    return f"""
---
apiVersion: eventferry.dev/v1alpha1
kind: Trigger
metadata: {{name: {name}}}
spec:
  broker: default
  subscriber: {{uri: "{subscriber}"}}
{extra}"""


async def send(url: str, event_type: str = "com.example.a", event_id: str = "e1", extra: dict | None = None,
               data: bytes = b'{"n": 1}') -> int:
    headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/test", "ce-type": event_type,
               "content-type": "application/json", **(extra or {})}
    async with aiohttp.ClientSession() as session, session.post(url, headers=headers, data=data) as resp:
        return resp.status


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[list[RunningBroker]]:
    brokers: list[RunningBroker] = []
    yield brokers
    for broker in brokers:
        await broker.stop()


async def start(tmp_path: Path, running: list[RunningBroker], manifests: str, **kwargs: object) -> RunningBroker:
    broker = await start_broker(tmp_path, manifests, **kwargs)  # type: ignore[arg-type]
    running.append(broker)
    return broker


async def test_filters_route_each_event_to_every_matching_trigger(tmp_path: Path, running: list,
                                                                  subscribers: Subscribers) -> None:
    sub = await subscribers()
    manifests = BROKER
    manifests += trigger("by-attribute", f"{sub.url}/a", "  filter: {attributes: {type: com.example.gift}}")
    manifests += trigger("any-value", f"{sub.url}/b", "  filter: {attributes: {room: ''}}")
    manifests += trigger("prefix", f"{sub.url}/c", "  filters: [{prefix: {type: com.example.}}]")
    manifests += trigger("cesql", f"{sub.url}/d", "  filters: [{cesql: \"room = 'r1' AND type LIKE '%.gift'\"}]")
    manifests += trigger("not", f"{sub.url}/e", "  filters: [{not: {exact: {type: com.example.gift}}}]")
    manifests += trigger("same-subscriber", f"{sub.url}/a", "  filters: [{suffix: {type: .gift}}]")
    broker = await start(tmp_path, running, manifests)
    assert await send(broker.url(), "com.example.gift", "g1", {"ce-room": "r1"}) == 202
    assert await send(broker.url(), "com.example.comment", "c1") == 202
    await sub.wait_for(2, "/a")  # two Triggers, same subscriber: two deliveries
    await sub.wait_for(1, "/b")
    await sub.wait_for(2, "/c")
    await sub.wait_for(1, "/d")
    await sub.wait_for(1, "/e")
    assert [r.event.id for r in sub.at("/a")] == ["g1", "g1"]
    assert [r.event.id for r in sub.at("/b")] == ["g1"]  # c1 has no room attribute
    assert [r.event.id for r in sub.at("/d")] == ["g1"]
    assert [r.event.id for r in sub.at("/e")] == ["c1"]


async def test_retries_5xx_until_success(tmp_path: Path, running: list, subscribers: Subscribers) -> None:
    sub = await subscribers(lambda r, n: Answer(503 if n < 2 else 200))
    delivery = "  delivery: {retry: 3, backoffPolicy: linear, backoffDelay: PT0.05S}"
    broker = await start(tmp_path, running, BROKER + trigger("t", f"{sub.url}/s", delivery))
    assert await send(broker.url()) == 202
    await sub.wait_for(1)
    assert len(sub.requests) == 3
    gaps = [b.at - a.at for a, b in zip(sub.requests, sub.requests[1:], strict=False)]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09  # linear: 0.05 × 1, then 0.05 × 2


@pytest.mark.parametrize("status", [400, 401, 403, 422, 302])
async def test_non_retryable_answers_go_straight_to_the_dead_letter_sink(tmp_path: Path, running: list,
                                                                         status: int, subscribers: Subscribers) -> None:
    sub = await subscribers(lambda r, n: Answer(200) if r.path == "/dls" else
                            Answer(status, body=b"bad comment payload"))
    delivery = (f"  delivery: {{retry: 5, backoffDelay: PT0.01S, deadLetterSink: {{uri: \"{sub.url}/dls\"}}}}")
    broker = await start(tmp_path, running, BROKER + trigger("t", f"{sub.url}/s", delivery))
    assert await send(broker.url()) == 202
    [dead] = await sub.wait_for(1, "/dls")
    assert len([r for r in sub.requests if r.path == "/s"]) == 1  # not retried
    attrs = dead.event.attributes
    assert attrs["knativeerrordest"] == f"{sub.url}/s"
    assert attrs["knativeerrorcode"] == str(status)
    assert base64.b64decode(str(attrs["knativeerrordata"])) == b"bad comment payload"
    assert dead.event.data == b'{"n": 1}'


async def test_retryable_answers_exhaust_retries_then_dead_letter(tmp_path: Path, running: list,
                                                                  subscribers: Subscribers) -> None:
    sub = await subscribers(lambda r, n: Answer(200) if r.path == "/dls" else Answer(404))
    delivery = f"  delivery: {{retry: 2, backoffDelay: PT0.01S, deadLetterSink: {{uri: \"{sub.url}/dls\"}}}}"
    broker = await start(tmp_path, running, BROKER + trigger("t", f"{sub.url}/s", delivery))
    await send(broker.url())
    [dead] = await sub.wait_for(1, "/dls")
    assert len([r for r in sub.requests if r.path == "/s"]) == 3  # first attempt + 2 retries
    assert dead.event.attributes["knativeerrorcode"] == "404"


async def test_a_hanging_subscriber_times_out_and_is_retried(tmp_path: Path, running: list,
                                                             subscribers: Subscribers) -> None:
    sub = await subscribers(lambda r, n: Answer(200, delay=5 if n == 0 else 0))
    delivery = "  delivery: {retry: 1, backoffDelay: PT0.01S, timeout: PT0.3S}"
    broker = await start(tmp_path, running, BROKER + trigger("t", f"{sub.url}/s", delivery))
    started = time.monotonic()
    await send(broker.url())
    await sub.wait_for(1, timeout=10)
    assert len(sub.requests) >= 2
    assert time.monotonic() - started < 4


async def test_retry_after_is_honoured_up_to_retry_after_max(tmp_path: Path, running: list,
                                                             subscribers: Subscribers) -> None:
    sub = await subscribers(lambda r, n: Answer(429, headers={"Retry-After": "1"}) if n == 0 else Answer())
    delivery = "  delivery: {retry: 2, backoffDelay: PT0.01S, retryAfterMax: PT0.5S}"
    broker = await start(tmp_path, running, BROKER + trigger("t", f"{sub.url}/s", delivery))
    await send(broker.url())
    await sub.wait_for(1)
    gap = sub.requests[1].at - sub.requests[0].at
    assert 0.45 <= gap < 0.95  # Retry-After 1 s, capped at 0.5 s; far above the 0.02 s backoff


async def test_trigger_delivery_overrides_the_broker_delivery(tmp_path: Path, running: list,
                                                              subscribers: Subscribers) -> None:
    sub = await subscribers(lambda r, n: Answer(200) if r.path.startswith("/dls") else Answer(500))
    broker_manifest = f"""
apiVersion: eventferry.dev/v1alpha1
kind: Broker
metadata: {{name: default}}
spec:
  delivery: {{retry: 1, backoffDelay: PT0.01S, deadLetterSink: {{uri: "{sub.url}/dls-broker"}}}}
"""
    manifests = broker_manifest + trigger("inherits", f"{sub.url}/s1")
    manifests += trigger("overrides", f"{sub.url}/s2",
                         f"  delivery: {{retry: 0, deadLetterSink: {{uri: \"{sub.url}/dls-trigger\"}}}}")
    broker = await start(tmp_path, running, manifests)
    await send(broker.url())
    await sub.wait_for(1, "/dls-broker")
    await sub.wait_for(1, "/dls-trigger")
    assert len([r for r in sub.requests if r.path == "/s1"]) == 2
    assert len([r for r in sub.requests if r.path == "/s2"]) == 1


async def test_a_reply_re_enters_the_broker_and_is_routed(tmp_path: Path, running: list,
                                                          subscribers: Subscribers) -> None:
    def script(received: Received, count: int) -> Answer:
        if received.path == "/moderation":
            return Answer(200, headers={"ce-specversion": "1.0", "ce-id": "r1", "ce-source": "/moderation",
                                        "ce-type": "com.example.moderated", "content-type": "application/json"},
                          body=b'{"verdict": "ok"}')
        return Answer(200)

    sub = await subscribers(script)
    manifests = BROKER + trigger("moderate", f"{sub.url}/moderation",
                                 "  filter: {attributes: {type: com.example.a}}")
    manifests += trigger("moderated", f"{sub.url}/display",
                         "  filter: {attributes: {type: com.example.moderated}}")
    broker = await start(tmp_path, running, manifests)
    await send(broker.url())
    [reply] = await sub.wait_for(1, "/display")
    assert reply.event.id == "r1"
    assert reply.event.data == b'{"verdict": "ok"}'
    assert "knativebrokerttl" not in reply.event.attributes


async def test_a_plain_2xx_body_is_not_a_reply(tmp_path: Path, running: list, subscribers: Subscribers) -> None:
    sub = await subscribers(lambda r, n: Answer(200, headers={"content-type": "text/plain"}, body=b"thanks"))
    broker = await start(tmp_path, running, BROKER + trigger("t", f"{sub.url}/s"))
    await send(broker.url())
    await sub.wait_for(1)
    await _settle(sub)  # long enough for a wrongly re-ingested "reply" to arrive, as in the TTL test
    assert len(sub.requests) == 1


async def test_an_invalid_reply_fails_the_delivery(tmp_path: Path, running: list, subscribers: Subscribers) -> None:
    bad_reply = {"ce-specversion": "1.0", "ce-type": "x"}  # claims to be a CloudEvent, lacks id and source
    sub = await subscribers(lambda r, n: Answer(200) if r.path == "/dls" else Answer(200, headers=bad_reply))
    delivery = f"  delivery: {{retry: 1, backoffDelay: PT0.01S, deadLetterSink: {{uri: \"{sub.url}/dls\"}}}}"
    broker = await start(tmp_path, running, BROKER + trigger("t", f"{sub.url}/s", delivery))
    await send(broker.url())
    [dead] = await sub.wait_for(1, "/dls")
    assert dead.event.attributes["knativeerrorcode"] == "502"
    assert len([r for r in sub.requests if r.path == "/s"]) == 2


async def test_reply_loops_are_stopped_by_the_ttl(tmp_path: Path, running: list, subscribers: Subscribers) -> None:
    def echo(received: Received, count: int) -> Answer:  # replies with an event that matches itself again
        return Answer(200, headers={"ce-specversion": "1.0", "ce-id": f"loop-{count}", "ce-source": "/loop",
                                    "ce-type": "com.example.a"})

    sub = await subscribers(echo)
    broker = await start(tmp_path, running, BROKER + trigger("t", f"{sub.url}/s"))
    await send(broker.url(), extra={"ce-knativebrokerttl": "5"})
    await sub.wait_for(5)
    await _settle(sub)
    assert len(sub.requests) == 5  # the original and 4 replies; the 5th reply has TTL 0 and is dropped


async def _settle(sub: Subscriber, quiet: float = 0.3) -> None:
    import asyncio

    seen = -1
    while seen != len(sub.requests):
        seen = len(sub.requests)
        await asyncio.sleep(quiet)


async def test_a_slow_trigger_gets_429_back_pressure_and_others_keep_flowing(tmp_path: Path, running: list,
                                                                             subscribers: Subscribers) -> None:
    sub = await subscribers(lambda r, n: Answer(200, delay=2 if r.path == "/slow" else 0))
    manifests = BROKER + trigger("slow", f"{sub.url}/slow", "  filter: {attributes: {type: slow}}")
    manifests += trigger("fast", f"{sub.url}/fast", "  filter: {attributes: {type: fast}}")
    settings = DataPlaneSettings(memory=MemoryLimits(queue_per_trigger=3, in_flight_per_trigger=1))
    broker = await start(tmp_path, running, manifests, settings=settings)
    codes = [await send(broker.url(), "slow", f"s{i}") for i in range(6)]
    assert codes[:4] == [202] * 4  # one in flight, three waiting
    assert codes[4] == 429
    async with aiohttp.ClientSession() as session:
        headers = {"ce-specversion": "1.0", "ce-id": "x", "ce-source": "/t", "ce-type": "slow"}
        async with session.post(broker.url(), headers=headers) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "1"
            assert "retry later" in await resp.text()
    assert await send(broker.url(), "fast", "f1") == 202
    [fast] = await sub.wait_for(1, "/fast", timeout=1.5)  # not stuck behind the slow subscriber
    assert fast.event.id == "f1"


async def test_hot_reload_keeps_in_flight_events_and_applies_new_routes(tmp_path: Path, running: list,
                                                                        subscribers: Subscribers) -> None:
    sub = await subscribers(lambda r, n: Answer(200, delay=0.5 if r.path == "/old" else 0))
    broker = await start(tmp_path, running, BROKER + trigger("t", f"{sub.url}/old"))
    for i in range(20):
        assert await send(broker.url(), event_id=f"e{i}") == 202
    await broker.reload(BROKER + trigger("t", f"{sub.url}/old") + trigger("t2", f"{sub.url}/new"))
    assert await send(broker.url(), event_id="after") == 202
    await sub.wait_for(21, "/old")
    [new] = await sub.wait_for(1, "/new")
    assert new.event.id == "after"
    assert sorted(r.event.id for r in sub.at("/old")) == sorted([f"e{i}" for i in range(20)] + ["after"])


async def test_structured_format_delivery(tmp_path: Path, running: list, subscribers: Subscribers) -> None:
    sub = await subscribers()
    broker = await start(tmp_path, running, BROKER + trigger("t", f"{sub.url}/s", "  delivery: {format: json}"))
    await send(broker.url())
    [got] = await sub.wait_for(1)
    assert got.headers["content-type"].startswith("application/cloudevents+json")
    assert json.loads(got.event.data or b"") == {"n": 1}


async def test_a_paced_trigger_gets_its_pace_while_an_unpaced_one_keeps_full_speed(
        tmp_path: Path, running: list, subscribers: Subscribers) -> None:
    meter = Meter("/paced", delay=0.1)
    sub = await subscribers(meter.script)
    pacing = "  pacing: {maxConcurrency: 2, rate: 10, burst: 1}"
    broker = await start(tmp_path, running, BROKER + trigger("paced", f"{sub.url}/paced", pacing)
                         + trigger("free", f"{sub.url}/free"))
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        for i in range(30):
            headers = {"ce-specversion": "1.0", "ce-id": f"e{i}", "ce-source": "/t", "ce-type": "t"}
            async with session.post(broker.url(), headers=headers) as resp:
                assert resp.status == 202
    await sub.wait_for(30, "/free", timeout=5)
    free_took = time.monotonic() - started
    metrics = await broker.metrics_text()
    waiting = [line for line in metrics.splitlines()
               if line.startswith("eventferry_trigger_events_waiting") and 'trigger="paced"' in line]
    assert waiting and float(waiting[0].split()[-1]) > 10  # the rest waits in the broker
    await sub.wait_for(30, "/paced", timeout=10)
    paced_took = time.monotonic() - started
    assert free_took < 2.0  # not slowed by its paced neighbour
    assert meter.peak <= 2
    assert 8 <= meter.rate() <= 10.5  # 10 a second, never more
    assert paced_took >= 2.8  # 30 events at 10/s: the peak was shaved
    assert len({r.event.id for r in sub.at("/paced")}) == 30  # nothing lost, no retry spent
    assert not [line for line in metrics.splitlines()  # waiting is not a failed attempt
                if line.startswith("eventferry_trigger_events_retried_total{") and 'trigger="paced"' in line]
