"""The pure builders of eventferry.resources: the adapter Deployment field by field, the contract
ConfigMap, the readiness gate, conditions and the status of each kind."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest

from eventferry.adapters.config import parse_env
from eventferry.apis import KafkaSource, RocketMQSource
from eventferry.contract.model import Broker as ContractBroker
from eventferry.contract.model import Contract, Delivery
from eventferry.contract.model import Trigger as ContractTrigger
from eventferry.kafka.connection import DirectorySecrets
from eventferry.resources.adapter import (
    AdapterSettings,
    adapter_deployment,
    ce_attributes,
    deployment_name,
    secret_refs,
    selector,
)
from eventferry.resources.conditions import Cond, merge, summarize
from eventferry.resources.contract import (
    MAX_CONTRACT_BYTES,
    ContractTooLarge,
    contract_config_map,
    contract_from_config_map,
    contract_from_data,
    same_routing,
    stored_bytes,
)
from eventferry.resources.names import broker_address
from eventferry.resources.readiness import (
    BROKER,
    TRIGGER,
    ContractHistory,
    gate,
    loaded_generation,
    parse_reports,
    report_patch,
)
from eventferry.resources.status import (
    BrokerFacts,
    Resolution,
    SourceFacts,
    StatusProblem,
    TriggerFacts,
    broker_ready,
    broker_status,
    deployed,
    same_status,
    source_status,
    trigger_status,
)
from eventferry.resources.subset import holds

pytestmark = pytest.mark.unit

UID = "0b6f3c9e-5f7a-4d3e-9a51-1c2d3e4f5a6b"
SINK = "http://eventferry-broker-ingress.eventferry-system.svc.cluster.local/live/default"
SETTINGS = AdapterSettings(image="registry.example/eventferry:1.2.3")
NOW = "2026-01-01T00:00:00Z"


def kafka_source(**spec: Any) -> KafkaSource:
    return KafkaSource.model_validate({
        "apiVersion": "eventferry.dev/v1alpha1", "kind": "KafkaSource",
        "metadata": {"name": "frames", "namespace": "live", "uid": UID, "labels": {"team": "video"}},
        "spec": {"bootstrapServers": ["kafka:9092"], "topics": ["frames", "thumbnails"], "consumers": 3,
                 "sink": {"ref": {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker", "name": "default"}},
                 **spec},
    })


def rocketmq_source(**spec: Any) -> RocketMQSource:
    return RocketMQSource.model_validate({
        "apiVersion": "eventferry.dev/v1alpha1", "kind": "RocketMQSource",
        "metadata": {"name": "comments", "namespace": "live", "uid": UID},
        "spec": {"endpoints": "proxy:8081", "topic": "comments", "consumerGroup": "moderation",
                 "sink": {"uri": "http://moderation.live.svc.cluster.local"}, **spec},
    })


SASL = {"sasl": {"enable": True, "user": {"secretKeyRef": {"name": "kafka-auth", "key": "user"}},
                 "password": {"secretKeyRef": {"name": "kafka-auth", "key": "password"}},
                 "type": {"secretKeyRef": {"name": "kafka-auth", "key": "mechanism", "optional": True}}},
        "tls": {"enable": True, "caCert": {"secretKeyRef": {"name": "kafka-ca", "key": "ca.crt"}}}}


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"]}


# --- the adapter Deployment ---------------------------------------------------------------------------------

def test_kafka_adapter_deployment_field_by_field() -> None:
    source = kafka_source(net=SASL, ceOverrides={"extensions": {"pipeline": "inference"}})
    deployment = adapter_deployment(source, sink_uri=SINK, delivery=None, settings=SETTINGS)

    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    metadata = deployment["metadata"]
    assert (metadata["name"], metadata["namespace"]) == ("kafkasource-frames", "live")
    assert metadata["labels"] == {
        "team": "video",  # the source's own labels, as kopf.adopt copies them
        "eventferry.dev/source": "frames", "eventferry.dev/source-kind": "KafkaSource",
        "eventferry.dev/source-uid": UID, "app.kubernetes.io/name": "eventferry-adapter",
        "app.kubernetes.io/component": "kafka-adapter", "app.kubernetes.io/part-of": "eventferry",
        "app.kubernetes.io/managed-by": "eventferry-operator",
    }
    assert metadata["ownerReferences"] == [{"controller": True, "blockOwnerDeletion": True,
                                            "apiVersion": "eventferry.dev/v1alpha1", "kind": "KafkaSource",
                                            "name": "frames", "uid": UID}]

    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"] == {"matchLabels": {"eventferry.dev/source-uid": UID}}
    template = spec["template"]
    assert template["metadata"]["labels"]["eventferry.dev/source-uid"] == UID
    assert "team" not in template["metadata"]["labels"]

    pod = template["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["terminationGracePeriodSeconds"] == 30
    assert "serviceAccountName" not in pod
    [container] = pod["containers"]
    assert container["name"] == "adapter"
    assert container["image"] == "registry.example/eventferry:1.2.3"
    assert "imagePullPolicy" not in container
    assert container["command"] == ["eventferry", "adapter", "kafka"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    assert container["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": "metrics"},
                                          "periodSeconds": 10, "failureThreshold": 3}
    assert container["readinessProbe"] == {"httpGet": {"path": "/readyz", "port": "metrics"},
                                           "periodSeconds": 5, "failureThreshold": 3}
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}

    env = env_of(deployment)
    assert list(env) == ["K_SINK", "K_SOURCE_SPEC", "K_SOURCE_NAME", "K_SOURCE_NAMESPACE", "K_SOURCE_UID",
                         "K_SECRETS_DIR", "K_METRICS_PORT", "K_KEY_TYPE", "K_CE_OVERRIDES", "K_SINK_BATCH_SIZE"]
    assert env["K_SINK"] == SINK
    assert env["K_SINK_BATCH_SIZE"] == "100"  # the sink is a Broker: it takes batches
    assert json.loads(env["K_SOURCE_SPEC"]) == source.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert json.loads(env["K_SOURCE_SPEC"])["bootstrapServers"] == ["kafka:9092"]  # camelCase, as in manifests
    assert (env["K_SOURCE_NAME"], env["K_SOURCE_NAMESPACE"], env["K_SOURCE_UID"]) == ("frames", "live", UID)
    assert (env["K_SECRETS_DIR"], env["K_METRICS_PORT"], env["K_KEY_TYPE"]) == ("/etc/eventferry/secrets", "9090",
                                                                                "string")
    assert json.loads(env["K_CE_OVERRIDES"]) == {"extensions": {"pipeline": "inference"}}
    assert "K_DELIVERY" not in env
    assert not any("password" in item["value"] for item in container["env"] if item["name"] != "K_SOURCE_SPEC")
    plain = adapter_deployment(kafka_source(sink={"uri": "http://moderation.live.svc.cluster.local"}),
                               sink_uri="http://moderation.live.svc.cluster.local", delivery=None, settings=SETTINGS)
    assert "K_SINK_BATCH_SIZE" not in env_of(plain)  # one event a request, as Knative's subscribers expect

    # One volume per Secret, with exactly the keys read from it, mounted at <K_SECRETS_DIR>/<secret>.
    volumes = {v["secret"]["secretName"]: v for v in pod["volumes"]}
    assert volumes["kafka-auth"]["secret"]["items"] == [{"key": "mechanism", "path": "mechanism"},
                                                        {"key": "password", "path": "password"},
                                                        {"key": "user", "path": "user"}]
    assert volumes["kafka-auth"]["secret"]["optional"] is False  # user and password are required
    assert volumes["kafka-ca"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {"/etc/eventferry/secrets/kafka-auth", "/etc/eventferry/secrets/kafka-ca"}
    assert mounts["/etc/eventferry/secrets/kafka-auth"]["name"] == volumes["kafka-auth"]["name"]
    assert all(m["readOnly"] for m in mounts.values())


def test_the_deployment_is_what_kopf_adopt_would_make_of_it() -> None:
    source = kafka_source()
    deployment = adapter_deployment(source, sink_uri=SINK, delivery=None, settings=SETTINGS)
    adopted = copy.deepcopy(deployment)
    kopf.adopt(adopted, owner=kopf.Body(source.to_manifest()))
    assert adopted == deployment


def test_rocketmq_adapter_deployment_with_credentials_and_a_resolved_delivery() -> None:
    source = rocketmq_source(accessKey={"secretKeyRef": {"name": "rmq", "key": "ak"}},
                             secretKey={"secretKeyRef": {"name": "rmq", "key": "sk"}}, consumers=2)
    delivery = Delivery(retry=4, backoff_delay=0.5, dead_letter_sink="http://dls.live.svc.cluster.local")
    settings = AdapterSettings(image="img:1", image_pull_policy="Always", secrets_dir="/secrets", metrics_port=9191,
                               service_account="adapters", image_pull_secrets=("acr-pull",))
    deployment = adapter_deployment(source, sink_uri="http://moderation.live.svc.cluster.local", delivery=delivery,
                                    settings=settings)
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert deployment["metadata"]["name"] == "rocketmqsource-comments"
    assert deployment["metadata"]["labels"]["eventferry.dev/source-kind"] == "RocketMQSource"
    assert deployment["spec"]["replicas"] == 2
    assert container["command"] == ["eventferry", "adapter", "rocketmq"]
    assert container["imagePullPolicy"] == "Always"
    assert container["ports"][0]["containerPort"] == 9191
    assert pod["serviceAccountName"] == "adapters"
    assert pod["imagePullSecrets"] == [{"name": "acr-pull"}]
    env = env_of(deployment)
    assert "K_KEY_TYPE" not in env and "K_CE_OVERRIDES" not in env
    assert env["K_METRICS_PORT"] == "9191" and env["K_SECRETS_DIR"] == "/secrets"
    assert json.loads(env["K_DELIVERY"]) == {"retry": 4, "backoffPolicy": "exponential", "backoffDelay": 0.5,
                                             "timeout": 30.0, "deadLetterSink": "http://dls.live.svc.cluster.local"}
    [volume] = pod["volumes"]
    assert volume["secret"] == {"secretName": "rmq", "optional": False,
                                "items": [{"key": "ak", "path": "ak"}, {"key": "sk", "path": "sk"}]}
    assert container["volumeMounts"] == [{"name": volume["name"], "mountPath": "/secrets/rmq", "readOnly": True}]


@pytest.mark.parametrize("make", [
    lambda: kafka_source(net=SASL, ceOverrides={"extensions": {"pipeline": "inference"}}),
    lambda: rocketmq_source(accessKey={"secretKeyRef": {"name": "rmq", "key": "ak"}},
                            secretKey={"secretKeyRef": {"name": "rmq", "key": "sk"}}),
])
def test_the_adapter_reads_the_deployment_it_is_given(make: Any, tmp_path: Path) -> None:
    """The environment contract, checked against the adapter's own parser: the Secrets laid out as the
    volumes mount them, the environment as the container gets it."""
    source = make()
    deployment = adapter_deployment(source, sink_uri=SINK, delivery=Delivery(retry=2), settings=SETTINGS)
    secrets_dir = tmp_path / "secrets"
    for ref in secret_refs(source):
        (secrets_dir / ref.name).mkdir(parents=True, exist_ok=True)
        (secrets_dir / ref.name / ref.key).write_text(
            {"mechanism": "SCRAM-SHA-512"}.get(ref.key, f"value-of-{ref.key}"))
    env = env_of(deployment) | {"K_SECRETS_DIR": str(secrets_dir)}
    kind = deployment["spec"]["template"]["spec"]["containers"][0]["command"][2]
    config = parse_env(kind, env, DirectorySecrets(secrets_dir))
    assert (config.namespace, config.name, config.sink) == ("live", source.metadata.name, SINK)
    assert config.delivery.retry == 2
    assert config.metrics_port == 9090
    if config.kafka is not None:
        assert config.kafka.consumer_group == f"knative-kafka-source-{UID}"
        assert config.kafka.sasl is not None and config.kafka.sasl.mechanism == "SCRAM-SHA-512"
        assert config.kafka.sasl.password == "value-of-password"
        assert config.kafka.tls is not None and config.kafka.tls.ca_cert == "value-of-ca.crt"
        assert dict(config.ce_overrides) == {"pipeline": "inference"}
    else:
        assert config.rocketmq is not None
        assert (config.rocketmq.access_key, config.rocketmq.secret_key) == ("value-of-ak", "value-of-sk")


def test_secret_refs_only_of_enabled_features() -> None:
    disabled = {"sasl": {**SASL["sasl"], "enable": False}, "tls": {"enable": False}}
    assert secret_refs(kafka_source(net=disabled)) == []
    assert [(r.name, r.key) for r in secret_refs(kafka_source(net=SASL))] == [
        ("kafka-auth", "user"), ("kafka-auth", "password"), ("kafka-auth", "mechanism"), ("kafka-ca", "ca.crt")]
    assert secret_refs(rocketmq_source()) == []


def test_an_optional_secret_makes_an_optional_volume() -> None:
    source = rocketmq_source(accessKey={"secretKeyRef": {"name": "rmq", "key": "ak", "optional": True}},
                             secretKey={"secretKeyRef": {"name": "rmq", "key": "sk", "optional": True}})
    [volume] = adapter_deployment(source, sink_uri=SINK, delivery=None,
                                  settings=SETTINGS)["spec"]["template"]["spec"]["volumes"]
    assert volume["secret"]["optional"] is True


def test_long_names_still_make_valid_names_and_labels() -> None:
    source = kafka_source()
    source.metadata.name = "a" * 200
    deployment = adapter_deployment(source, sink_uri=SINK, delivery=None, settings=SETTINGS)
    name, label = deployment_name(source), deployment["metadata"]["labels"]["eventferry.dev/source"]
    assert deployment["metadata"]["name"] == name
    assert len(name) <= 63 and len(label) <= 63
    assert name[-1].isalnum() and label[-1].isalnum()
    other = kafka_source()
    other.metadata.name = "a" * 199 + "b"
    assert deployment_name(other) != name  # the hash keeps truncated names apart


def test_selector_and_ce_attributes() -> None:
    assert selector(kafka_source()) == f"eventferry.dev/source-uid={UID}"
    assert ce_attributes(kafka_source()) == [
        {"type": "dev.knative.kafka.event", "source": "/apis/v1/namespaces/live/kafkasources/frames#frames"},
        {"type": "dev.knative.kafka.event", "source": "/apis/v1/namespaces/live/kafkasources/frames#thumbnails"}]
    assert ce_attributes(rocketmq_source()) == [
        {"type": "dev.eventferry.rocketmq.message",
         "source": "/apis/v1/namespaces/live/rocketmqsources/comments#comments"}]


def test_a_source_without_uid_gets_no_deployment() -> None:
    source = kafka_source()
    source.metadata.uid = None
    with pytest.raises(ValueError, match="no uid"):
        adapter_deployment(source, sink_uri=SINK, delivery=None, settings=SETTINGS)


def test_holds_ignores_what_the_api_server_adds_but_not_what_changed() -> None:
    desired = adapter_deployment(kafka_source(), sink_uri=SINK, delivery=None, settings=SETTINGS)
    stored = copy.deepcopy(desired)
    stored["metadata"]["resourceVersion"] = "42"
    stored["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    stored["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["timeoutSeconds"] = 1
    assert holds(stored, desired)
    stored["spec"]["replicas"] = 1
    assert not holds(stored, desired)
    stored = copy.deepcopy(desired)
    stored["spec"]["template"]["spec"]["containers"][0]["env"].pop()
    assert not holds(stored, desired)


# --- the contract ConfigMap ----------------------------------------------------------------------------------

def contract(generation: int = 3, retry: int = 10, triggers: int = 1) -> Contract:
    return Contract(generation=generation, brokers=[ContractBroker(
        namespace="live", name="default", uid="b1",
        triggers=[ContractTrigger(namespace="live", name=f"t{i}", uid=f"u{i}", subscriber="http://s",
                                  delivery=Delivery(retry=retry)) for i in range(triggers)])])


def test_contract_config_map() -> None:
    written = contract()
    config_map = contract_config_map(written, "eventferry-system")
    assert config_map["metadata"]["name"] == "eventferry-contract"
    assert config_map["metadata"]["namespace"] == "eventferry-system"
    assert config_map["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "eventferry-operator"
    assert list(config_map["data"]) == ["contract.json"]
    assert "\n" not in config_map["data"]["contract.json"]  # compact: the 1 MiB limit is precious
    assert contract_from_data(config_map["data"]) == written


def test_a_contract_over_the_limit_is_refused_with_its_size() -> None:
    big = contract(triggers=50)
    with pytest.raises(ContractTooLarge, match=r"over the 1000-byte limit") as refused:
        contract_config_map(big, "eventferry-system", limit=1000)
    assert refused.value.size > 1000
    assert "50 Trigger(s)" in str(refused.value)


def test_contract_from_data_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"neither the key 'contract\.json' nor 'contract\.json\.gz'"):
        contract_from_data({})
    with pytest.raises(ValueError, match=r"contract\.json\.gz is not gzip-compressed base64"):
        contract_from_config_map({"binaryData": {"contract.json.gz": "bm90IGd6aXA="}})
    with pytest.raises(ValueError, match="not a valid contract"):
        contract_from_data({"contract.json": '{"brokers": 3}'})


def test_a_large_contract_is_compressed_and_ten_thousand_triggers_fit() -> None:
    import uuid

    small = contract(triggers=3)
    assert "data" in contract_config_map(small, "eventferry-system")  # readable while small
    big = Contract(generation=9, brokers=[ContractBroker(namespace="live", name="default", uid="b1", triggers=[
        ContractTrigger(namespace="live", name=f"room-{i}-comments", uid=str(uuid.uuid4()), generation=1,
                        subscriber=f"http://moderation-{i % 50}.live.svc.cluster.local/comments",
                        attributes={"type": "com.live.comment", "room": str(i)},
                        delivery=Delivery(retry=3, dead_letter_sink="http://dls.live.svc.cluster.local"))
        for i in range(10_000)])])
    config_map = contract_config_map(big, "eventferry-system")
    assert "data" not in config_map and list(config_map["binaryData"]) == ["contract.json.gz"]
    assert stored_bytes(config_map) < MAX_CONTRACT_BYTES / 2  # room to spare at 10,000 Triggers
    assert contract_from_config_map(config_map) == big
    assert contract_config_map(big, "eventferry-system") == config_map  # the same bytes: no needless rewrite


def test_same_routing_ignores_the_generation_only() -> None:
    assert same_routing(contract(generation=1), contract(generation=7))
    assert not same_routing(contract(retry=1), contract(retry=2))


# --- the readiness gate ----------------------------------------------------------------------------------------

def test_reports_round_trip_and_bad_entries_are_skipped() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    patch = report_patch("dataplane-0", 12, now)
    data = {**patch["data"], "broken": "not json", "partial": '{"generation": 3}'}
    reports = parse_reports(data)
    assert list(reports) == ["dataplane-0"]
    assert (reports["dataplane-0"].generation, reports["dataplane-0"].heartbeat) == (12, now)
    assert report_patch("dataplane-0", None, now) == {"data": {"dataplane-0": None}}


def test_loaded_generation_is_the_lowest_of_the_replicas_heard_from_recently() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    data = {**report_patch("a", 9, now)["data"], **report_patch("b", 7, now - timedelta(seconds=5))["data"],
            **report_patch("gone", 2, now - timedelta(minutes=5))["data"]}
    reports = parse_reports(data)
    assert loaded_generation(reports, now, stale_after=30) == 7
    assert loaded_generation(reports, now, stale_after=1) == 9
    assert loaded_generation(reports, now + timedelta(hours=1), stale_after=30) is None


def test_gate() -> None:
    assert gate(5, 5, "IngressReady") == Cond("IngressReady", "True")
    waiting = gate(5, 4, "IngressReady")
    assert (waiting.status, waiting.reason) == ("Unknown", "ContractNotLoaded")
    assert "generation 5" in (waiting.message or "") and "4" in (waiting.message or "")
    assert gate(5, None, "X").reason == "DataPlaneUnavailable"
    assert gate(None, 9, "X").reason == "NotInContract"


def test_history_keeps_the_first_generation_of_an_unchanged_entry() -> None:
    history = ContractHistory()
    history.record(contract(generation=1, retry=1))
    history.record(contract(generation=2, retry=1))
    assert history.first_generation(TRIGGER, "live", "t0") == 1
    assert history.first_generation(BROKER, "live", "default") == 1
    history.record(contract(generation=3, retry=5))  # the Trigger changed, its Broker did not
    assert history.first_generation(TRIGGER, "live", "t0") == 3
    assert history.first_generation(BROKER, "live", "default") == 1
    assert history.entry(TRIGGER, "live", "t0").delivery.retry == 5
    history.record(Contract(generation=4))
    assert history.first_generation(TRIGGER, "live", "t0") is None
    assert history.removed == {("live", "default"): 4}
    history.record(contract(generation=5))
    assert history.removed == {}


# --- conditions and status ----------------------------------------------------------------------------------------

def test_merge_keeps_the_transition_time_of_unchanged_conditions() -> None:
    before = merge(None, [Cond("Ready", "False", "X", "x"), Cond("A", "True")], NOW)
    after = merge(before, [Cond("A", "True"), Cond("Ready", "True")], "2026-02-02T00:00:00Z")
    assert [c["type"] for c in after] == ["Ready", "A"]
    assert after[0] == {"type": "Ready", "status": "True", "lastTransitionTime": "2026-02-02T00:00:00Z"}
    assert after[1]["lastTransitionTime"] == NOW


def test_summarize_prefers_false_then_unknown_then_the_blocker() -> None:
    deps = [Cond("A", "Unknown", "Wait", "w"), Cond("B", "False", "Broken", "b")]
    assert summarize(deps) == Cond("Ready", "False", "Broken", "b")
    assert summarize(deps[:1], ("Invalid", "i")) == Cond("Ready", "Unknown", "Wait", "w")
    assert summarize([Cond("A", "True")], ("Invalid", "i")) == Cond("Ready", "False", "Invalid", "i")
    assert summarize([Cond("A", "True")]) == Cond("Ready", "True")


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {c["type"]: (c["status"], c.get("reason")) for c in status["conditions"]}


def test_broker_status_ready_and_addressable() -> None:
    address = broker_address("eventferry-broker-ingress", "eventferry-system", "live", "default")
    assert address == "http://eventferry-broker-ingress.eventferry-system.svc.cluster.local/live/default"
    facts = BrokerFacts(address=address, ingress=gate(4, 4, "IngressReady"),
                        dead_letter=Resolution("http://dls.live.svc.cluster.local"))
    status = broker_status(facts, None, 2, NOW)
    assert status["address"] == {"url": address}
    assert status["deadLetterSinkUri"] == "http://dls.live.svc.cluster.local"
    assert status["observedGeneration"] == 2
    assert conditions(status) == {"Ready": ("True", None), "Addressable": ("True", None),
                                  "IngressReady": ("True", None), "DeadLetterSinkResolved": ("True", None)}


def test_broker_status_of_an_unknown_class_has_no_address() -> None:
    facts = BrokerFacts(address=None, problem=StatusProblem("UnknownBrokerClass", "unknown broker class 'Nats'"))
    status = broker_status(facts, None, 1, NOW)
    assert status["address"] is None  # a merge patch removes an address written before
    assert conditions(status)["Ready"] == ("False", "UnknownBrokerClass")
    assert conditions(status)["Addressable"] == ("False", "UnknownBrokerClass")
    assert status["deadLetterSinkUri"] is None
    assert conditions(status)["DeadLetterSinkResolved"] == ("True", "DeadLetterSinkNotConfigured")


def test_kafka_broker_status_waits_for_its_topic() -> None:
    facts = BrokerFacts(address="http://x/live/k", ingress=gate(1, 1, "IngressReady"),
                        topic=Cond("TopicReady", "False", "TopicCreationFailed", "unreachable"))
    assert conditions(broker_status(facts, None, 1, NOW))["Ready"] == ("False", "TopicCreationFailed")


def trigger_facts(**overrides: Any) -> TriggerFacts:
    values: dict[str, Any] = {"broker": broker_ready({"status": "True"}, "live", "default"),
                              "subscriber": Resolution("http://s.live.svc.cluster.local"),
                              "loaded": gate(3, 3, "Loaded")}
    return TriggerFacts(**{**values, **overrides})


def test_trigger_status_is_ready_only_once_the_data_plane_loaded_it() -> None:
    status = trigger_status(trigger_facts(), None, 1, NOW)
    assert conditions(status) == {"Ready": ("True", None), "BrokerReady": ("True", None),
                                  "SubscriberResolved": ("True", None),
                                  "DeadLetterSinkResolved": ("True", "DeadLetterSinkNotConfigured")}
    assert status["subscriberUri"] == "http://s.live.svc.cluster.local"
    waiting = trigger_status(trigger_facts(loaded=gate(3, 2, "Loaded")), None, 1, NOW)
    assert conditions(waiting)["Ready"] == ("Unknown", "ContractNotLoaded")
    assert conditions(waiting)["SubscriberResolved"] == ("True", None)


def test_trigger_status_of_its_failures() -> None:
    missing = trigger_status(trigger_facts(broker=broker_ready(None, "live", "default")), None, 1, NOW)
    assert conditions(missing)["Ready"] == ("False", "BrokerDoesNotExist")
    not_ready = broker_ready({"status": "False", "reason": "UnknownBrokerClass", "message": "m"}, "live", "default")
    assert (not_ready.status, not_ready.reason) == ("False", "BrokerNotReady")
    assert "UnknownBrokerClass" in (not_ready.message or "")
    unresolved = Resolution.failed("ServiceNotFound", "Service live/x does not exist")
    no_service = trigger_status(trigger_facts(subscriber=unresolved), None, 1, NOW)
    assert conditions(no_service)["Ready"] == ("False", "ServiceNotFound")
    assert conditions(no_service)["SubscriberResolved"] == ("False", "ServiceNotFound")
    assert no_service["subscriberUri"] is None
    bad_filter = trigger_status(trigger_facts(problem=StatusProblem("InvalidFilter", "cesql: line 1, column 7: ...")),
                                None, 1, NOW)
    assert conditions(bad_filter)["Ready"] == ("False", "InvalidFilter")
    assert "line 1, column 7" in bad_filter["conditions"][0]["message"]
    dead_letter = trigger_status(trigger_facts(dead_letter=Resolution.failed("ServiceNotFound", "no dls")), None, 1,
                                 NOW)
    assert conditions(dead_letter)["DeadLetterSinkResolved"] == ("False", "ServiceNotFound")
    assert conditions(dead_letter)["Ready"] == ("False", "ServiceNotFound")


def deployment(available: str | None, observed: int = 2, generation: int = 2) -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": observed, "replicas": 3, "availableReplicas": 3}
    if available is not None:
        status["conditions"] = [{"type": "Available", "status": available, "reason": "MinimumReplicasUnavailable",
                                 "message": "Deployment does not have minimum availability."}]
    return {"metadata": {"generation": generation}, "spec": {"replicas": 3}, "status": status}


def test_deployed_from_the_deployment_status() -> None:
    assert deployed(None).status == "Unknown"
    assert deployed(deployment("True")) == Cond("Deployed", "True", "DeploymentAvailable",
                                                "3 of 3 adapter replica(s) available")
    assert deployed(deployment("True", observed=1)).reason == "DeploymentProgressing"
    assert deployed(deployment(None)).status == "Unknown"
    unavailable = deployed(deployment("False"))
    assert (unavailable.status, unavailable.reason) == ("False", "MinimumReplicasUnavailable")


def test_source_status() -> None:
    facts = SourceFacts(Resolution(SINK), deployed(deployment("True")), consumers=3, selector="a=b",
                        ce_attributes=[{"type": "t", "source": "s"}])
    status = source_status(facts, None, 4, NOW)
    assert conditions(status) == {"Ready": ("True", None), "SinkProvided": ("True", None),
                                  "Deployed": ("True", "DeploymentAvailable")}
    assert (status["sinkUri"], status["consumers"], status["selector"]) == (SINK, 3, "a=b")
    assert status["observedGeneration"] == 4
    missing = source_status(SourceFacts(Resolution(SINK), deployed(None),
                                        StatusProblem("SecretNotFound", "Secret live/x does not exist")), None, 4, NOW)
    assert conditions(missing)["Ready"] == ("False", "SecretNotFound")
    assert conditions(missing)["Deployed"] == ("False", "SecretNotFound")
    no_sink = source_status(SourceFacts(Resolution.failed("BrokerNotAddressable", "m"), deployed(None)), None, 4, NOW)
    assert conditions(no_sink)["SinkProvided"] == ("False", "BrokerNotAddressable")
    assert no_sink["sinkUri"] is None


def test_same_status_treats_none_as_absent() -> None:
    wanted = {"observedGeneration": 1, "address": None, "conditions": [{"type": "Ready"}]}
    assert same_status({"observedGeneration": 1, "conditions": [{"type": "Ready"}]}, wanted)
    assert not same_status({"observedGeneration": 1, "conditions": [{"type": "Ready"}], "address": {"url": "u"}},
                           wanted)
    assert not same_status(None, wanted)


def test_a_scaled_subscriber_is_reported_and_only_a_failed_one_makes_the_trigger_unready() -> None:
    from eventferry.resources.conditions import false, true, unknown
    from eventferry.resources.status import SubscriberScaleReport, same_status

    activating = SubscriberScaleReport(unknown("SubscriberScaled", "Activating", "waiting"), workload="Deployment/asr",
                                       desired=1, ready=0, held=7, message="backlog 7 at 2 in flight per replica: 4")
    status = trigger_status(trigger_facts(scale=activating), None, 1, NOW)
    assert conditions(status)["Ready"] == ("True", None)  # a cold start does not make the Trigger unready
    assert conditions(status)["SubscriberScaled"] == ("Unknown", "Activating")
    assert status["subscriberScale"] == {"workload": "Deployment/asr", "desiredReplicas": 1, "readyReplicas": 0,
                                         "heldEvents": 7, "message": "backlog 7 at 2 in flight per replica: 4"}
    late = SubscriberScaleReport(false("SubscriberScaled", "ActivationTimeout", "no ready endpoint"))
    assert conditions(trigger_status(trigger_facts(scale=late), None, 1, NOW))["Ready"] == \
        ("False", "ActivationTimeout")
    at_zero = trigger_status(trigger_facts(scale=SubscriberScaleReport(true("SubscriberScaled", "ScaledToZero"),
                                                                       workload="Deployment/asr", desired=0)),
                             None, 1, NOW)
    # The patch writes nulls for what no longer applies; the stored status lacks them: nothing to write.
    stored = {**at_zero, "subscriberScale": {"workload": "Deployment/asr", "desiredReplicas": 0}}
    assert same_status(stored, at_zero)
    assert "subscriberScale" not in {k for k, v in trigger_status(trigger_facts(), None, 1, NOW).items() if v}
