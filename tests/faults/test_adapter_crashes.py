"""Each source adapter SIGKILLed repeatedly while consuming: every message delivered, duplicates counted."""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.env.ports import free_port
from tests.env.servers import Kafka, RocketMQ
from tests.integration import test_kafka_adapter as kafka_adapter
from tests.integration import test_rocketmq_adapter as rocketmq_adapter
from tests.support.processes import kill, wait_ready
from tests.support.subscriber import Answer

pytestmark = pytest.mark.faults

KILLS = 4


@pytest.mark.timeout(400)
async def test_kafka_adapter_killed_repeatedly_replays_and_skips_nothing(kafka: Kafka, tmp_path: Path) -> None:
    topic = await kafka_adapter.new_topic(kafka, partitions=3)
    count = 6000
    await kafka_adapter.produce(kafka, topic, [{"value": f"{i}".encode(), "key": f"k{i}".encode()}
                                               for i in range(count)])
    killed_at = []
    async with kafka_adapter.sinks(lambda r, n: Answer(delay=0.002)) as (sink,):
        source = kafka_adapter.manifest(topic, kafka.bootstrap, sink.url)
        port = free_port()
        env = kafka_adapter.adapter_env(source, K_METRICS_PORT=str(port), K_MAX_IN_FLIGHT="200")
        proc = kafka_adapter.start_adapter(env, tmp_path / "adapter.log")
        try:
            await wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
            for number in range(1, KILLS + 1):
                await sink.wait_for(number * count // (KILLS + 2), timeout=60)
                kill(proc)  # SIGKILL mid-stream: no chance to commit what it delivered since the last commit
                killed_at.append(len(sink.received))
                proc = kafka_adapter.start_adapter(env, tmp_path / "adapter.log")
                await wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
            assert len({r.event.id for r in sink.received}) < count, "the stream ended before the last kill"
            await kafka_adapter.distinct(sink, count, timeout=120)
            async with aiohttp.ClientSession() as session, \
                    session.get(f"http://127.0.0.1:{port}/metrics") as response:
                metrics = await response.text()
        finally:
            kill(proc, signal.SIGTERM)
    ids = collections.Counter(r.event.id for r in sink.received)
    duplicates = sum(n - 1 for n in ids.values())
    values = {r.event.data for r in sink.received}
    missing = count - len(values)
    print(f"\nkafka adapter, {KILLS} SIGKILLs: {count} records, {missing} lost, {duplicates} duplicates "
          f"({duplicates / KILLS:.0f} per crash; in flight at most 200)")
    assert missing == 0, f"{missing} records never delivered ({duplicates} duplicates; killed after {killed_at})"
    assert len(ids) == count, f"{len(ids)} distinct ids for {count} records ({duplicates} duplicates)"
    # A crash replays what was in flight (200) plus what settled since the last commit (every 0.2 s, with
    # some slack for the commit's round trip) at the rate the sink took events.
    rate = max(collections.Counter(int(r.at) for r in sink.received).values())  # the busiest second
    bound = 200 + rate * (0.2 + 0.3)
    print(f"  sink took at most {rate}/s: bound {bound:.0f} duplicates per crash")
    assert duplicates <= KILLS * bound, f"{duplicates} duplicates in {KILLS} crashes (bound {bound:.0f} each)"
    assert "eventferry_adapter_messages_received_total" in metrics
    assert proc.returncode == 0, "SIGTERM should stop the adapter cleanly"
    offsets = await kafka_adapter.committed(kafka, topic, f"group-{topic}", 3)
    assert sum(o or 0 for o in offsets.values()) == count, f"committed offsets {offsets} ({duplicates} duplicates)"


@pytest.mark.timeout(400)
async def test_rocketmq_adapter_killed_repeatedly_redelivers_and_skips_nothing(rocketmq: RocketMQ, tmp_path: Path,
                                                                               ) -> None:
    topic = f"src-crash-{tmp_path.name[-8:]}".replace("_", "-")
    await asyncio.to_thread(rocketmq.create_topic, topic, 4, "NORMAL")
    count = 3000
    killed_at = []
    async with rocketmq_adapter.sinks(lambda r, n: Answer(delay=0.002)) as (sink,):
        source = rocketmq_adapter.manifest(topic, rocketmq.endpoint, sink.url)
        port = free_port()
        env = rocketmq_adapter.adapter_env(source, K_METRICS_PORT=str(port), K_MAX_IN_FLIGHT="100")
        proc = rocketmq_adapter.start_adapter(env, tmp_path / "adapter.log")
        try:
            await wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
            messages = [rocketmq_adapter.message(topic, f"{i}".encode()) for i in range(count)]
            sent = await rocketmq_adapter.send(rocketmq, topic, messages)
            for number in range(1, KILLS + 1):
                await sink.wait_for(number * count // (KILLS + 2), timeout=90)
                kill(proc)  # SIGKILL mid-stream: received messages stay unacknowledged
                killed_at.append(len(sink.received))
                proc = rocketmq_adapter.start_adapter(env, tmp_path / "adapter.log")
                await wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
            assert len({r.event.id for r in sink.received}) < count, "the stream ended before the last kill"
            await rocketmq_adapter.distinct(sink, count, timeout=150)
        finally:
            kill(proc, signal.SIGTERM, timeout=30)
    ids = collections.Counter(r.event.id for r in sink.received)
    duplicates = sum(n - 1 for n in ids.values())
    missing = set(sent) - set(ids)
    print(f"\nrocketmq adapter, {KILLS} SIGKILLs: {count} messages, {len(missing)} lost, {duplicates} duplicates "
          f"({duplicates / KILLS:.0f} per crash; in flight at most 100)")
    assert len(set(sent)) == count
    assert not missing, f"{len(missing)} messages never delivered ({duplicates} duplicates; killed after {killed_at})"
    assert {r.event.data for r in sink.received} == {f"{i}".encode() for i in range(count)}
    assert proc.returncode == 0, "SIGTERM should stop the adapter cleanly"
