"""A Kafka-class Broker on a Kafka that requires credentials (SASL_SSL), with the real operator and data plane.

The Broker's config ConfigMap names a Secret (Knative's ``auth.secret.ref.name``, with Knative's keys); the
operator reads it to create the topic, the data plane to produce and consume; the contract holds its name only.
Then the Secret's values are looked for everywhere they must not be: the contract, the statuses, the Events
and the two processes' logs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from tests.env.servers import SCRAM_PASSWORD, SCRAM_USER, Kafka, KubeAPI
from tests.support.cluster import SYSTEM, Cluster, condition_of, manifest, running, scratch_namespace, trigger
from tests.support.subscriber import Subscribers

pytestmark = pytest.mark.integration

KAFKA_CLASS = {"eventferry.dev/broker.class": "Kafka"}


@pytest.fixture(scope="module")
def cluster(kube_api: KubeAPI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(Cluster(kube_api, tmp_path_factory.mktemp("kafka-credentials"))) as cluster:
        yield cluster


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    with scratch_namespace(cluster, "kc") as name:
        yield name


def credentials(name: str, password: str, ca_pem: str) -> dict[str, object]:
    values = {"protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "user": SCRAM_USER, "password": password,
              "ca.crt": ca_pem}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


def broker_config(name: str, kafka: Kafka, secret: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"bootstrap.servers": kafka.sasl_ssl_bootstrap, "default.topic.partitions": "2",
                     "auth.secret.ref.name": secret}}


async def test_a_kafka_broker_on_sasl_ssl_stores_and_delivers_and_its_secret_goes_nowhere(
        cluster: Cluster, ns: str, kafka: Kafka, subscribers: Subscribers) -> None:
    ca_pem = kafka.ca_cert.read_text()
    subscriber = await subscribers()
    assert cluster.create(ns, credentials("kafka-credentials", SCRAM_PASSWORD, ca_pem)).returncode == 0
    assert cluster.create(ns, broker_config("kafka-broker-config", kafka, "kafka-credentials")).returncode == 0
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "kafka-broker-config"}
    assert cluster.create(ns, manifest("Broker", "secured", {"config": ref}, annotations=KAFKA_CLASS)).returncode == 0
    assert cluster.create(ns, trigger("all", broker="secured", subscriber={"uri": subscriber.url + "/all"})
                          ).returncode == 0
    broker = await asyncio.to_thread(cluster.wait_condition, ns, "broker/secured", "Ready", "True", timeout=90)
    # The operator reached Kafka with the credentials (the data plane may have made the topic first).
    assert condition_of(broker, "TopicReady")["reason"] in ("TopicCreated", "TopicExists")  # type: ignore[index]
    await asyncio.to_thread(cluster.wait_condition, ns, "trigger/all", "Ready", "True", timeout=90)
    [entry] = [b for b in cluster.contract()["brokers"] if (b["namespace"], b["name"]) == (ns, "secured")]
    assert entry["kafka"]["authSecret"] == {"namespace": ns, "name": "kafka-credentials"}

    url = f"http://127.0.0.1:{cluster.dataplane_port}/{ns}/secured"
    async with aiohttp.ClientSession() as client:
        for n in range(20):
            headers = {"ce-specversion": "1.0", "ce-id": f"e{n}", "ce-source": "/tests", "ce-type": "com.example",
                       "content-type": "application/json"}
            async with client.post(url, data=json.dumps({"n": n}).encode(), headers=headers) as response:
                assert response.status == 202, await response.text()
    delivered = await subscriber.wait_for(20, "/all", timeout=60)
    assert sorted(r.event.id for r in delivered) == sorted(f"e{n}" for n in range(20))

    # A wrong password: the operator says so on the Broker, without the password.
    wrong = f"wrong-{uuid.uuid4().hex}"
    assert cluster.create(ns, credentials("wrong-credentials", wrong, ca_pem)).returncode == 0
    assert cluster.create(ns, broker_config("wrong-config", kafka, "wrong-credentials")).returncode == 0
    wrong_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "wrong-config"}
    assert cluster.create(ns, manifest("Broker", "refused", {"config": wrong_ref}, annotations=KAFKA_CLASS)
                          ).returncode == 0
    refused = await asyncio.to_thread(cluster.wait_condition, ns, "broker/refused", "Ready", "False",
                                      "TopicCreationFailed", timeout=90)
    message = condition_of(refused, "TopicReady")["message"]  # type: ignore[index]
    print(f"\nwrong password, TopicReady: {message}")
    assert f"Kafka authentication failed as user {SCRAM_USER!r} with SCRAM-SHA-512 at {kafka.sasl_ssl_bootstrap}" \
        in message and f"check Secret {ns}/wrong-credentials" in message, message

    # The values of both Secrets appear nowhere: contract, statuses, Events, logs.
    everywhere = "\n".join([
        json.dumps(cluster.contract()),
        cluster.ok("get", "brokers,triggers", "-n", ns, "-o", "json"),
        cluster.ok("get", "events", "-n", ns, "-o", "json"),
        json.dumps(cluster.get(SYSTEM, "configmap/eventferry-dataplane-status")),
        cluster.logs(),
        *(p.log_tail(100_000) for p in (cluster.operator, cluster.dataplane) if p is not None),
    ])
    for secret_value in (SCRAM_PASSWORD, wrong, base64.b64encode(SCRAM_PASSWORD.encode()).decode()):
        assert secret_value not in everywhere, f"a Secret value leaked: {secret_value[:4]}..."
