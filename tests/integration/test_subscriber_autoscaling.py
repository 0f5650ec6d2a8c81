"""Trigger subscribers that scale with the Trigger's backlog, from zero, while the broker holds their events.

Real parts: kube-apiserver with kube-controller-manager (Deployments, ReplicaSets, the EndpointSlice
controller), the operator and the broker data plane as processes, Kafka for the Kafka class. No kubelet
runs, so ``SubscriberWorkload`` plays its part (and kube-proxy's) for the subscriber Deployment: one
subscriber process per replica the operator sets, each ready once it listens (after a cold start), its
EndpointSlice written then; the data plane reaches the Service's name through a loopback DNS shim and a
proxy that spreads connections over the ready pods. Each pod takes ``WORK`` seconds per event.

The timelines (replicas wanted, pods ready) and the first event's delay are printed with ``-s``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.env.servers import Kafka, Keda, KubeAPI, KubeControllers
from tests.support.cluster import Cluster, condition_of, manifest
from tests.support.loopback_dns import LoopbackServices
from tests.support.subscriber import Subscriber, Subscribers
from tests.support.workload import SubscriberWorkload, subscriber_manifests

pytestmark = pytest.mark.integration

P = "autoscaling.eventferry.dev/"
TARGET = 2  # events in flight per ready replica
MAX_SCALE = 3
SCALE_DOWN_DELAY = 4
START_DELAY = 2.0  # the subscriber's cold start (a model loading)
WORK = 0.25  # seconds per event in a subscriber pod
BURST = 60


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> LoopbackServices:
    return LoopbackServices(tmp_path_factory.mktemp("dns"))


@pytest.fixture(scope="module")
def cluster(kube_api: KubeAPI, kube_controllers: KubeControllers, loopback: LoopbackServices,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(kube_api, tmp_path_factory.mktemp("subscriber-autoscaling"))
    cluster.install()
    try:
        cluster.run_operator()
        cluster.start_dataplane(loopback.env())
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    name = f"wake-{uuid.uuid4().hex[:8]}"
    cluster.ok("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "brokers,triggers", "--all", "-n", name, "--wait=false")
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
async def dead_letters(subscribers: Subscribers) -> Subscriber:
    return await subscribers()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


async def off_loop(function: Any, *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


async def until(probe: Any, what: str, timeout: float, details: Any = lambda: "") -> Any:
    """Polls ``probe`` (blocking calls go to a thread) until it gives something true."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(probe)
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}\n{details()}")


def broker_manifest(broker_class: str, kafka: Kafka | None) -> list[dict[str, Any]]:
    annotations = {"eventing.knative.dev/broker.class": broker_class}
    if broker_class == "InMemory":
        return [manifest("Broker", "default", {}, annotations=annotations)]
    assert kafka is not None
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kafka-broker-config"},
              "data": {"bootstrap.servers": kafka.bootstrap, "default.topic.partitions": "3",
                       "default.topic.replication.factor": "1"}}
    spec = {"config": {"apiVersion": "v1", "kind": "ConfigMap", "name": "kafka-broker-config"}}
    return [config, manifest("Broker", "default", spec, annotations=annotations)]


def trigger_manifest(name: str, subscriber: str, dead_letter: str, *, activation_timeout: int = 120,
                     retry: int = 1) -> dict[str, Any]:
    annotations = {P + "class": "builtin", P + "target": str(TARGET), P + "max-scale": str(MAX_SCALE),
                   P + "scale-down-delay": str(SCALE_DOWN_DELAY), P + "activation-timeout": str(activation_timeout)}
    spec = {"broker": "default", "subscriber": {"ref": {"apiVersion": "v1", "kind": "Service", "name": subscriber}},
            "delivery": {"retry": retry, "backoffPolicy": "linear", "backoffDelay": "PT0.2S",
                         "deadLetterSink": {"uri": dead_letter}}}
    return manifest("Trigger", name, spec, annotations=annotations)


