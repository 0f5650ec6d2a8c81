"""The Kafka broker class against the real Kafka of the test environment."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.env.ports import free_port
from tests.env.servers import Kafka
from tests.support import manifests as support_manifests
from tests.support.broker import RunningBroker, start_broker
from tests.support.pacing import Meter
from tests.support.processes import kill, start_eventferry
from tests.support.subscriber import Answer, Subscribers

pytestmark = pytest.mark.integration


def manifests(broker: str, kafka: Kafka, triggers: str) -> str:
    return "\n" + support_manifests.broker(broker, "Kafka", kafka.bootstrap) + triggers


def trigger(name: str, broker: str, subscriber: str, extra: str = "", annotations: str = "") -> str:
    meta = f"{{name: {name}, annotations: {{{annotations}}}}}" if annotations else f"{{name: {name}}}"
    return f"""---
apiVersion: eventferry.dev/v1alpha1
kind: Trigger
metadata: {meta}
spec:
  broker: {broker}
  subscriber: {{uri: "{subscriber}"}}
{extra}
"""


async def send(session: aiohttp.ClientSession, url: str, event_id: str, event_type: str = "com.example.a",
               extra: dict[str, str] | None = None) -> int:
    headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/test", "ce-type": event_type,
               "content-type": "application/json", **(extra or {})}
    async with session.post(url, headers=headers, data=b'{"n": 1}') as resp:
        return resp.status


async def wait_ready(base_url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{base_url}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"data plane at {base_url} not ready within {timeout}s")


async def start_and_send(tmp_path: Path, brokers: list[RunningBroker], kafka: Kafka, name: str, triggers: str,
                         events: int) -> RunningBroker:
    """A Kafka-class Broker ``name`` with ``triggers``, ready, and ``events`` events (e0, e1, ...) accepted."""
    broker = await start_broker(tmp_path, manifests(name, kafka, triggers))
    brokers.append(broker)
    await wait_ready(broker.base_url)
    async with aiohttp.ClientSession() as session:
        for i in range(events):
            assert await send(session, broker.url("default", name), f"e{i}") == 202
    return broker


@pytest.fixture
async def brokers() -> AsyncIterator[list[RunningBroker]]:
    running: list[RunningBroker] = []
    yield running
    for broker in running:
        await broker.stop()


async def test_events_are_stored_in_the_broker_topic_and_delivered(kafka: Kafka, tmp_path: Path,
                                                                   brokers: list[RunningBroker],
                                                                   subscribers: Subscribers) -> None:
    name = f"b{uuid.uuid4().hex[:6]}"
    sub = await subscribers()
    broker = await start_broker(tmp_path, manifests(name, kafka, trigger("t", name, f"{sub.url}/s")))
    brokers.append(broker)
    await wait_ready(broker.base_url)
    async with aiohttp.ClientSession() as session:
        codes = [await send(session, broker.url("default", name), f"e{i}", extra={"ce-partitionkey": "room-1"})
                 for i in range(10)]
    assert codes == [202] * 10
    got = await sub.wait_for(10)
    assert [r.event.id for r in got] == [f"e{i}" for i in range(10)]  # one partition key: one partition
    # Stored with the CloudEvents Kafka binary binding, keyed by the partition key.
    consumer = AIOKafkaConsumer(f"knative-broker-default-{name}", bootstrap_servers=kafka.bootstrap,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 10)
    finally:
        await consumer.stop()
    headers = dict(record.headers)
    assert headers["ce_id"] == b"e0"
    assert headers["ce_type"] == b"com.example.a"
    assert headers["content-type"] == b"application/json"
    assert "ce_knativearrivaltime" in headers
    assert record.key == b"room-1"
    assert record.value == b'{"n": 1}'


async def committed(kafka: Kafka, group: str, topic: str, partitions: int = 3) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0)


async def committed_reaches(kafka: Kafka, group: str, topic: str, count: int, timeout: float = 10) -> int:
    """The group's committed offsets summed, once they reach ``count`` or ``timeout`` ran out."""
    deadline = time.monotonic() + timeout
    while (done := await committed(kafka, group, topic)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return done


async def end_offsets(kafka: Kafka, topic: str, partitions: int = 3) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await consumer.stop()
    return sum(ends.values())


async def test_a_failing_subscriber_holds_back_neither_other_triggers_nor_the_commit(
        kafka: Kafka, tmp_path: Path, brokers: list[RunningBroker], subscribers: Subscribers) -> None:
    name = f"b{uuid.uuid4().hex[:6]}"
    failing_until = time.monotonic() + 3.0
    sub = await subscribers(lambda r, n: Answer(500) if r.path == "/bad" and time.monotonic() < failing_until
                            else Answer(200))
    triggers = trigger("good", name, f"{sub.url}/good")
    triggers += trigger("bad", name, f"{sub.url}/bad",
                        "  delivery: {retry: 20, backoffPolicy: linear, backoffDelay: PT0.2S}")
    await start_and_send(tmp_path, brokers, kafka, name, triggers, 30)
    started = time.monotonic()
    await sub.wait_for(30, "/good", timeout=10)
    assert time.monotonic() - started < 2.5, "the healthy trigger waited for the failing one"
    topic = f"knative-broker-default-{name}"
    group = f"eventferry-default-{name}-main"
    # The main offset moved past every event while /bad was still failing: parked, not holding.
    assert await committed_reaches(kafka, group, topic, 30) == await end_offsets(kafka, topic) == 30
    got = await sub.wait_for(30, "/bad", timeout=30)  # the retry topic delivers them once /bad recovers
    assert sorted(r.event.id for r in got) == sorted(f"e{i}" for i in range(30))


async def test_a_failing_dead_letter_sink_loses_nothing(kafka: Kafka, tmp_path: Path,
                                                        brokers: list[RunningBroker], subscribers: Subscribers) -> None:
    name = f"b{uuid.uuid4().hex[:6]}"
    dls_down_until = time.monotonic() + 2.5
    sub = await subscribers(lambda r, n: Answer(400) if r.path == "/s"
                            else Answer(503 if time.monotonic() < dls_down_until else 200))
    delivery = f"  delivery: {{retry: 3, backoffDelay: PT0.1S, deadLetterSink: {{uri: \"{sub.url}/dls\"}}}}"
    broker = await start_broker(tmp_path, manifests(name, kafka, trigger("t", name, f"{sub.url}/s", delivery)))
    brokers.append(broker)
    await wait_ready(broker.base_url)
    async with aiohttp.ClientSession() as session:
        for i in range(10):
            assert await send(session, broker.url("default", name), f"e{i}") == 202
    got = await sub.wait_for(10, "/dls", timeout=40)
    assert sorted(r.event.id for r in got) == sorted(f"e{i}" for i in range(10))
    assert all(r.event.attributes["knativeerrorcode"] == "400" for r in got)


async def test_ordered_trigger_keeps_partition_order_through_failures(kafka: Kafka, tmp_path: Path,
                                                                      brokers: list[RunningBroker],
                                                                      subscribers: Subscribers) -> None:
    name = f"b{uuid.uuid4().hex[:6]}"
    sub = await subscribers(lambda r, n: Answer(500) if n % 4 == 1 else Answer(200))
    triggers = trigger("ordered", name, f"{sub.url}/o",
                       "  delivery: {retry: 5, backoffDelay: PT0.02S}", "eventferry.dev/delivery.order: ordered")
    broker = await start_broker(tmp_path, manifests(name, kafka, triggers))
    brokers.append(broker)
    await wait_ready(broker.base_url)
    async with aiohttp.ClientSession() as session:
        for i in range(40):
            room = f"room-{i % 3}"
            assert await send(session, broker.url("default", name), f"{room}:{i:03d}",
                              extra={"ce-partitionkey": room}) == 202
    got = await sub.wait_for(40, "/o", timeout=30)
    for room in ("room-0", "room-1", "room-2"):
        ids = [r.event.id for r in got if r.event.id.startswith(room)]
        assert ids == sorted(ids), f"{room} delivered out of order: {ids}"


async def test_a_killed_data_plane_delivers_every_acknowledged_event_after_restart(
        kafka: Kafka, tmp_path: Path, subscribers: Subscribers) -> None:
    name = f"b{uuid.uuid4().hex[:6]}"
    sub = await subscribers(lambda r, n: Answer(200, delay=0.01))
    manifest = tmp_path / "kafka-broker.yaml"
    manifest.write_text(manifests(name, kafka, trigger("t", name, f"{sub.url}/s")))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "eventferry"), "run", "-f", str(manifest), "--port", str(port)]
    log = (tmp_path / "run.log").open("ab")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    proc = start()
    accepted: list[str] = []
    try:
        await wait_ready(base)
        async with aiohttp.ClientSession() as session:
            for i in range(300):
                if i == 150:
                    os.killpg(proc.pid, signal.SIGKILL)  # mid-stream: deliveries in flight, offsets uncommitted
                    proc.wait()
                    proc = start()
                    await wait_ready(base)
                if await send(session, f"{base}/default/{name}", f"e{i}") == 202:
                    accepted.append(f"e{i}")
        assert len(accepted) == 300
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not set(accepted) <= {r.event.id for r in sub.received}:
            await asyncio.sleep(0.2)
        delivered = [r.event.id for r in sub.received]
        missing = set(accepted) - set(delivered)
        duplicates = len(delivered) - len(set(delivered))
        assert not missing, f"{len(missing)} acknowledged events lost: {sorted(missing)[:10]} ({duplicates} duplicates)"
        print(f"kill test: {len(accepted)} acknowledged, all delivered, {duplicates} duplicates")
    finally:
        stop_process(proc)
        log.close()


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


