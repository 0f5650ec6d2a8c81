"""KafkaSource adapters that scale with their consumer group's lag: the built-in engine and KEDA, for real.

The operator runs as a process against the test API server; Kafka is real; the sink is a real HTTP
subscriber that takes 20 ms per event. No kubelet runs, so ``Replicas`` plays its part: it watches the
adapter Deployment's ``spec.replicas`` (what the autoscaler sets) and runs that many adapter processes,
each started from the Deployment's own container command and env. Each replica may have 4 events in
flight (``K_MAX_IN_FLIGHT``, a stand-in for a CPU limit), so one replica cannot keep up with a burst
and the autoscaler has something to do. The timeline (lag, replicas) is printed with ``-s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from eventferry.controller.lag import LagReader
from eventferry.controller.rocketmq_backlog import BacklogReader
from tests.env.ports import free_port
from tests.env.process import ManagedProcess
from tests.env.servers import SCRAM_PASSWORD, SCRAM_USER, Kafka, Keda, KubeAPI, KubeControllers, RocketMQ
from tests.support.cluster import Cluster, condition_of, http_get, manifest, running, scratch_namespace
from tests.support.processes import EVENTFERRY
from tests.support.subscriber import Answer, Subscriber, Subscribers

pytestmark = pytest.mark.integration

P = "autoscaling.eventferry.dev/"
PARTITIONS = 4
LAG_THRESHOLD = 100
MAX_SCALE = 4
STEADY_RATE = 20  # messages a second
BURST_SECONDS = 10
IN_FLIGHT_PER_REPLICA = "4"
SINK_DELAY = 0.02


@pytest.fixture(scope="module")
def cluster(kube_api: KubeAPI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(Cluster(kube_api, tmp_path_factory.mktemp("autoscaling")), dataplane=False) as cluster:
        yield cluster


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    with scratch_namespace(cluster, "scale", kinds="kafkasources") as name:
        yield name


class Replicas:
    """Runs as many adapter processes as the Deployment's spec.replicas, from its pod template."""

    def __init__(self, kube: KubeAPI, namespace: str, name: str, workdir: Path) -> None:
        self.kube, self.path, self.workdir = kube, f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}", workdir
        self.running: list[ManagedProcess] = []
        self.started = 0
        self.wanted = -1  # not read yet
        self.most = 0
        self._task: asyncio.Task[None] | None = None

    def _spawn(self, deployment: dict[str, Any]) -> ManagedProcess:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {item["name"]: item["value"] for item in container["env"]}
        assert container["command"][:2] == ["eventferry", "adapter"]
        self.started += 1
        env.update(K_METRICS_PORT=str(free_port()), K_SECRETS_DIR=str(self.workdir / "secrets"),
                   K_MAX_IN_FLIGHT=IN_FLIGHT_PER_REPLICA, K_DRAIN_TIMEOUT="5", PATH=os.environ["PATH"])
        return ManagedProcess(f"adapter-{self.started}", [EVENTFERRY, *container["command"][1:]],
                              self.workdir / f"adapter-{self.started}.log", env=env)

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                deployment = await asyncio.to_thread(self.kube.get_json, self.path)
                self.wanted = int(deployment["spec"].get("replicas", 1))
                while len(self.running) < self.wanted:
                    self.running.append(self._spawn(deployment))
                while len(self.running) > self.wanted:
                    await asyncio.to_thread(self.running.pop().stop)  # SIGTERM: drains, commits, leaves
                self.most = max(self.most, len(self.running))
            await asyncio.sleep(0.3)

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for process in self.running:
            await asyncio.to_thread(process.stop)
        self.running.clear()


