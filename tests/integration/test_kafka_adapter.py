"""The KafkaSource adapter against the real Kafka of the test environment and real HTTP sinks on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from eventferry.adapters import config_from_manifest, run_adapter
from eventferry.adapters.config import AdapterConfig, Limits
from eventferry.adapters.metrics import AdapterMetrics
from eventferry.contract.model import Delivery
from eventferry.kafka.connection import DirectorySecrets
from tests.env.servers import PLAIN_PASSWORD, PLAIN_USER, SCRAM_PASSWORD, SCRAM_USER, Kafka
from tests.support.processes import kill, start_eventferry
from tests.support.subscriber import Answer, Received, Subscriber, Subscribers

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
FAST = Limits(commit_interval=0.2, drain_timeout=3, failed_backoff_max=0.5)


async def new_topic(kafka: Kafka, partitions: int = 3) -> str:
    topic = f"src-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic


async def produce(kafka: Kafka, topic: str, records: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for record in records:
            await producer.send(topic, **record)
        await producer.flush()
    finally:
        await producer.stop()


def manifest(topic: str, bootstrap: str, sink: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "eventferry.dev/v1alpha1", "kind": "KafkaSource",
            "metadata": {"name": "frames", "namespace": "live", "labels": spec.pop("labels", {})},
            "spec": {"bootstrapServers": [bootstrap], "topics": [topic], "consumerGroup": f"group-{topic}",
                     "initialOffset": "earliest", "sink": {"uri": sink}, **spec}}


@contextlib.asynccontextmanager
async def running(config: AdapterConfig, metrics: AdapterMetrics | None = None) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.ensure_future(run_adapter(config, stop, metrics=metrics))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def committed(kafka: Kafka, topic: str, group: str, partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


async def test_records_and_cloudevents_are_mapped_end_to_end(kafka: Kafka, subscribers: Subscribers) -> None:
    topic = await new_topic(kafka, partitions=1)
    structured = json.dumps({"specversion": "1.0", "id": "comment-7", "source": "/chat", "type": "live.comment",
                             "datacontenttype": "application/json", "data": {"text": "hi"}}).encode()
    await produce(kafka, topic, [
        {"value": b'{"frame": 1}', "key": b"camera-3", "timestamp_ms": 1_700_000_000_000,
         "headers": [("Content-Type", b"application/json"), ("traceparent", TRACEPARENT.encode()),
                     ("bin", b"\xff")]},
        {"value": b"frame-bytes", "headers": [("ce_specversion", b"1.0"), ("ce_id", b"frame-2"),
                                              ("ce_source", b"/camera/3"), ("ce_type", b"video.frame"),
                                              ("content-type", b"application/octet-stream")]},
        {"value": structured, "headers": [("content-type", b"application/cloudevents+json")]},
        {"value": b"half an event", "headers": [("ce_specversion", b"1.0"), ("ce_id", b"broken")]},
    ])
    sink, dead_letters = await subscribers(), await subscribers()
    config = config_from_manifest(
        manifest(topic, kafka.bootstrap, sink.url, ceOverrides={"extensions": {"team": "inference"}}), sink.url,
        delivery=Delivery(retry=0, dead_letter_sink=dead_letters.url), limits=FAST)
    metrics = AdapterMetrics("kafka", "live", "frames")
    async with running(config, metrics):
        got = await sink.wait_for(3, timeout=30)
        dead = await dead_letters.wait_for(1, timeout=30)

    plain, binary, structured_event = (r.event for r in got)
    assert plain.attributes == {
        "specversion": "1.0", "id": "partition:0/offset:0", "type": "dev.knative.kafka.event",
        "source": f"/apis/v1/namespaces/live/kafkasources/frames#{topic}", "subject": "partition:0#0",
        "time": "2023-11-14T22:13:20.000Z", "key": "camera-3", "partitionkey": "camera-3",
        "kafkaheadercontenttype": "application/json", "kafkaheadertraceparent": TRACEPARENT,
        "datacontenttype": "application/json", "knativekafkapartition": "0", "knativekafkaoffset": "0",
        "team": "inference"}
    assert plain.data == b'{"frame": 1}'
    # The producer's trace continues: same trace id, a new span.
    assert got[0].headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert got[0].headers["traceparent"] != TRACEPARENT
    assert binary.attributes == {"specversion": "1.0", "id": "frame-2", "source": "/camera/3", "type": "video.frame",
                                 "datacontenttype": "application/octet-stream"}  # passed through unchanged
    assert binary.data == b"frame-bytes"
    assert got[1].headers["traceparent"].startswith("00-")  # no trace came in: a new one
    assert (structured_event.id, structured_event.type) == ("comment-7", "live.comment")
    assert "team" not in structured_event.attributes
    assert json.loads(structured_event.data or b"") == {"text": "hi"}
    # The malformed CloudEvent went to the dead-letter sink, wrapped, saying why.
    broken = dead[0].event
    assert broken.attributes["id"] == "partition:0/offset:3"
    assert broken.data == b"half an event"
    assert broken.attributes["knativeerrordest"] == sink.url
    assert "not valid" in base64.b64decode(str(broken.attributes["knativeerrordata"])).decode()
    assert metrics.value("eventferry_adapter_headers_skipped_total", reason="not_utf8") == 1
    assert metrics.value("eventferry_adapter_messages_malformed_total", action="dead_lettered") == 1
    assert await committed(kafka, topic, f"group-{topic}", 1) == {0: 4}


async def test_ordered_delivery_keeps_the_order_of_each_partition(kafka: Kafka, subscribers: Subscribers) -> None:
    topic = await new_topic(kafka, partitions=3)
    count = 300
    await produce(kafka, topic, [{"value": f"{i}".encode(), "key": f"k{i % 11}".encode()} for i in range(count)])

    def jittery(received: Received, seen: int) -> Answer:
        return Answer(delay=(hash(received.event.id) % 4) / 1000)  # later records may well be answered first

    sink = await subscribers(jittery)
    config = config_from_manifest(manifest(topic, kafka.bootstrap, sink.url, ordering="ordered"), sink.url,
                                  limits=FAST)
    async with running(config):
        got = await sink.wait_for(count, timeout=60)
    arrivals: dict[str, list[int]] = collections.defaultdict(list)
    for received in got:
        arrivals[str(received.event.attributes["knativekafkapartition"])].append(
            int(received.event.attributes["knativekafkaoffset"]))
    assert sum(len(offsets) for offsets in arrivals.values()) == count
    assert len(arrivals) == 3
    for partition, offsets in arrivals.items():
        assert offsets == sorted(offsets), f"partition {partition} delivered out of order: {offsets[:20]}..."
        assert offsets == list(range(len(offsets))), f"partition {partition}: offsets missing or repeated"


async def test_a_sink_failing_for_a_while_loses_nothing(kafka: Kafka, subscribers: Subscribers) -> None:
    topic = await new_topic(kafka, partitions=3)
    count = 200
    await produce(kafka, topic, [{"value": f"{i}".encode()} for i in range(count)])
    recovers_at = time.monotonic() + 3.0

    def flaky(received: Received, seen: int) -> Answer:
        return Answer(status=500 if time.monotonic() < recovers_at else 202)

    sink = await subscribers(flaky)
    # One retry and no dead-letter sink: deliveries end FAILED while the sink is down.
    config = config_from_manifest(manifest(topic, kafka.bootstrap, sink.url), sink.url,
                                  delivery=Delivery(retry=1, backoff_delay=0.05, timeout=5), limits=FAST)
    metrics = AdapterMetrics("kafka", "live", "frames")
    async with running(config, metrics):
        got = await sink.wait_for(count, timeout=60)
        await asyncio.sleep(0.5)  # one more commit interval
    values = {r.event.data for r in got}
    assert values == {f"{i}".encode() for i in range(count)}, f"{count - len(values)} records lost"
    assert metrics.value("eventferry_adapter_events_sent_total", outcome="failed", code="500") > 0
    assert sum(r.path == "/" for r in sink.requests) > count  # refused attempts happened
    offsets = await committed(kafka, topic, f"group-{topic}", 3)
    assert sum(o or 0 for o in offsets.values()) == count, f"committed offsets {offsets}"


async def test_dead_letter_sink_gets_the_events_a_sink_always_refuses(kafka: Kafka, subscribers: Subscribers) -> None:
    topic = await new_topic(kafka, partitions=1)
    await produce(kafka, topic, [{"value": f"v{i}".encode()} for i in range(5)])
    sink, dead_letters = await subscribers(lambda r, n: Answer(status=500, body=b"sink is down")), await subscribers()
    config = config_from_manifest(manifest(topic, kafka.bootstrap, sink.url), sink.url, limits=FAST,
                                  delivery=Delivery(retry=2, backoff_delay=0.01, dead_letter_sink=dead_letters.url))
    async with running(config):
        dead = await dead_letters.wait_for(5, timeout=30)
        await asyncio.sleep(0.5)
    assert sorted(r.event.id for r in dead) == [f"partition:0/offset:{i}" for i in range(5)]
    for received in dead:
        attributes = received.event.attributes
        assert attributes["knativeerrordest"] == sink.url
        assert attributes["knativeerrorcode"] == "500"
        assert base64.b64decode(str(attributes["knativeerrordata"])) == b"sink is down"
    assert len(sink.requests) == 5 * 3  # each event: the first attempt and two retries
    assert await committed(kafka, topic, f"group-{topic}", 1) == {0: 5}


def write_secrets(directory: Path, user: str, password: str, mechanism: str) -> None:
    secret = directory / "kafka-auth"
    secret.mkdir(parents=True, exist_ok=True)
    (secret / "user").write_text(user)
    (secret / "password").write_text(password)
    (secret / "mechanism").write_text(mechanism)


SASL_NET = {"sasl": {"enable": True, "user": {"secretKeyRef": {"name": "kafka-auth", "key": "user"}},
                     "password": {"secretKeyRef": {"name": "kafka-auth", "key": "password"}},
                     "type": {"secretKeyRef": {"name": "kafka-auth", "key": "mechanism"}}}}


@pytest.mark.parametrize(("mechanism", "user", "password"), [
    ("SCRAM-SHA-512", SCRAM_USER, SCRAM_PASSWORD),
    ("PLAIN", PLAIN_USER, PLAIN_PASSWORD),
])
async def test_sasl(kafka: Kafka, tmp_path: Path, mechanism: str, user: str, password: str,
                    subscribers: Subscribers) -> None:
    topic = await new_topic(kafka, partitions=1)
    await produce(kafka, topic, [{"value": b"secured"}])
    write_secrets(tmp_path, user, password, mechanism)
    sink = await subscribers()
    config = config_from_manifest(manifest(topic, kafka.sasl_bootstrap, sink.url, net=SASL_NET), sink.url,
                                  secrets=DirectorySecrets(tmp_path), limits=FAST)
    assert config.kafka is not None and config.kafka.security_protocol == "SASL_PLAINTEXT"
    async with running(config):
        got = await sink.wait_for(1, timeout=30)
    assert got[0].event.data == b"secured"


async def test_wrong_credentials_stop_the_adapter_with_a_clear_error(kafka: Kafka, tmp_path: Path) -> None:
    topic = await new_topic(kafka, partitions=1)
    write_secrets(tmp_path / "secrets", SCRAM_USER, "not-the-password", "SCRAM-SHA-512")
    env = adapter_env(manifest(topic, kafka.sasl_bootstrap, "http://127.0.0.1:9/", net=SASL_NET),
                      K_SECRETS_DIR=str(tmp_path / "secrets"))
    proc = start_adapter(env, tmp_path / "adapter.log")
    try:
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        kill(proc)
    output = (tmp_path / "adapter.log").read_text()
    assert code == 1, output
    assert "Kafka authentication failed as user 'eventferry' with SCRAM-SHA-512" in output, output
    assert "check the Secret keys spec.net refers to" in output


# --- the adapter as a process ------------------------------------------------------------------------------

def adapter_env(source: dict[str, Any], **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("K_")}
    env.update({"K_SINK": source["spec"]["sink"]["uri"], "K_SOURCE_SPEC": json.dumps(source["spec"]),
                "K_SOURCE_NAME": source["metadata"]["name"], "K_SOURCE_NAMESPACE": source["metadata"]["namespace"],
                "K_METRICS_PORT": "0", "K_COMMIT_INTERVAL": "0.2", "K_DRAIN_TIMEOUT": "3"})
    env.update(extra)
    return env


def start_adapter(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return start_eventferry(["adapter", "kafka"], log, env)


async def distinct(sink: Subscriber, count: int, timeout: float) -> None:
    """Waits until the sink accepted ``count`` distinct events (duplicates do not count)."""
    deadline = time.monotonic() + timeout
    while len({r.event.id for r in sink.received}) < count:
        if time.monotonic() > deadline:
            break  # the assertions below say what is missing
        await asyncio.sleep(0.1)
