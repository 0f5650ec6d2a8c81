"""The operator against a real kube-apiserver with the real CRDs, and a real data plane process.

``eventferry operator`` and ``eventferry broker --configmap`` run as subprocesses with KUBECONFIG, so
the readiness gate is the real one: a Trigger is Ready only once the data plane reported, in the
status ConfigMap, that it loaded a contract holding it. No kube-controller-manager runs, so the tests
write Deployment status themselves and check ownerReferences where the garbage collector would act.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.env.servers import Kafka, KubeAPI
from tests.support.cluster import (
    API,
    IMAGE,
    SYSTEM,
    Cluster,
    condition_of,
    contract_trigger,
    dataplane_routes,
    http_get,
    make_available,
    manifest,
    running,
    scratch_namespace,
    service,
    trigger,
)

pytestmark = pytest.mark.integration

INGRESS = "http://eventferry-broker-ingress.eventferry-system.svc.cluster.local"


@pytest.fixture(scope="module")
def cluster(kube_api: KubeAPI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(Cluster(kube_api, tmp_path_factory.mktemp("operator"))) as cluster:
        yield cluster


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    with scratch_namespace(cluster, "op") as name:
        yield name


# --- Brokers and Triggers --------------------------------------------------------------------------------------

def test_a_trigger_created_before_its_broker_becomes_ready_with_it(cluster: Cluster, ns: str) -> None:
    assert cluster.create(ns, trigger("early")).returncode == 0
    waiting = cluster.wait_condition(ns, "trigger/early", "Ready", "False", "BrokerDoesNotExist")
    assert condition_of(waiting, "BrokerReady")["status"] == "False"  # type: ignore[index]
    assert cluster.wait(lambda: [e for e in cluster.events(ns, "early") if e["reason"] == "BrokerDoesNotExist"],
                        "a Warning Event BrokerDoesNotExist")[0]["type"] == "Warning"
    assert "BrokerDoesNotExist" in cluster.ok("get", "events", "-n", ns)

    assert cluster.create(ns, manifest("Broker", "default", {})).returncode == 0
    broker = cluster.wait_condition(ns, "broker/default", "Ready", "True")
    assert broker["status"]["address"]["url"] == f"{INGRESS}/{ns}/default"
    assert {c["type"]: c["status"] for c in broker["status"]["conditions"]} == {
        "Ready": "True", "Addressable": "True", "IngressReady": "True", "DeadLetterSinkResolved": "True",
        "EventPoliciesReady": "True"}  # senders not authenticated: says so (reason AuthenticationDisabled)
    assert broker["status"]["observedGeneration"] == broker["metadata"]["generation"]

    ready = cluster.wait_condition(ns, "trigger/early", "Ready", "True")
    assert ready["status"]["subscriberUri"] == "http://sink.example/"
    # Ready means routed: the data plane process has loaded a contract holding the Trigger.
    assert dataplane_routes(cluster, ns, "early")
    generation = cluster.contract()["generation"]
    cluster.wait(lambda: json.loads((cluster.get(SYSTEM, "configmap/eventferry-dataplane-status") or {})["data"]
                                    ["dataplane-0"])["generation"] >= generation, "the data plane's report")


def test_a_trigger_is_not_ready_until_the_data_plane_has_loaded_it(cluster: Cluster, ns: str) -> None:
    assert cluster.create(ns, manifest("Broker", "default", {})).returncode == 0
    cluster.wait_condition(ns, "broker/default", "Ready", "True")
    assert cluster.dataplane is not None
    os.killpg(cluster.dataplane.pid, signal.SIGSTOP)  # the data plane stops reading (its report stays fresh)
    try:
        assert cluster.create(ns, trigger("gated")).returncode == 0
        waiting = cluster.wait_condition(ns, "trigger/gated", "Ready", "Unknown", "ContractNotLoaded")
        assert "waiting for the broker data plane to load contract generation" in \
            condition_of(waiting, "Ready")["message"]  # type: ignore[index]
        assert contract_trigger(cluster, ns, "gated") is not None  # in the ConfigMap, but not loaded yet
        time.sleep(1)
        assert condition_of(cluster.get(ns, "trigger/gated"), "Ready")["status"] == "Unknown"  # type: ignore[index]
    finally:
        os.killpg(cluster.dataplane.pid, signal.SIGCONT)
    cluster.wait_condition(ns, "trigger/gated", "Ready", "True")
    assert dataplane_routes(cluster, ns, "gated")


def test_the_api_server_refuses_immutable_changes_and_invalid_filters(cluster: Cluster, ns: str) -> None:
    assert cluster.create(ns, trigger("t")).returncode == 0
    moved = cluster.patch(ns, "trigger/t", {"spec": {"broker": "other"}})
    assert moved.returncode != 0 and "spec.broker is immutable" in moved.stderr

    valid = trigger("valid", filter={"attributes": {"type": "dev.live.comment", "room2": ""}},
                    filters=[{"any": [{"exact": {"type": "a"}}, {"prefix": {"source": "/live"}},
                                      {"suffix": {"subject": ".jpg"}}, {"not": {"cesql": "lang = 'xx'"}}]},
                             {"all": [{"exact": {"source": "s"}}]}])
    assert cluster.create(ns, valid).returncode == 0
    for bad_key in ({"filter": {"attributes": {"Type": "x"}}}, {"filter": {"attributes": {"9lives": "x"}}},
                    {"filters": [{"exact": {"bad-key": "x"}}]}):
        refused = cluster.create(ns, trigger("bad-key", **bad_key))
        assert refused.returncode != 0 and "attribute names must start with a lower-case letter" in refused.stderr
    for bad_dialect in ([{"exact": {"type": "a"}, "prefix": {"type": "b"}}], [{}], [{"regex": {"type": ".*"}}]):
        refused = cluster.create(ns, trigger("bad-dialect", filters=bad_dialect))
        assert refused.returncode != 0, bad_dialect
        assert "exactly one dialect" in refused.stderr or "unknown field" in refused.stderr


def test_subscriber_uri_of_each_destination_form(cluster: Cluster, ns: str) -> None:
    for name in ("default", "other"):
        assert cluster.create(ns, manifest("Broker", name, {})).returncode == 0
    assert cluster.create(ns, service("moderation")).returncode == 0
    forms = {
        "by-uri": ({"uri": "http://inference.example:8080/frames"}, "http://inference.example:8080/frames"),
        "by-service": ({"ref": {"apiVersion": "v1", "kind": "Service", "name": "moderation"}},
                       f"http://moderation.{ns}.svc.cluster.local"),
        "by-broker": ({"ref": {"apiVersion": API, "kind": "Broker", "name": "other"}}, f"{INGRESS}/{ns}/other"),
        "relative": ({"ref": {"apiVersion": "v1", "kind": "Service", "name": "moderation"}, "uri": "/comments?x=1"},
                     f"http://moderation.{ns}.svc.cluster.local/comments?x=1"),
    }
    for name, (subscriber, _) in forms.items():
        assert cluster.create(ns, trigger(name, subscriber=subscriber)).returncode == 0
    for name, (_, expected) in forms.items():
        ready = cluster.wait_condition(ns, f"trigger/{name}", "Ready", "True")
        assert ready["status"]["subscriberUri"] == expected
        assert contract_trigger(cluster, ns, name)["subscriber"] == expected  # type: ignore[index]


def test_service_not_found_recovers_when_the_service_is_created(cluster: Cluster, ns: str) -> None:
    assert cluster.create(ns, manifest("Broker", "default", {})).returncode == 0
    ref = {"ref": {"apiVersion": "v1", "kind": "Service", "name": "later"}}
    assert cluster.create(ns, trigger("waits", subscriber=ref)).returncode == 0
    failed = cluster.wait_condition(ns, "trigger/waits", "Ready", "False", "ServiceNotFound")
    assert condition_of(failed, "SubscriberResolved")["reason"] == "ServiceNotFound"  # type: ignore[index]
    assert "subscriberUri" not in failed["status"]
    event = cluster.wait(lambda: [e for e in cluster.events(ns, "waits") if e["reason"] == "ServiceNotFound"],
                         "a ServiceNotFound Event")[0]
    assert event["type"] == "Warning" and f"Service {ns}/later does not exist" in event["message"]
    assert contract_trigger(cluster, ns, "waits") is None

    assert cluster.create(ns, service("later")).returncode == 0
    ready = cluster.wait_condition(ns, "trigger/waits", "Ready", "True")
    assert ready["status"]["subscriberUri"] == f"http://later.{ns}.svc.cluster.local"


def test_delivery_override_precedence_in_the_contract(cluster: Cluster, ns: str) -> None:
    broker_delivery = {"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT0.5S",
                       "deadLetterSink": {"uri": "http://dls.example/broker"}}
    assert cluster.create(ns, manifest("Broker", "default", {"delivery": broker_delivery})).returncode == 0
    assert cluster.create(ns, trigger("inherits")).returncode == 0
    assert cluster.create(ns, trigger("overrides", delivery={"retry": 7, "timeout": "PT2S"})).returncode == 0
    broker = cluster.wait_condition(ns, "broker/default", "Ready", "True")
    assert broker["status"]["deadLetterSinkUri"] == "http://dls.example/broker"
    inherits = cluster.wait_condition(ns, "trigger/inherits", "Ready", "True")
    assert inherits["status"]["deadLetterSinkUri"] == "http://dls.example/broker"
    overrides = cluster.wait_condition(ns, "trigger/overrides", "Ready", "True")
    assert "deadLetterSinkUri" not in overrides["status"]

    assert contract_trigger(cluster, ns, "inherits")["delivery"] == {  # type: ignore[index]
        "retry": 3, "backoffPolicy": "linear", "backoffDelay": 0.5, "timeout": 30.0,
        "deadLetterSink": "http://dls.example/broker"}
    # A Trigger's delivery replaces its Broker's entirely: no dead-letter sink, default backoff.
    assert contract_trigger(cluster, ns, "overrides")["delivery"] == {  # type: ignore[index]
        "retry": 7, "backoffPolicy": "exponential", "backoffDelay": 0.2, "timeout": 2.0}


def test_an_invalid_cesql_expression_is_reported_with_its_position(cluster: Cluster, ns: str) -> None:
    assert cluster.create(ns, manifest("Broker", "default", {})).returncode == 0
    assert cluster.create(ns, trigger("bad-sql", filters=[{"cesql": "type = 'a' AND"}])).returncode == 0
    failed = cluster.wait_condition(ns, "trigger/bad-sql", "Ready", "False", "InvalidFilter")
    message = condition_of(failed, "Ready")["message"]  # type: ignore[index]
    assert message.startswith("cesql: line 1, column 15: unexpected end of expression")
    assert contract_trigger(cluster, ns, "bad-sql") is None
    assert cluster.patch(ns, "trigger/bad-sql", {"spec": {"filters": [{"cesql": "type = 'a'"}]}}).returncode == 0
    cluster.wait_condition(ns, "trigger/bad-sql", "Ready", "True")


def test_an_unknown_broker_class_is_reported(cluster: Cluster, ns: str) -> None:
    odd = manifest("Broker", "odd", {}, annotations={"eventferry.dev/broker.class": "Nats"})
    assert cluster.create(ns, odd).returncode == 0
    assert cluster.create(ns, trigger("on-odd", broker="odd")).returncode == 0
    broker = cluster.wait_condition(ns, "broker/odd", "Ready", "False", "UnknownBrokerClass")
    assert condition_of(broker, "Addressable")["status"] == "False"  # type: ignore[index]
    assert "address" not in broker["status"]
    on_odd = cluster.wait_condition(ns, "trigger/on-odd", "Ready", "False", "BrokerNotReady")
    assert "UnknownBrokerClass" in condition_of(on_odd, "BrokerReady")["message"]  # type: ignore[index]
    cluster.wait(lambda: [e for e in cluster.events(ns, "odd") if e["reason"] == "UnknownBrokerClass"],
                 "an UnknownBrokerClass Event")


def test_a_deleted_trigger_leaves_the_contract(cluster: Cluster, ns: str) -> None:
    assert cluster.create(ns, manifest("Broker", "default", {})).returncode == 0
    assert cluster.create(ns, trigger("short-lived")).returncode == 0
    cluster.wait_condition(ns, "trigger/short-lived", "Ready", "True")
    generation = cluster.contract()["generation"]
    cluster.ok("delete", "-n", ns, "trigger/short-lived")
    cluster.wait(lambda: contract_trigger(cluster, ns, "short-lived") is None, "the Trigger leaving the contract")
    assert cluster.contract()["generation"] > generation
    cluster.wait(lambda: not dataplane_routes(cluster, ns, "short-lived"), "the data plane dropping the Trigger")


def test_a_large_contract_goes_compressed_and_back_to_plain_json(cluster: Cluster, ns: str) -> None:
    """Past 256 KiB the operator stores the contract gzip-compressed (binaryData), which the data plane reads;
    once small again it is plain JSON (server-side apply drops the other key)."""
    assert cluster.create(ns, manifest("Broker", "default", {})).returncode == 0
    count = 1_200  # about 400 bytes each in the contract: some 480 KB of JSON
    triggers = [trigger(f"room-{i}", subscriber={"uri": f"http://moderation-{i % 40}.{ns}.svc.cluster.local/rooms/"
                                                        f"{i}/comments?lang=zh-CN&model=toxicity-v3"},
                        filter={"attributes": {"type": "com.live.comment", "room": str(i)}}) for i in range(count)]
    cluster.ok("create", "-n", ns, "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": triggers}))
    cluster.wait(lambda: dataplane_routes(cluster, ns, f"room-{count - 1}") and dataplane_routes(cluster, ns, "room-0"),
                 "the data plane routing the compressed contract", timeout=90)
    stored = cluster.get(SYSTEM, "configmap/eventferry-contract")
    assert stored is not None and "contract.json.gz" in (stored.get("binaryData") or {})
    assert "contract.json" not in (stored.get("data") or {})
    cluster.wait_condition(ns, f"trigger/room-{count - 1}", "Ready", "True", timeout=90)

    # One DeleteCollection: kubectl would delete them one request at a time.
    cluster.kube.request_json("DELETE", f"/apis/{API}/namespaces/{ns}/triggers")
    cluster.wait(lambda: not dataplane_routes(cluster, ns, "room-0"), "the data plane dropping them", timeout=90)
    stored = cluster.get(SYSTEM, "configmap/eventferry-contract")
    assert stored is not None and "contract.json" in (stored.get("data") or {})
    assert "contract.json.gz" not in (stored.get("binaryData") or {})


# --- the data plane's side -------------------------------------------------------------------------------------

async def test_the_data_plane_follows_its_configmap_across_watch_restarts(cluster: Cluster, ns: str) -> None:
    """In-process, with watches the server ends every second: the data plane keeps following the ConfigMap,
    reports each generation it loaded under its replica name, and withdraws its report when it stops."""
    import asyncio
    import ssl

    from eventferry.contract.model import Broker, Contract
    from eventferry.dataplane.contract_configmap import ConfigMapClient, ConfigMapContract
    from eventferry.dataplane.dataplane import DataPlane
    from eventferry.net.kubeconn import ApiConnection
    from eventferry.resources.contract import contract_config_map

    kube = cluster.kube
    connection = ApiConnection(kube.url, ssl.create_default_context(cafile=str(kube.workdir / "certs" /
                                                                                "apiserver.crt")),
                               lambda: f"Bearer {kube.token}")
    client = ConfigMapClient(connection)
    dataplane = DataPlane()
    follower = ConfigMapContract(client, dataplane, ns, "contract", replica="replica-a", status_name="status",
                                 report_interval=0.5, watch_seconds=1)

    def write(contract: Contract) -> None:
        body = contract_config_map(contract, ns, "contract")
        cluster.ok("apply", "--server-side", "-f", "-", stdin=json.dumps(body))

    async def until(probe: Callable[[], bool], what: str) -> None:
        for _ in range(150):
            if await asyncio.to_thread(probe):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def reported() -> int | None:
        status = cluster.get(ns, "configmap/status")
        entry = ((status or {}).get("data") or {}).get("replica-a")
        return int(json.loads(entry)["generation"]) if entry else None

    stop = asyncio.Event()
    task = asyncio.create_task(follower.run(stop))
    try:
        await asyncio.to_thread(write, Contract(generation=1))
        await until(lambda: dataplane.loaded and dataplane.contract.generation == 1, "generation 1 loaded")
        await until(lambda: reported() == 1, "generation 1 reported")
        await asyncio.sleep(3)  # three watches ended by the server in the meantime
        await asyncio.to_thread(write, Contract(generation=2, brokers=[Broker(namespace=ns, name="default")]))
        await until(lambda: dataplane.broker(ns, "default") is not None, "generation 2 loaded after the restarts")
        await until(lambda: reported() == 2, "generation 2 reported")
    finally:
        stop.set()
        await task
        await client.close()
        await dataplane.close()
    assert reported() is None  # a replica that stops no longer holds Triggers back


# --- sources ---------------------------------------------------------------------------------------------------

def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"]}


def test_kafka_source_gets_its_adapter_deployment_and_reports_deployed(cluster: Cluster, ns: str) -> None:
    cluster.ok("create", "secret", "generic", "kafka-auth", "-n", ns, "--from-literal=user=u",
               "--from-literal=password=p")
    assert cluster.create(ns, manifest("Broker", "default", {})).returncode == 0
    assert cluster.create(ns, service("dls")).returncode == 0
    spec = {"bootstrapServers": ["kafka-0:9092"], "topics": ["frames"], "consumers": 2, "initialOffset": "earliest",
            "net": {"sasl": {"enable": True, "user": {"secretKeyRef": {"name": "kafka-auth", "key": "user"}},
                             "password": {"secretKeyRef": {"name": "kafka-auth", "key": "password"}}}},
            "delivery": {"retry": 2, "deadLetterSink": {"ref": {"apiVersion": "v1", "kind": "Service",
                                                                "name": "dls"}}},
            "ceOverrides": {"extensions": {"pipeline": "inference"}},
            "sink": {"ref": {"apiVersion": API, "kind": "Broker", "name": "default"}}}
    assert cluster.create(ns, manifest("KafkaSource", "frames", spec,
                                       labels={"eventferry.dev/key-type": "int"})).returncode == 0
    deployment = cluster.wait(lambda: cluster.get(ns, "deployment/kafkasource-frames"), "the adapter Deployment")
    source = cluster.get(ns, "kafkasource/frames")
    assert source is not None
    uid = source["metadata"]["uid"]

    assert deployment["metadata"]["ownerReferences"] == [{"apiVersion": API, "kind": "KafkaSource", "name": "frames",
                                                          "uid": uid, "controller": True, "blockOwnerDeletion": True}]
    labels = deployment["metadata"]["labels"]
    assert (labels["eventferry.dev/source"], labels["eventferry.dev/source-kind"]) == ("frames", "KafkaSource")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"] == {"matchLabels": {"eventferry.dev/source-uid": uid}}
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert (container["image"], container["command"]) == (IMAGE, ["eventferry", "adapter", "kafka"])
    env = env_of(deployment)
    assert env["K_SINK"] == f"{INGRESS}/{ns}/default"
    assert json.loads(env["K_SOURCE_SPEC"])["topics"] == ["frames"]
    assert (env["K_SOURCE_NAME"], env["K_SOURCE_NAMESPACE"], env["K_SOURCE_UID"]) == ("frames", ns, uid)
    assert env["K_KEY_TYPE"] == "int"
    assert json.loads(env["K_CE_OVERRIDES"]) == {"extensions": {"pipeline": "inference"}}
    assert json.loads(env["K_DELIVERY"])["deadLetterSink"] == f"http://dls.{ns}.svc.cluster.local"
    assert json.loads(env["K_DELIVERY"])["retry"] == 2
    assert (env["K_SECRETS_DIR"], env["K_METRICS_PORT"]) == ("/etc/eventferry/secrets", "9090")
    [volume] = pod["volumes"]
    assert volume["secret"]["secretName"] == "kafka-auth"
    assert {i["key"] for i in volume["secret"]["items"]} == {"user", "password"}
    assert container["volumeMounts"][0]["mountPath"] == "/etc/eventferry/secrets/kafka-auth"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics", "scheme": "HTTP"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532

    waiting = cluster.wait_condition(ns, "kafkasource/frames", "Deployed", "Unknown")
    assert condition_of(waiting, "SinkProvided")["status"] == "True"  # type: ignore[index]
    assert waiting["status"]["sinkUri"] == f"{INGRESS}/{ns}/default"
    make_available(cluster, ns, "kafkasource-frames")
    ready = cluster.wait_condition(ns, "kafkasource/frames", "Ready", "True")
    assert condition_of(ready, "Deployed")["reason"] == "DeploymentAvailable"  # type: ignore[index]
    assert ready["status"]["consumers"] == 2
    assert ready["status"]["selector"] == f"eventferry.dev/source-uid={uid}"

    # A spec change updates the same Deployment in place.
    cluster.ok("scale", "-n", ns, "kafkasource/frames", "--replicas=3")
    scaled = cluster.wait(lambda: (d := cluster.get(ns, "deployment/kafkasource-frames")) and
                          d["spec"]["replicas"] == 3 and d, "the Deployment scaled to 3")
    assert scaled["metadata"]["uid"] == deployment["metadata"]["uid"]
    make_available(cluster, ns, "kafkasource-frames")
    cluster.wait(lambda: ((cluster.get(ns, "kafkasource/frames") or {}).get("status") or {}).get("consumers") == 3,
                 "status.consumers 3")

    # Deleted: the Deployment is the garbage collector's, through its controller reference to this uid.
    cluster.ok("delete", "-n", ns, "kafkasource/frames")
    left = cluster.get(ns, "deployment/kafkasource-frames")
    assert left is not None and left["metadata"]["ownerReferences"][0]["uid"] == uid
    assert cluster.get(ns, "kafkasource/frames") is None


def test_a_missing_secret_fails_the_source_until_it_is_created(cluster: Cluster, ns: str) -> None:
    spec = {"endpoints": "rmq-proxy:8081", "topic": "comments", "consumerGroup": "moderation",
            "accessKey": {"secretKeyRef": {"name": "rmq", "key": "ak"}},
            "secretKey": {"secretKeyRef": {"name": "rmq", "key": "sk"}},
            "sink": {"uri": "http://moderation.example/"}}
    assert cluster.create(ns, manifest("RocketMQSource", "comments", spec)).returncode == 0
    failed = cluster.wait_condition(ns, "rocketmqsource/comments", "Ready", "False", "SecretNotFound")
    assert f"Secret {ns}/rmq does not exist" in condition_of(failed, "Ready")["message"]  # type: ignore[index]
    cluster.wait(lambda: [e for e in cluster.events(ns, "comments") if e["reason"] == "SecretNotFound"],
                 "a SecretNotFound Event")
    assert cluster.get(ns, "deployment/rocketmqsource-comments") is None

    cluster.ok("create", "secret", "generic", "rmq", "-n", ns, "--from-literal=ak=AK")
    failed = cluster.wait(lambda: (s := cluster.get(ns, "rocketmqsource/comments")) and
                          "has no key 'sk'" in (condition_of(s, "Ready") or {}).get("message", "") and s,
                          "the missing key reported")
    cluster.ok("delete", "secret", "rmq", "-n", ns)
    cluster.ok("create", "secret", "generic", "rmq", "-n", ns, "--from-literal=ak=AK", "--from-literal=sk=SK")
    deployment = cluster.wait(lambda: cluster.get(ns, "deployment/rocketmqsource-comments"),
                              "the adapter Deployment once the Secret exists")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["eventferry", "adapter", "rocketmq"]
    assert env_of(deployment)["K_SINK"] == "http://moderation.example/"
    make_available(cluster, ns, "rocketmqsource-comments")
    cluster.wait_condition(ns, "rocketmqsource/comments", "Ready", "True")


# --- Kafka-class Brokers ---------------------------------------------------------------------------------------

def topics_of(kafka: Kafka) -> dict[str, int]:
    """Topic -> partition count, read with Kafka's own admin API (aiokafka)."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def read() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            names = await admin.list_topics()
            described = await admin.describe_topics(names)
            return {t["topic"]: len(t["partitions"]) for t in described}
        finally:
            await admin.close()

    return asyncio.run(read())