async def test_an_ordered_trigger_sees_events_sent_right_after_readiness_even_across_a_crash(
        kafka: Kafka, tmp_path: Path, subscribers: Subscribers) -> None:
    """A new ordered Trigger's group starts at the end of the topic. Its start is pinned (committed) before
    /readyz answers 200, so events acknowledged right after are seen, even when the process dies before
    its first commit of progress and the restarted one has to find its start again."""
    name = f"b{uuid.uuid4().hex[:6]}"
    first_life = True  # the subscriber fails while the first process lives, so no progress is committed
    sub = await subscribers(lambda r, n: Answer(503) if first_life else Answer(200))
    manifest = tmp_path / "kafka-broker.yaml"
    manifest.write_text(manifests(name, kafka, trigger("ordered", name, f"{sub.url}/o",
                                                       "  delivery: {retry: 100, backoffDelay: PT0.1S}",
                                                       "eventferry.dev/delivery.order: ordered")))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["run", "-f", str(manifest), "--port", str(port)]
    proc = start_eventferry(args, tmp_path / "run.log")
    try:
        await wait_ready(base)
        async with aiohttp.ClientSession() as session:
            for i in range(32):
                assert await send(session, f"{base}/default/{name}", f"first-{i:02d}",
                                  extra={"ce-partitionkey": f"key-{i}"}) == 202
        await asyncio.sleep(1)
        kill(proc)  # nothing was delivered, so only the pinned start is committed
        first_life = False
        proc = start_eventferry(args, tmp_path / "run.log")
        await wait_ready(base)
        got = await sub.wait_for(32, "/o", timeout=30)
        assert {r.event.id for r in got} >= {f"first-{i:02d}" for i in range(32)}
    finally:
        kill(proc, signal.SIGTERM)