async def create_topic(kafka: Kafka, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()


def due_times(plan: list[tuple[float, int]]) -> Iterator[float]:
    """When each message of ``plan`` ((seconds, rate) steps) is due: open loop, the i-th of a step leaves
    at i/rate from its start whatever the answers."""
    start = time.monotonic()
    for seconds, rate in plan:
        for i in range(int(seconds * rate)):
            yield start + i / rate
        start += seconds


async def produce(kafka: Kafka, topic: str, plan: list[tuple[float, int]]) -> int:
    """Sends ``{"n": i}`` bodies as ``plan`` says; returns how many were sent."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=5)
    await producer.start()
    sent = 0
    try:
        for due in due_times(plan):
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await producer.send(topic, json.dumps({"n": sent}).encode(), key=str(sent).encode())
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def delivered(sink: Subscriber) -> set[int]:
    return {json.loads(r.event.data or b"{}")["n"] for r in sink.received}


def slow_sink(received: Any, count: int) -> Answer:
    return Answer(delay=SINK_DELAY)


class Timeline:
    """(seconds, lag, replicas wanted, adapters running) samples, for the assertions and the note."""

    def __init__(self, reader: LagReader, replicas: Replicas) -> None:
        self.reader, self.replicas = reader, replicas
        self.samples: list[tuple[float, int, int, int]] = []
        self.t0 = time.monotonic()

    async def sample_until(self, done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(Exception):
                lag = (await self.reader.read()).total
                self.samples.append((time.monotonic() - self.t0, lag, self.replicas.wanted,
                                     len(self.replicas.running)))
            await asyncio.sleep(1)

    def show(self, title: str) -> None:
        print(f"\n{title}: t(s) lag wanted running")
        for t, lag, wanted, alive in self.samples:
            print(f"  {t:5.1f} {lag:5d} {wanted:2d} {alive:2d}")


def source_manifest(name: str, topic: str, group: str, annotations: dict[str, str], sink: str) -> dict[str, Any]:
    return manifest("KafkaSource", name, {
        "bootstrapServers": [], "topics": [topic], "consumerGroup": group, "initialOffset": "earliest",
        "sink": {"uri": sink}}, annotations=annotations)


async def run_burst(cluster: Cluster, replicas: Replicas, reader: Any, send: Any, sink: Subscriber,
                    title: str) -> tuple[Timeline, int, float]:
    """Waits for the idle source at zero, then ``send()``s a burst and waits for every message at the sink
    and for the adapters back at zero. Returns the timeline, how many were sent, and how long after the
    last send the sink had them all."""
    timeline, done = Timeline(reader, replicas), asyncio.Event()
    replicas.start()
    sampler = asyncio.create_task(timeline.sample_until(done))
    try:
        # The autoscaler takes the new source to zero (min-scale 0, no lag) after its cooldown.
        await wait_for(lambda: replicas.wanted == 0 and not replicas.running, 60, "the idle source at 0 replicas",
                       cluster)
        sent = await send()
        last_sent = time.monotonic()
        await wait_for(lambda: len(delivered(sink)) == sent, 120, f"all {sent} messages at the sink", cluster)
        drained_after = time.monotonic() - last_sent
        await wait_for(lambda: replicas.wanted == 0 and not replicas.running, 90, "back to 0 replicas", cluster)
    finally:
        done.set()
        await sampler
        await replicas.stop()
        await reader.close()
        timeline.show(title)
    return timeline, sent, drained_after


async def kafka_burst(cluster: Cluster, kafka: Kafka, ns: str, annotations: dict[str, str], sink: Subscriber,
                      tmp_path: Path, title: str) -> tuple[Timeline, int, float]:
    """A KafkaSource, and a burst of 10x the steady rate for 10 s between two steady spells."""
    suffix = uuid.uuid4().hex[:6]
    topic, group = f"burst-{suffix}", f"burst-group-{suffix}"
    await create_topic(kafka, topic)
    body = source_manifest("frames", topic, group, annotations, sink.url)
    body["spec"]["bootstrapServers"] = [kafka.bootstrap]
    assert cluster.create(ns, body).returncode == 0
    replicas = Replicas(cluster.kube, ns, "kafkasource-frames", tmp_path)
    reader = LagReader(lambda: {"bootstrap_servers": [kafka.bootstrap]}, group, [topic], "earliest")

    async def send() -> int:
        return await produce(kafka, topic, [(3, STEADY_RATE), (BURST_SECONDS, 10 * STEADY_RATE), (3, STEADY_RATE)])

    return await run_burst(cluster, replicas, reader, send, sink, title)


async def wait_for(probe: Any, timeout: float, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout:.0f}s\n{cluster.logs()}")
        await asyncio.sleep(0.3)


def scaling_annotations(engine: str, cooldown: int) -> dict[str, str]:
    return {P + "class": engine, P + "min-scale": "0", P + "max-scale": str(MAX_SCALE),
            P + "lag-threshold": str(LAG_THRESHOLD), P + "polling-interval": "1", P + "cooldown-period": str(cooldown)}


async def test_builtin_engine_scales_adapters_with_a_burst_and_back_to_zero(
        cluster: Cluster, kafka: Kafka, ns: str, tmp_path: Path, subscribers: Subscribers) -> None:
    sink = await subscribers(slow_sink)
    timeline, sent, drained_after = await kafka_burst(cluster, kafka, ns, scaling_annotations("builtin", 8), sink,
                                                      tmp_path, "built-in engine")
    assert len(delivered(sink)) == sent  # every message reached the sink (once or more)
    peak_lag = max(lag for _, lag, _, _ in timeline.samples)
    peak_wanted = max(wanted for _, _, wanted, _ in timeline.samples)
    assert peak_lag > LAG_THRESHOLD, "the burst built a backlog above one replica's threshold"
    assert peak_wanted >= 2, f"replicas rose with the lag (peak lag {peak_lag})"
    assert peak_wanted <= MAX_SCALE
    print(f"built-in: {sent} sent, peak lag {peak_lag}, peak replicas {peak_wanted}, "
          f"all delivered {drained_after:.1f}s after the last send")
    source = cluster.get(ns, "kafkasource/frames")
    assert source is not None
    status = source["status"]
    assert status["autoscaling"]["class"] == "builtin"
    assert status["autoscaling"]["desiredReplicas"] == 0
    assert "activation threshold" in status["autoscaling"]["message"]
    assert condition_of(source, "Autoscaled")["status"] == "True"  # type: ignore[index]
    header, row = cluster.ok("get", "-n", ns, "kafkasource/frames", "-o", "wide").splitlines()
    columns = dict(zip(header.split(), row.split(), strict=False))
    assert (columns["WANTED"], columns["LAG"]) == ("0", "0")  # CONSUMERS: <none> here, no kubelet reports pods
    scaled = [e for e in cluster.events(ns, "frames") if e["reason"] == "Scaled"]
    assert any("to 0" in e["message"] for e in scaled) and any("from 0 to" in e["message"] for e in scaled)
    metrics = cluster_metrics(cluster)
    assert 'eventferry_operator_scaling_decisions_total{direction="up",kind="KafkaSource"}' in metrics


def cluster_metrics(cluster: Cluster) -> str:
    return http_get(cluster.operator_port, "/metrics") or ""


async def test_keda_engine_gets_a_scaled_object_and_scales_the_adapters_with_the_backlog(
        cluster: Cluster, kafka: Kafka, keda: Keda, kube_controllers: KubeControllers, ns: str, tmp_path: Path,
        subscribers: Subscribers) -> None:
    sink = await subscribers(slow_sink)
    timeline, sent, drained_after = await kafka_burst(cluster, kafka, ns, scaling_annotations("keda", 5), sink,
                                                      tmp_path, "KEDA")
    assert len(delivered(sink)) == sent
    scaled_object = cluster.get(ns, "scaledobject.keda.sh/kafkasource-frames")
    assert scaled_object is not None
    assert scaled_object["spec"]["scaleTargetRef"]["name"] == "kafkasource-frames"
    assert scaled_object["metadata"]["ownerReferences"][0]["kind"] == "KafkaSource"
    peak_wanted = max(wanted for _, _, wanted, _ in timeline.samples)
    assert 1 <= peak_wanted <= MAX_SCALE
    print(f"KEDA: {sent} sent, peak replicas {peak_wanted}, all delivered {drained_after:.1f}s after the last send")
    # Back to the fixed count when autoscaling is switched off: KEDA's objects go.
    cluster.ok("annotate", "-n", ns, "kafkasource/frames", f"{P}class=disabled", "--overwrite")
    await wait_for(lambda: cluster.get(ns, "scaledobject.keda.sh/kafkasource-frames") is None, 30,
                   "the ScaledObject deleted", cluster)


def produce_rocketmq(rocketmq: RocketMQ, topic: str, plan: list[tuple[float, int]]) -> int:
    """Sends ``{"n": i}`` bodies as ``plan`` says (blocking: the client is threaded)."""
    from rocketmq import ClientConfiguration, Credentials, Message, Producer

    producer = Producer(ClientConfiguration(rocketmq.endpoint, Credentials(), request_timeout=10), (topic,))
    producer.startup()
    sent = 0
    try:
        for due in due_times(plan):
            time.sleep(max(0.0, due - time.monotonic()))
            message = Message()
            message.topic, message.body, message.tag = topic, json.dumps({"n": sent}).encode(), "frame"
            producer.send(message)
            sent += 1
    finally:
        producer.shutdown()
    return sent


async def rocketmq_burst(cluster: Cluster, rocketmq: RocketMQ, ns: str, engine: str, cooldown: int,
                         subscribers: Subscribers, tmp_path: Path) -> tuple[Timeline, int]:
    # 100 ms an event (about 40 a replica a second): the threaded RocketMQ producer sends only some
    # hundreds a second, which one faster replica would keep up with.
    sink = await subscribers(lambda received, count: Answer(delay=0.1))
    suffix = uuid.uuid4().hex[:6]
    topic, group = f"burst-{suffix}", f"burst-group-{suffix}"
    await asyncio.to_thread(rocketmq.create_topic, topic, PARTITIONS)
    annotations = {**scaling_annotations(engine, cooldown), P + "lag-threshold": "50"}
    body = manifest("RocketMQSource", "comments", {
        "endpoints": rocketmq.endpoint, "nameServers": rocketmq.namesrv, "topic": topic, "consumerGroup": group,
        "sink": {"uri": sink.url}}, annotations=annotations)
    assert cluster.create(ns, body).returncode == 0
    replicas = Replicas(cluster.kube, ns, "rocketmqsource-comments", tmp_path)
    reader = BacklogReader(rocketmq.namesrv, topic, group)

    async def send() -> int:
        return await asyncio.to_thread(produce_rocketmq, rocketmq, topic, [(2, 10), (5, 100), (2, 10)])

    timeline, sent, drained_after = await run_burst(cluster, replicas, reader, send, sink, f"RocketMQ, {engine}")
    assert len(delivered(sink)) == sent  # every message reached the sink (once or more)
    peak_lag = max(lag for _, lag, _, _ in timeline.samples)
    peak_wanted = max(wanted for _, _, wanted, _ in timeline.samples)
    assert peak_lag > 50 and peak_wanted >= 2, f"replicas rose with the backlog (peak {peak_lag})"
    print(f"RocketMQ {engine}: {sent} sent, peak backlog {peak_lag}, peak replicas {peak_wanted}, "
          f"all delivered {drained_after:.1f}s after the last send")
    return timeline, sent


async def test_builtin_engine_scales_rocketmq_adapters_from_zero_on_the_groups_backlog(
        cluster: Cluster, rocketmq: RocketMQ, ns: str, tmp_path: Path, subscribers: Subscribers) -> None:
    await rocketmq_burst(cluster, rocketmq, ns, "builtin", 8, subscribers, tmp_path)
    scaled = [e["message"] for e in cluster.events(ns, "comments") if e["reason"] == "Scaled"]
    assert any("from 0 to" in m for m in scaled) and any(m.startswith("adapter scaled from 1 to 0") for m in scaled)


async def test_keda_scales_rocketmq_adapters_on_the_backlog_the_operator_reads(
        cluster: Cluster, rocketmq: RocketMQ, keda: Keda, kube_controllers: KubeControllers, ns: str,
        tmp_path: Path, subscribers: Subscribers) -> None:
    await rocketmq_burst(cluster, rocketmq, ns, "keda", 5, subscribers, tmp_path)
    scaled_object = cluster.get(ns, "scaledobject.keda.sh/rocketmqsource-comments")
    assert scaled_object is not None
    [trigger] = scaled_object["spec"]["triggers"]
    assert trigger["type"] == "metrics-api"
    assert trigger["metadata"]["url"] == (f"http://127.0.0.1:{cluster.operator_port}"
                                          f"/backlog/rocketmqsources/{ns}/comments")


@pytest.mark.parametrize("engine", ["builtin", "keda"])
async def test_the_lag_behind_sasl_is_read_with_the_sources_own_secret(
        cluster: Cluster, kafka: Kafka, keda: Keda, kube_controllers: KubeControllers, ns: str, engine: str) -> None:
    """SCRAM-SHA-512 credentials from the source's Secret reach the engine that reads the lag: the
    operator (built-in) or KEDA (a TriggerAuthentication naming the same keys); no adapter runs, and a
    backlog of 30 wakes the source from zero."""
    suffix = uuid.uuid4().hex[:6]
    topic, group = f"sasl-{suffix}", f"sasl-group-{suffix}"
    await create_topic(kafka, topic)
    await produce(kafka, topic, [(1, 30)])
    cluster.ok("create", "secret", "generic", "kafka-auth", "-n", ns, f"--from-literal=user={SCRAM_USER}",
               f"--from-literal=password={SCRAM_PASSWORD}", "--from-literal=mechanism=SCRAM-SHA-512")

    def ref(key: str) -> dict[str, Any]:
        return {"secretKeyRef": {"name": "kafka-auth", "key": key}}

    body = source_manifest("secured", topic, group, {**scaling_annotations(engine, 30), P + "lag-threshold": "10"},
                           "http://127.0.0.1:9/")
    body["spec"].update(bootstrapServers=[kafka.sasl_bootstrap], net={"sasl": {
        "enable": True, "user": ref("user"), "password": ref("password"), "type": ref("mechanism")}})
    assert cluster.create(ns, body).returncode == 0
    cluster.wait(lambda: ((cluster.get(ns, "deployment/kafkasource-secured") or {"spec": {}})["spec"]
                          .get("replicas", 0) >= 2), f"the adapter Deployment scaled on the lag ({engine})", 60)
    source = cluster.wait_condition(ns, "kafkasource/secured", "Autoscaled", "True")
    if engine == "builtin":
        assert source["status"]["autoscaling"]["lag"] == 30
        assert source["status"]["autoscaling"]["desiredReplicas"] == 3  # 30 messages at 10 per replica
    else:
        authentication = cluster.get(ns, "triggerauthentication.keda.sh/kafkasource-secured")
        assert authentication is not None
        assert {t["parameter"] for t in authentication["spec"]["secretTargetRef"]} == {"username", "password"}
        scaled_object = cluster.get(ns, "scaledobject.keda.sh/kafkasource-secured")
        assert scaled_object is not None
        assert scaled_object["spec"]["triggers"][0]["metadata"]["sasl"] == "scram_sha512"
        assert condition_of(scaled_object, "Ready")["status"] == "True"  # type: ignore[index]
    # The operator held the password in memory only: not in its log, the status, Events or KEDA's objects.
    assert cluster.operator is not None
    written = [cluster.operator.log.read_text(), json.dumps(source), json.dumps(cluster.events(ns, "secured")),
               cluster.kubectl("get", "-n", ns, "scaledobjects,triggerauthentications", "-o", "json").stdout]
    assert not [text for text in written if SCRAM_PASSWORD in text]


def test_a_bad_autoscaling_annotation_is_refused_or_else_reported_with_its_name(cluster: Cluster, ns: str) -> None:
    body = source_manifest("bad", "t", "g", {P + "class": "builtin", P + "max-scale": "lots"}, "http://127.0.0.1:9/")
    body["spec"]["bootstrapServers"] = ["127.0.0.1:9"]
    said = f"metadata.annotations[{P}max-scale] must be a whole number"
    refused = cluster.create(ns, body)  # the admission policy installed with the CRDs
    assert refused.returncode != 0 and said in refused.stderr, refused
    # Where the policy is not installed, the operator reports what the model refuses, with the same words.
    binding = "validatingadmissionpolicybinding/source-autoscaling.eventferry.dev"
    cluster.ok("delete", binding)
    try:
        cluster.wait(lambda: cluster.create(ns, body).returncode == 0, "the source stored without the policy", 30)
        source = cluster.wait_condition(ns, "kafkasource/bad", "Ready", "False", "InvalidSpec")
        assert said in condition_of(source, "Ready")["message"]  # type: ignore[index]
    finally:
        cluster.install()


def test_an_unchanged_source_is_not_written_again_by_the_passes_that_retry_it(cluster: Cluster, ns: str) -> None:
    """No Secrets, so no volumes: the builder once emitted empty lists the API server drops, so the stored
    Deployment never held the desired one and every retry pass (every second here, while the source is
    not Ready) sent the same server-side apply again."""
    body = source_manifest("steady", "t", "g", {}, "http://127.0.0.1:9/")
    body["spec"]["bootstrapServers"] = ["127.0.0.1:9"]
    assert cluster.create(ns, body).returncode == 0
    deployment = cluster.wait(lambda: cluster.get(ns, "deployment/kafkasource-steady"), "the adapter Deployment")
    time.sleep(4)  # four retry passes (--retry-interval 1): the source stays not Ready without a kubelet
    after = cluster.get(ns, "deployment/kafkasource-steady")
    assert after is not None
    # Not the resourceVersion: kube-controller-manager, when a test before this one started it, writes the status.
    assert after["metadata"]["generation"] == deployment["metadata"]["generation"] == 1
    assert cluster.operator is not None
    applies = cluster.operator.log.read_text().count(f"applied adapter Deployment {ns}/kafkasource-steady")
    assert applies == 1