def test_kafka_broker_topic_is_created_and_deleted_with_the_broker(cluster: Cluster, ns: str, kafka: Kafka) -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kafka-broker-config"},
              "data": {"bootstrap.servers": kafka.bootstrap, "default.topic.partitions": "3",
                       "default.topic.replication.factor": "1"}}
    assert cluster.create(ns, config).returncode == 0
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "kafka-broker-config"}
    kafka_class = {"eventferry.dev/broker.class": "Kafka"}
    assert cluster.create(ns, manifest("Broker", "durable", {"config": ref}, annotations=kafka_class)).returncode == 0
    retained = {**kafka_class, "eventferry.dev/topic.retain": "true"}
    assert cluster.create(ns, manifest("Broker", "kept", {"config": ref}, annotations=retained)).returncode == 0
    assert cluster.create(ns, trigger("on-kafka", broker="durable")).returncode == 0

    broker = cluster.wait_condition(ns, "broker/durable", "Ready", "True", timeout=90)
    assert condition_of(broker, "TopicReady")["status"] == "True"  # type: ignore[index]
    assert "eventferry.dev/kafka-topics" in broker["metadata"]["finalizers"]
    kept = cluster.wait_condition(ns, "broker/kept", "Ready", "True", timeout=90)
    assert "eventferry.dev/kafka-topics" not in (kept["metadata"].get("finalizers") or [])
    cluster.wait_condition(ns, "trigger/on-kafka", "Ready", "True", timeout=60)
    topic, kept_topic = f"knative-broker-{ns}-durable", f"knative-broker-{ns}-kept"
    assert topics_of(kafka)[topic] == 3
    [entry] = [b for b in cluster.contract()["brokers"] if (b["namespace"], b["name"]) == (ns, "durable")]
    assert entry["class"] == "Kafka"
    assert entry["kafka"] == {"bootstrapServers": [kafka.bootstrap], "topic": topic, "partitions": 3,
                              "replicationFactor": 1}  # no credentials Secret named: none
    # The operator watches ConfigMaps by label: it labelled the Brokers' config, which it did not create.
    labelled = cluster.get(ns, "configmap/kafka-broker-config")
    assert labelled is not None and labelled["metadata"]["labels"]["eventferry.dev/watched"] == "true"

    cluster.ok("delete", "-n", ns, "broker/durable", "broker/kept", "--wait=false")
    cluster.wait(lambda: cluster.get(ns, "broker/durable") is None and cluster.get(ns, "broker/kept") is None,
                 "both Brokers deleted (the finalizer removed)", timeout=90)
    remaining = topics_of(kafka)
    assert topic not in remaining
    assert not [t for t in remaining if t.startswith(f"{topic}.retry.")]
    assert kept_topic in remaining  # eventferry.dev/topic.retain: "true"
    cluster.wait_condition(ns, "trigger/on-kafka", "Ready", "False", "BrokerDoesNotExist")