def setup(cluster: Cluster, loopback: LoopbackServices, ns: str, workdir: Path, broker_class: str,
          kafka: Kafka | None, subscriber: str, dead_letter: str, **workload: Any) -> SubscriberWorkload:
    for obj in [*broker_manifest(broker_class, kafka), *subscriber_manifests(subscriber)]:
        result = cluster.create(ns, obj)
        assert result.returncode == 0, result.stderr
    pods = SubscriberWorkload(cluster.kube, ns, subscriber, workdir / subscriber, **workload).start()
    loopback.add(f"{subscriber}.{ns}.svc.cluster.local", pods.proxy_port)
    result = cluster.create(ns, trigger_manifest(subscriber, subscriber, dead_letter))
    assert result.returncode == 0, result.stderr
    return pods


async def send(cluster: Cluster, ns: str, ids: list[str], rate: float | None = None) -> list[float]:
    """POSTs one CloudEvent per id to the Broker (binary mode); every answer must be 202. The send times."""
    url = f"http://127.0.0.1:{cluster.dataplane_port}/{ns}/default"
    sent = []
    async with aiohttp.ClientSession() as session:
        for event_id in ids:
            headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/live/room-7",
                       "ce-type": "live.comment", "content-type": "application/json"}
            async with session.post(url, data=json.dumps({"text": event_id}), headers=headers) as response:
                assert response.status == 202, await response.text()
            sent.append(time.time())
            if rate:
                await asyncio.sleep(1 / rate)
    return sent


def deployment_replicas(cluster: Cluster, ns: str, name: str) -> int:
    deployment = cluster.get(ns, f"deployment/{name}")
    return int(((deployment or {}).get("spec") or {}).get("replicas") or 0)