async def test_a_paced_trigger_waits_in_the_log_and_holds_back_no_other_trigger(
        kafka: Kafka, tmp_path: Path, brokers: list[RunningBroker], subscribers: Subscribers) -> None:
    name = f"b{uuid.uuid4().hex[:6]}"
    meter = Meter("/paced", delay=0.05)
    sub = await subscribers(meter.script)
    triggers = trigger("free", name, f"{sub.url}/free")
    triggers += trigger("paced", name, f"{sub.url}/paced", "  pacing: {maxConcurrency: 2, rate: 20, burst: 1}")
    broker = await start_and_send(tmp_path, brokers, kafka, name, triggers, 60)
    started = time.monotonic()
    await sub.wait_for(60, "/free", timeout=10)
    assert time.monotonic() - started < 2.5, "the unpaced trigger waited for the paced one"
    topic = f"knative-broker-default-{name}"
    # The shared group is past every event while the paced Trigger's own group still has a backlog.
    assert await committed_reaches(kafka, f"eventferry-default-{name}-main", topic, 60) == 60
    kafka_broker = broker.dataplane.brokers[f"default/{name}"]
    [paced] = [t for t in kafka_broker.spec.triggers if t.name == "paced"]
    assert await committed(kafka, kafka_broker._own_group(paced), topic) < 60  # its backlog: in the log
    got = await sub.wait_for(60, "/paced", timeout=15)
    assert sorted({r.event.id for r in got}) == sorted(f"e{i}" for i in range(60))  # nothing lost
    assert meter.peak <= 2
    assert 15 <= meter.rate() <= 21  # its cap is 20 a second


async def test_a_paced_trigger_with_a_large_backlog_keeps_memory_bounded(
        kafka: Kafka, tmp_path: Path, brokers: list[RunningBroker], subscribers: Subscribers) -> None:
    name = f"b{uuid.uuid4().hex[:6]}"
    sub = await subscribers()
    broker = await start_broker(tmp_path, manifests(name, kafka, trigger(
        "paced", name, f"{sub.url}/paced", "  pacing: {rate: 50}")))
    brokers.append(broker)
    await wait_ready(broker.base_url)
    topic = f"knative-broker-default-{name}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=20)
    await producer.start()
    try:
        headers = [("ce_specversion", b"1.0"), ("ce_source", b"/t"), ("ce_type", b"t")]
        pending = [await producer.send(topic, b"{}", headers=[*headers, ("ce_id", f"e{i}".encode())])
                   for i in range(50_000)]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    await asyncio.sleep(3)
    kafka_broker = broker.dataplane.brokers[f"default/{name}"]
    loop = kafka_broker._loops["paced:default/paced"][0]
    # In memory: at most the paced consumer's in-flight records; the other ~49,800 wait in the log.
    assert loop.tracker.total_in_flight <= kafka_broker.limits.paced_in_flight
    pacer = kafka_broker.trigger_delivery.pacers["default/paced"]
    assert 0 < pacer.waiting <= kafka_broker.limits.paced_in_flight
    got = sub.at("/paced")
    assert len(got) >= 100
    assert len({r.event.id for r in got}) == len(got)
    # The burst, then 50 a second (5% for requests that took their token but queued for a connection).
    assert len(got) <= (50 + 50 * (got[-1].at - got[0].at)) * 1.05