# --- the operator itself -------------------------------------------------------------------------------------

def test_metrics_and_probes(cluster: Cluster) -> None:
    metrics = http_get(cluster.operator_port, "/metrics") or ""
    assert 'eventferry_operator_reconciles_total{kind="Contract"}' in metrics
    assert "eventferry_operator_reconcile_seconds_bucket" in metrics
    assert "eventferry_operator_leader 1.0" in metrics
    assert http_get(cluster.operator_port, "/healthz") == "ok\n"


def test_a_standby_takes_over_and_changes_nothing_that_did_not_change(cluster: Cluster, ns: str) -> None:
    cluster.ok("create", "secret", "generic", "rmq", "-n", ns, "--from-literal=ak=AK", "--from-literal=sk=SK")
    assert cluster.create(ns, manifest("Broker", "default", {})).returncode == 0
    assert cluster.create(ns, trigger("steady")).returncode == 0
    spec = {"endpoints": "rmq-proxy:8081", "topic": "t", "consumerGroup": "g", "sink": {"uri": "http://s.example/"},
            "accessKey": {"secretKeyRef": {"name": "rmq", "key": "ak"}},
            "secretKey": {"secretKeyRef": {"name": "rmq", "key": "sk"}}}
    assert cluster.create(ns, manifest("RocketMQSource", "steady", spec)).returncode == 0
    cluster.wait(lambda: cluster.get(ns, "deployment/rocketmqsource-steady"), "the adapter Deployment")
    make_available(cluster, ns, "rocketmqsource-steady")
    cluster.wait_condition(ns, "rocketmqsource/steady", "Ready", "True")
    cluster.wait_condition(ns, "trigger/steady", "Ready", "True")
    time.sleep(2)  # let the last status writes settle

    def versions() -> dict[str, str]:
        objects = {"contract": (SYSTEM, "configmap/eventferry-contract"),
                   "deployment": (ns, "deployment/rocketmqsource-steady"), "source": (ns, "rocketmqsource/steady"),
                   "trigger": (ns, "trigger/steady"), "broker": (ns, "broker/default")}
        return {k: cluster.get(*where)["metadata"]["resourceVersion"]  # type: ignore[index]
                for k, where in objects.items()}

    before = versions()
    standby, standby_port = cluster.start_operator()
    try:
        standby.wait_until(lambda: http_get(standby_port, "/readyz") == "standby: another replica holds the lease\n",
                           30, "standing by")
        assert "eventferry_operator_leader 0.0" in (http_get(standby_port, "/metrics") or "")
        assert cluster.operator is not None
        cluster.operator.stop()  # SIGTERM: the leader hands the Lease over
        cluster.operator, cluster.operator_port = standby, standby_port
        standby.wait_until(lambda: http_get(standby_port, "/readyz") == "leader: synced\n", 30, "leader and synced")
    except BaseException:
        standby.stop()
        raise
    time.sleep(3)  # several passes of the new leader
    assert versions() == before

    # ...and the new leader works.
    assert cluster.create(ns, trigger("after")).returncode == 0
    cluster.wait_condition(ns, "trigger/after", "Ready", "True")
