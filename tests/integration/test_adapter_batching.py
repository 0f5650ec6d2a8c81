"""The Kafka adapter sends batches to a Broker: fewer requests, nothing lost, all-or-nothing retries.

Real Kafka (the session's), the real broker data plane in the test's loop (InMemory class, one Trigger),
real HTTP subscribers on loopback.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eventferry.adapters import config_from_manifest
from eventferry.adapters.config import Limits
from eventferry.adapters.metrics import AdapterMetrics
from eventferry.contract.model import Delivery
from tests.env.servers import Kafka
from tests.integration.test_kafka_adapter import committed, manifest, new_topic, produce, running
from tests.support.broker import start_broker
from tests.support.subscriber import Answer, Received, Subscribers

pytestmark = pytest.mark.integration

BATCHED = Limits(commit_interval=0.2, drain_timeout=3, failed_backoff_max=0.5, batch_size=50, batch_linger=0.01)


async def test_batches_into_a_broker_deliver_every_event_in_far_fewer_requests(
        kafka: Kafka, subscribers: Subscribers, tmp_path: Path) -> None:
    subscriber = await subscribers()
    broker = await start_broker(tmp_path, f"""
        apiVersion: eventferry.dev/v1alpha1
        kind: Broker
        metadata: {{name: default}}
        ---
        apiVersion: eventferry.dev/v1alpha1
        kind: Trigger
        metadata: {{name: frames}}
        spec: {{broker: default, subscriber: {{uri: "{subscriber.url}/frames"}}}}
        """)
    try:
        topic = await new_topic(kafka, partitions=3)
        count = 1000
        # JSON with spaces: a batch must carry the bytes as they are, not JSON re-serialized.
        values = [f'{{"frame": {i}, "room": "live-7"}}'.encode() for i in range(count)]
        await produce(kafka, topic, [{"value": value} for value in values])
        config = config_from_manifest(manifest(topic, kafka.bootstrap, broker.url()), broker.url(),
                                      delivery=Delivery(retry=2, backoff_delay=0.05, timeout=5), limits=BATCHED)
        metrics = AdapterMetrics("kafka", "live", "frames")
        async with running(config, metrics):
            got = await subscriber.wait_for(count, timeout=60)
            await asyncio.sleep(0.5)  # one more commit interval
        assert {r.event.data for r in got} == set(values)
        assert metrics.value("eventferry_adapter_events_sent_total", outcome="delivered", code="202") == count
        requests = await broker.metrics_text()
        batches = sum(float(line.rsplit(" ", 1)[1]) for line in requests.splitlines()
                      if line.startswith("eventferry_broker_ingress_seconds_count{"))
        assert 0 < batches <= count / 10, f"{batches:.0f} ingress requests for {count} events"
        offsets = await committed(kafka, topic, f"group-{topic}", 3)
        assert sum(o or 0 for o in offsets.values()) == count
    finally:
        await broker.stop()


async def test_a_refused_batch_is_retried_whole_then_each_event_dead_lettered(
        kafka: Kafka, subscribers: Subscribers) -> None:
    def refuse(received: Received, seen: int) -> Answer:
        return Answer(status=503)

    sink = await subscribers(refuse)
    dead_letters = await subscribers()
    topic = await new_topic(kafka, partitions=1)
    count = 30
    await produce(kafka, topic, [{"value": f"{i}".encode()} for i in range(count)])
    delivery = Delivery(retry=2, backoff_delay=0.05, timeout=5, dead_letter_sink=dead_letters.url)
    config = config_from_manifest(manifest(topic, kafka.bootstrap, sink.url), sink.url, delivery=delivery,
                                  limits=BATCHED)
    async with running(config):
        letters = await dead_letters.wait_for(count, timeout=60)
    assert {r.event.data for r in letters} == {f"{i}".encode() for i in range(count)}
    assert all(r.event.attributes.get("knativeerrorcode") == "503" for r in letters)
    batch_requests = [r for r in sink.requests if r.headers["content-type"].startswith(
        "application/cloudevents-batch+json")]
    assert batch_requests and len(batch_requests) == len(sink.requests)
    assert len(sink.requests) <= 3 * ((count + BATCHED.batch_size - 1) // BATCHED.batch_size) + 3  # 1 + 2 retries
