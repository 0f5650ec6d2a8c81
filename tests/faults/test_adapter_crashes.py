"""Each source adapter SIGKILLed repeatedly while consuming: every message delivered, duplicates counted."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.env.ports import free_port
from tests.env.servers import Kafka, RocketMQ
from tests.integration import test_kafka_adapter as kafka_adapter
from tests.integration import test_rocketmq_adapter as rocketmq_adapter
from tests.support.processes import kill, wait_ready
from tests.support.subscriber import Answer, Subscriber, Subscribers

pytestmark = pytest.mark.faults

KILLS = 4


class Restartable:
    """An adapter process that the test kills (SIGKILL) and starts again, as a kubelet would."""

    def __init__(self, start: Callable[[], subprocess.Popen[bytes]], readyz: str) -> None:
        self.start = start
        self.readyz = readyz
        self.proc = start()

    async def kill_while_consuming(self, sink: Subscriber, count: int, timeout: float) -> list[int]:
        """KILLS crashes, spread over the first two thirds of ``count`` deliveries; returns where each hit."""
        await wait_ready(self.readyz, self.proc)
        killed_at = []
        for number in range(1, KILLS + 1):
            await sink.wait_for(number * count // (KILLS + 2), timeout=timeout)
            kill(self.proc)  # SIGKILL mid-stream: what was delivered since the last commit or ack is not recorded
            killed_at.append(len(sink.received))
            self.proc = self.start()
            await wait_ready(self.readyz, self.proc)
        assert len({r.event.id for r in sink.received}) < count, "the stream ended before the last kill"
        return killed_at


@pytest.mark.timeout(400)
async def test_kafka_adapter_killed_repeatedly_replays_and_skips_nothing(kafka: Kafka, tmp_path: Path,
                                                                        subscribers: Subscribers) -> None:
    topic = await kafka_adapter.new_topic(kafka, partitions=3)
    count = 6000
    await kafka_adapter.produce(kafka, topic, [{"value": f"{i}".encode(), "key": f"k{i}".encode()}
                                               for i in range(count)])
    sink = await subscribers(lambda r, n: Answer(delay=0.002))
    source = kafka_adapter.manifest(topic, kafka.bootstrap, sink.url)
    port = free_port()
    env = kafka_adapter.adapter_env(source, K_METRICS_PORT=str(port), K_MAX_IN_FLIGHT="200")
    adapter = Restartable(lambda: kafka_adapter.start_adapter(env, tmp_path / "adapter.log"),
                          f"http://127.0.0.1:{port}/readyz")
    try:
        killed_at = await adapter.kill_while_consuming(sink, count, timeout=60)
        await kafka_adapter.distinct(sink, count, timeout=120)
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{port}/metrics") as response:
            metrics = await response.text()
    finally:
        kill(adapter.proc, signal.SIGTERM)
    proc = adapter.proc
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
                                                                               subscribers: Subscribers) -> None:
    topic = f"src-crash-{tmp_path.name[-8:]}".replace("_", "-")
    await asyncio.to_thread(rocketmq.create_topic, topic, 4, "NORMAL")
    count = 3000
    sink = await subscribers(lambda r, n: Answer(delay=0.002))
    source = rocketmq_adapter.manifest(topic, rocketmq.endpoint, sink.url)
    port = free_port()
    env = rocketmq_adapter.adapter_env(source, K_METRICS_PORT=str(port), K_MAX_IN_FLIGHT="100")
    adapter = Restartable(lambda: rocketmq_adapter.start_adapter(env, tmp_path / "adapter.log"),
                          f"http://127.0.0.1:{port}/readyz")
    try:
        await wait_ready(adapter.readyz, adapter.proc)
        messages = [rocketmq_adapter.message(topic, f"{i}".encode()) for i in range(count)]
        sent = await rocketmq_adapter.send(rocketmq, topic, messages)
        killed_at = await adapter.kill_while_consuming(sink, count, timeout=90)
        await rocketmq_adapter.distinct(sink, count, timeout=150)
    finally:
        kill(adapter.proc, signal.SIGTERM, timeout=30)
    proc = adapter.proc
    ids = collections.Counter(r.event.id for r in sink.received)
    duplicates = sum(n - 1 for n in ids.values())
    missing = set(sent) - set(ids)
    print(f"\nrocketmq adapter, {KILLS} SIGKILLs: {count} messages, {len(missing)} lost, {duplicates} duplicates "
          f"({duplicates / KILLS:.0f} per crash; in flight at most 100)")
    assert len(set(sent)) == count
    assert not missing, f"{len(missing)} messages never delivered ({duplicates} duplicates; killed after {killed_at})"
    assert {r.event.data for r in sink.received} == {f"{i}".encode() for i in range(count)}
    assert proc.returncode == 0, "SIGTERM should stop the adapter cleanly"