async def trigger_ready(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = cluster.get(ns, f"trigger/{name}")
        found = condition_of(obj, "Ready")
        return obj if found and found["status"] == "True" else None

    found: dict[str, Any] = await until(ready, f"trigger {name} Ready", 60, cluster.logs)
    return found


@pytest.mark.parametrize("broker_class", ["InMemory", "Kafka"])
async def test_a_subscriber_at_zero_gets_a_whole_burst_after_its_cold_start_then_scales_back_to_zero(
        cluster: Cluster, loopback: LoopbackServices, ns: str, workdir: Path, dead_letters: Subscriber,
        broker_class: str, request: pytest.FixtureRequest) -> None:
    kafka = request.getfixturevalue("kafka") if broker_class == "Kafka" else None
    pods = setup(cluster, loopback, ns, workdir, broker_class, kafka, "asr", dead_letters.url,
                 start_delay=START_DELAY, work=WORK)
    try:
        trigger = await trigger_ready(cluster, ns, "asr")
        scaled = condition_of(trigger, "SubscriberScaled")
        assert scaled is not None and (scaled["status"], scaled["reason"]) == ("True", "ScaledToZero"), trigger
        assert deployment_replicas(cluster, ns, "asr") == 0

        ids = [f"{broker_class}-{i}" for i in range(BURST)]
        sent = await send(cluster, ns, ids)
        # Activation at once: the operator scales from zero on the data plane's first report, not a polling tick.
        await until(lambda: deployment_replicas(cluster, ns, "asr") >= 1, "scaled from zero", 10, pods.log_tails)
        woke = time.time() - sent[0]
        got = await until(lambda: (r := pods.received()) and len({e["id"] for e in r}) >= BURST and r,
                          f"all {BURST} events at the subscriber", 90, lambda: pods.log_tails() + cluster.logs())
        assert {e["id"] for e in got} == set(ids)
        assert dead_letters.received == [], "a held event was dead-lettered"
        first_ready = min(pods.ready_at)
        first_delivery = min(float(e["at"]) for e in got)
        print(f"\n{broker_class}: scaled from zero {woke:.2f}s after the first send; first pod ready "
              f"{first_ready - sent[0]:.2f}s after it (cold start {START_DELAY}s); first event delivered "
              f"{first_delivery - first_ready:.3f}s after the pod was ready; most ready {pods.most_ready}; "
              f"most in flight in one pod {pods.max_in_flight_per_pod}")
        start = pods.timeline[0][0]
        print(f"timeline (t, wanted, ready): {[(round(t - start, 1), w, r) for t, w, r in pods.timeline]}")
        assert first_delivery - first_ready < 1.0, "the first held event left more than 1 s after a pod was ready"
        assert pods.most_ready >= 2, "the backlog did not scale the subscriber up"
        assert pods.most_ready <= MAX_SCALE
        # Paced to the ready replicas: never more than the target per ready pod in flight at once (the proxy
        # spreads connections, not requests, so one pod may get more than its share; the sum is what is capped).
        for event in got:
            at = float(event["at"])
            in_flight = sum(1 for other in got if float(other["at"]) <= at < float(other["at"]) + WORK - 0.02)
            ready = sum(1 for when in pods.ready_at if when <= at)
            assert in_flight <= TARGET * ready, f"{in_flight} events in flight with {ready} pod(s) ready"

        # Back to zero once the backlog stayed empty for the scale-down delay.
        drained = time.time()
        await until(lambda: deployment_replicas(cluster, ns, "asr") == 0, "scaled back to zero",
                    SCALE_DOWN_DELAY + 20, pods.log_tails)
        print(f"scaled to zero {time.time() - drained:.1f}s after the last event (delay {SCALE_DOWN_DELAY}s)")
        await until(lambda: not pods.live_pods(), "pods gone", 20, pods.log_tails)

        trigger = await off_loop(cluster.get, ns, "trigger/asr")
        scale = trigger["status"]["subscriberScale"]
        assert scale["workload"] == "Deployment/asr" and scale["desiredReplicas"] == 0, scale
        reasons = [e["reason"] for e in await off_loop(cluster.events, ns, "asr")]
        assert reasons.count("Scaled") >= 2, reasons  # up from zero, and back down
        wide = await off_loop(cluster.ok, "get", "triggers", "-n", ns, "-o", "wide")
        assert {"REPLICAS", "WANTED", "HELD"} <= set(wide.split("\n")[0].split()), wide
    finally:
        await off_loop(pods.stop)


async def test_a_subscriber_that_never_gets_ready_is_reported_then_its_events_are_dead_lettered(
        cluster: Cluster, loopback: LoopbackServices, ns: str, workdir: Path, dead_letters: Subscriber) -> None:
    for obj in [*broker_manifest("InMemory", None), *subscriber_manifests("vision")]:
        assert cluster.create(ns, obj).returncode == 0
    pods = SubscriberWorkload(cluster.kube, ns, "vision", workdir / "vision", becomes_ready=False).start()
    loopback.add(f"vision.{ns}.svc.cluster.local", pods.proxy_port)
    timeout = 4
    try:
        assert cluster.create(ns, trigger_manifest("vision", "vision", dead_letters.url,
                                                   activation_timeout=timeout)).returncode == 0
        await trigger_ready(cluster, ns, "vision")
        ids = [f"frame-{i}" for i in range(5)]
        sent_at = time.monotonic()  # the clock of Received.at
        await send(cluster, ns, ids)

        def activating() -> dict[str, Any] | None:
            found = condition_of(cluster.get(ns, "trigger/vision"), "SubscriberScaled")
            return found if found and found["reason"] == "Activating" else None

        waiting = await until(activating, "SubscriberScaled Activating", 10, cluster.logs)
        assert waiting["status"] == "Unknown"
        assert dead_letters.received == [], "an event was dead-lettered while it was held"

        def timed_out() -> dict[str, Any] | None:
            obj = cluster.get(ns, "trigger/vision")
            found = condition_of(obj, "SubscriberScaled")
            return obj if found and found["reason"] == "ActivationTimeout" else None

        trigger = await until(timed_out, "SubscriberScaled ActivationTimeout", timeout + 15, cluster.logs)
        assert condition_of(trigger, "SubscriberScaled")["status"] == "False"  # type: ignore[index]
        assert condition_of(trigger, "Ready")["reason"] == "ActivationTimeout"  # type: ignore[index]
        letters = await dead_letters.wait_for(len(ids), timeout=30)
        assert {r.headers["ce-id"] for r in letters} == set(ids)
        assert min(r.at for r in letters) - sent_at >= timeout, "dead-lettered before the activation timeout"
        assert pods.received() == []
    finally:
        await off_loop(pods.stop)


async def test_a_kafka_broker_restarted_during_a_hold_loses_nothing(
        cluster: Cluster, loopback: LoopbackServices, ns: str, workdir: Path, dead_letters: Subscriber,
        kafka: Kafka) -> None:
    pods = setup(cluster, loopback, ns, workdir, "Kafka", kafka, "moderation", dead_letters.url,
                 start_delay=8.0, work=0.02)
    try:
        await trigger_ready(cluster, ns, "moderation")
        ids = [f"comment-{i}" for i in range(30)]
        await send(cluster, ns, ids)
        await until(lambda: deployment_replicas(cluster, ns, "moderation") >= 1, "scaled from zero", 10)
        assert pods.received() == []
        # The data plane dies while it holds the events (the pod is still starting), and comes back.
        assert cluster.dataplane is not None
        os.killpg(cluster.dataplane.proc.pid, signal.SIGKILL)
        await off_loop(cluster.dataplane.proc.wait)
        await off_loop(cluster.start_dataplane, loopback.env())
        got = await until(lambda: (r := pods.received()) and len({e["id"] for e in r}) >= len(ids) and r,
                          "every held event delivered after the restart", 60,
                          lambda: pods.log_tails() + cluster.logs())
        assert {e["id"] for e in got} == set(ids)
        assert dead_letters.received == []
    finally:
        await off_loop(pods.stop)


async def test_class_keda_wakes_at_once_then_keda_scales_the_subscriber_on_the_same_backlog(
        cluster: Cluster, loopback: LoopbackServices, ns: str, workdir: Path, dead_letters: Subscriber,
        keda: Keda) -> None:
    for obj in [*broker_manifest("InMemory", None), *subscriber_manifests("speech")]:
        assert cluster.create(ns, obj).returncode == 0
    pods = SubscriberWorkload(cluster.kube, ns, "speech", workdir / "speech", start_delay=1.0, work=WORK).start()
    loopback.add(f"speech.{ns}.svc.cluster.local", pods.proxy_port)
    trigger = trigger_manifest("speech", "speech", dead_letters.url)
    trigger["metadata"]["annotations"].update({P + "class": "keda", P + "polling-interval": "1"})
    try:
        assert cluster.create(ns, trigger).returncode == 0
        await trigger_ready(cluster, ns, "speech")
        scaled_object = await until(lambda: cluster.get(ns, "scaledobject/eventferry-deployment-speech"),
                                    "the ScaledObject", 30, cluster.logs)
        assert [o["kind"] for o in scaled_object["metadata"]["ownerReferences"]] == ["Trigger"]
        url = scaled_object["spec"]["triggers"][0]["metadata"]["url"]
        assert url.endswith(f"/backlog/triggers/{ns}?trigger=speech:{TARGET}"), url

        ids = [f"utterance-{i}" for i in range(2 * BURST)]
        sent = await send(cluster, ns, ids)
        await until(lambda: deployment_replicas(cluster, ns, "speech") >= 1, "woken from zero", 10, pods.log_tails)
        print(f"\nkeda: woken from zero {time.time() - sent[0]:.2f}s after the first send")
        got = await until(lambda: (r := pods.received()) and len({e["id"] for e in r}) >= len(ids) and r,
                          f"all {len(ids)} events at the subscriber", 120, lambda: pods.log_tails() + cluster.logs())
        assert {e["id"] for e in got} == set(ids)
        assert dead_letters.received == []
        start = pods.timeline[0][0]
        print(f"timeline (t, wanted, ready): {[(round(t - start, 1), w, r) for t, w, r in pods.timeline]}")
        assert pods.most_ready >= 2, "KEDA did not scale the subscriber up on its backlog"
        assert pods.most_ready <= MAX_SCALE
        timeline = list(pods.timeline)
        woken = next(i for i, (_, wanted, _) in enumerate(timeline) if wanted > 0)
        peak = next(i for i, (_, _, ready) in enumerate(timeline) if ready == pods.most_ready)
        assert all(wanted > 0 for _, wanted, _ in timeline[woken:peak]), "KEDA scaled the woken subscriber to zero"
        hpa = await off_loop(cluster.get, ns, "hpa/keda-hpa-eventferry-deployment-speech")
        assert hpa is not None and hpa["spec"]["maxReplicas"] == MAX_SCALE
        await until(lambda: deployment_replicas(cluster, ns, "speech") == 0, "KEDA back to zero", 60,
                    pods.log_tails)
    finally:
        await off_loop(pods.stop)
