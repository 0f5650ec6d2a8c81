"""The API models: defaults, validation errors that name the field, round trips of whole manifests."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from eventferry.apis import (
    KINDS,
    Broker,
    DeliverySpec,
    KafkaSource,
    RocketMQSource,
    SubscriptionsAPIFilter,
    Trigger,
    default_delivery,
    parse_duration,
    split_endpoints,
)

pytestmark = pytest.mark.unit

API = "eventferry.dev/v1alpha1"


def errors(model: type[Any], manifest: dict[str, Any]) -> dict[str, str]:
    """Field path (dotted, aliases) -> message of every error pydantic reports."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(manifest)
    return {".".join(str(part) for part in e["loc"]): e["msg"] for e in info.value.errors()}


def knative(manifest: dict[str, Any]) -> dict[str, Any]:
    """A Knative manifest ported the documented way: only apiVersion changes."""
    ported = copy.deepcopy(manifest)
    ported["apiVersion"] = API
    return ported


# --- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("PT0.2S", 0.2), ("PT1M", 60), ("P1D", 86400), ("PT0S", 0), ("P1DT2H30M", 95400), ("P2W", 1209600),
    ("PT1,5S", 1.5), ("PT10H", 36000),
])
def test_parse_duration_reads_iso8601(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "why"), [
    ("1s", "must start with 'P'"), ("-PT1S", "negative"), ("P1Y", "years and months"), ("P1M", "years and months"),
    ("P", "no component"), ("PT", "no component"), ("P1DT", "'T' must be followed"), ("PT1S1M", "in that order"),
    ("", "must start with 'P'"),
])
def test_parse_duration_says_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_duration(text)


# --- DeliverySpec --------------------------------------------------------------------------------


def test_delivery_validation_names_each_field() -> None:
    found = errors(DeliverySpec, {"retry": -1, "backoffPolicy": "random", "backoffDelay": "1s", "timeout": "PT0S",
                                  "retryAfterMax": "soon", "backoffMax": "P1Y", "format": "xml",
                                  "deadLetterSink": {}})
    assert set(found) == {"retry", "backoffPolicy", "backoffDelay", "timeout", "retryAfterMax", "backoffMax",
                          "format", "deadLetterSink"}
    assert "greater than zero" in found["timeout"]
    assert "ref or a uri" in found["deadLetterSink"]


def test_default_delivery_is_the_design_default() -> None:
    delivery = default_delivery()
    assert (delivery.retry, delivery.backoff_policy, parse_duration(delivery.backoff_delay or "")) == (
        10, "exponential", 0.2)


# --- Broker --------------------------------------------------------------------------------------

KNATIVE_BROKER: dict[str, Any] = {
    "apiVersion": "eventing.knative.dev/v1",
    "kind": "Broker",
    "metadata": {"name": "default", "namespace": "live", "annotations": {"eventing.knative.dev/broker.class": "Kafka"}},
    "spec": {
        "config": {"apiVersion": "v1", "kind": "ConfigMap", "name": "kafka-broker-config",
                   "namespace": "knative-eventing"},
        "delivery": {
            "deadLetterSink": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "dlq"}},
            "retry": 5, "backoffPolicy": "exponential", "backoffDelay": "PT0.5S",
        },
    },
}


def test_knative_broker_round_trips_with_only_the_api_version_changed() -> None:
    manifest = knative(KNATIVE_BROKER)
    broker = Broker.model_validate(manifest)
    assert broker.to_manifest() == manifest
    assert broker.model_dump(by_alias=True, exclude_none=True) == manifest
    assert broker.broker_class == "Kafka"
    assert broker.spec.delivery is not None and broker.spec.delivery.retry == 5


@pytest.mark.parametrize(("annotations", "expected"), [
    (None, "InMemory"),
    ({"eventferry.dev/broker.class": "Kafka"}, "Kafka"),
    ({"eventferry.dev/broker.class": "InMemory", "eventing.knative.dev/broker.class": "Kafka"}, "InMemory"),
    ({"eventing.knative.dev/broker.class": "MTChannelBasedBroker"}, "InMemory"),
    ({"eventing.knative.dev/broker.class": "Kafka"}, "Kafka"),
    ({"eventferry.dev/broker.class": "Redis"}, "Redis"),  # unknown: exposed for the operator to report
    ({"eventing.knative.dev/broker.class": "KafkaNamespaced"}, "KafkaNamespaced"),
])
def test_broker_class_comes_from_our_annotation_then_knatives(annotations: dict[str, str] | None,
                                                               expected: str) -> None:
    broker = Broker.model_validate({"apiVersion": API, "kind": "Broker",
                                    "metadata": {"name": "b", "annotations": annotations}})
    assert broker.broker_class == expected


def test_broker_spec_defaults_to_empty_and_kind_is_checked() -> None:
    broker = Broker(metadata={"name": "b"})
    assert broker.to_manifest() == {"apiVersion": API, "kind": "Broker", "metadata": {"name": "b"}, "spec": {}}
    found = errors(Broker, {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": {"name": "b"}})
    assert set(found) == {"apiVersion", "kind"}


def test_status_and_metadata_keep_fields_the_model_does_not_name() -> None:
    manifest = knative(KNATIVE_BROKER)
    manifest["metadata"].update({"uid": "u-1", "generation": 3, "managedFields": [{"manager": "kubectl"}]})
    manifest["status"] = {
        "observedGeneration": 3,
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"},
                       {"type": "IngressReady", "status": "False", "reason": "NoEndpoints", "severity": "Warning"}],
        "address": {"name": "http", "url": "http://ingress.eventferry.svc.cluster.local/live/default"},
        "futureField": [{"name": "p"}],
    }
    broker = Broker.model_validate(manifest)
    assert broker.to_manifest() == manifest
    assert broker.status is not None and broker.status.is_ready
    ingress = broker.status.get_condition("IngressReady")
    assert ingress is not None and ingress.reason == "NoEndpoints"
    assert broker.status.get_condition("Addressable") is None


def test_condition_status_is_true_false_or_unknown() -> None:
    found = errors(Broker, {"apiVersion": API, "kind": "Broker", "metadata": {"name": "b"},
                            "status": {"conditions": [{"type": "Ready", "status": "yes"}]}})
    assert list(found) == ["status.conditions.0.status"]


# --- Trigger -------------------------------------------------------------------------------------

KNATIVE_TRIGGER: dict[str, Any] = {
    "apiVersion": "eventing.knative.dev/v1",
    "kind": "Trigger",
    "metadata": {"name": "moderation", "namespace": "live",
                 "annotations": {"kafka.eventing.knative.dev/delivery.order": "ordered"}},
    "spec": {
        "broker": "default",
        "filter": {"attributes": {"type": "dev.live.comment", "room": ""}},
        "filters": [
            {"exact": {"type": "dev.live.comment"}},
            {"any": [{"prefix": {"source": "/rooms/"}}, {"suffix": {"subject": ".vip"}}]},
            {"not": {"cesql": "lang = 'xx'"}},
            {"all": [{"exact": {"room": "1"}}, {"not": {"any": [{"exact": {"a": "b"}}]}}]},
        ],
        "subscriber": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "moderation"},
                       "uri": "/comments"},
        "delivery": {"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT1S", "timeout": "PT5S",
                     "retryAfterMax": "PT1M", "format": "binary",
                     "deadLetterSink": {"uri": "http://dead-letters.live.svc.cluster.local"}},
    },
}


def test_knative_trigger_round_trips_with_only_the_api_version_changed() -> None:
    manifest = knative(KNATIVE_TRIGGER)
    trigger = Trigger.model_validate(manifest)
    assert trigger.to_manifest() == manifest
    assert trigger.delivery_order == "ordered"
    filters = trigger.spec.filters or []
    assert [f.dialect for f in filters] == ["exact", "any", "not", "all"]
    assert filters[3].all_ is not None and filters[3].all_[1].not_ is not None


@pytest.mark.parametrize(("annotations", "expected"), [
    (None, "unordered"),
    ({"eventferry.dev/delivery.order": "ordered"}, "ordered"),
    ({"eventferry.dev/delivery.order": "unordered", "kafka.eventing.knative.dev/delivery.order": "ordered"},
     "unordered"),
    ({"kafka.eventing.knative.dev/delivery.order": "ordered"}, "ordered"),
])
def test_delivery_order_comes_from_our_annotation_then_knatives(annotations: dict[str, str] | None,
                                                                expected: str) -> None:
    manifest = knative(KNATIVE_TRIGGER)
    manifest["metadata"]["annotations"] = annotations
    assert Trigger.model_validate(manifest).delivery_order == expected


def test_unknown_delivery_order_is_refused() -> None:
    manifest = knative(KNATIVE_TRIGGER)
    manifest["metadata"]["annotations"] = {"eventferry.dev/delivery.order": "fifo"}
    (message,) = errors(Trigger, manifest).values()
    assert "eventferry.dev/delivery.order" in message and "'fifo'" in message


def test_trigger_requires_broker_and_subscriber() -> None:
    found = errors(Trigger, {"apiVersion": API, "kind": "Trigger", "metadata": {"name": "t"}, "spec": {}})
    assert set(found) == {"spec.broker", "spec.subscriber"}
    found = errors(Trigger, {"apiVersion": API, "kind": "Trigger", "metadata": {"name": "t"},
                             "spec": {"broker": "", "subscriber": {"uri": "http://s"}}})
    assert set(found) == {"spec.broker"}


@pytest.mark.parametrize("key", ["Bad-Key", "Type", "1type", "my_ext", ""])
def test_filter_attribute_names_are_lower_case_alphanumeric(key: str) -> None:
    manifest = knative(KNATIVE_TRIGGER)
    manifest["spec"]["filter"] = {"attributes": {key: "x"}}
    found = errors(Trigger, manifest)
    assert list(found) == ["spec.filter.attributes"]
    assert repr(key) in found["spec.filter.attributes"]


@pytest.mark.parametrize(("bad_filter", "path", "text"), [
    ({"exact": {"type": "a"}, "prefix": {"type": "b"}}, "spec.filters.0", "got exact, prefix"),
    ({}, "spec.filters.0", "got none"),
    ({"all": [{"any": [{"not": {"cesql": "true", "exact": {"a": "b"}}}]}]}, "spec.filters.0.all.0.any.0.not",
     "got exact, cesql"),
    ({"exact": {"type": "a", "source": "b"}}, "spec.filters.0.exact", "exactly one attribute"),
    ({"suffix": {}}, "spec.filters.0.suffix", "exactly one attribute"),
    ({"prefix": {"Bad-Key": "x"}}, "spec.filters.0.prefix", "'Bad-Key'"),
    ({"all": []}, "spec.filters.0.all", "at least 1"),
    ({"cesql": ""}, "spec.filters.0.cesql", "at least 1"),
    ({"exact": {"type": "a"}, "dialect": "x"}, "spec.filters.0.dialect", "Extra inputs"),
])
def test_each_subscriptions_api_filter_has_exactly_one_valid_dialect(bad_filter: dict[str, Any], path: str,
                                                                     text: str) -> None:
    manifest = knative(KNATIVE_TRIGGER)
    manifest["spec"]["filters"] = [bad_filter]
    found = errors(Trigger, manifest)
    assert path in found, found
    assert text in found[path]


def test_filters_are_bounded_in_length() -> None:
    too_many = [{"exact": {"type": str(i)}} for i in range(33)]
    assert "spec.filters" in errors(Trigger, {**knative(KNATIVE_TRIGGER),
                                             "spec": {**KNATIVE_TRIGGER["spec"], "filters": too_many}})
    assert SubscriptionsAPIFilter.model_validate({"any": too_many[:32]}).dialect == "any"


@pytest.mark.parametrize(("subscriber", "text"), [
    ({}, "got neither"),
    ({"uri": "/relative"}, "must be an absolute URL"),
    ({"uri": "http://"}, "must be an absolute URL"),
    ({"ref": {"apiVersion": "v1", "kind": "Service", "name": "s"}, "uri": "http://elsewhere/x"}, "must be relative"),
])
def test_destination_needs_ref_or_absolute_uri(subscriber: dict[str, Any], text: str) -> None:
    manifest = knative(KNATIVE_TRIGGER)
    manifest["spec"]["subscriber"] = subscriber
    found = errors(Trigger, manifest)
    assert text in found["spec.subscriber"]


def test_kreference_requires_api_version_kind_and_name() -> None:
    manifest = knative(KNATIVE_TRIGGER)
    manifest["spec"]["subscriber"] = {"ref": {"name": "s"}}
    assert set(errors(Trigger, manifest)) == {"spec.subscriber.ref.apiVersion", "spec.subscriber.ref.kind"}


def test_unknown_spec_fields_are_refused_like_kubectl_strict_validation() -> None:
    manifest = knative(KNATIVE_TRIGGER)
    manifest["spec"]["subscribr"] = {"uri": "http://typo"}
    assert list(errors(Trigger, manifest)) == ["spec.subscribr"]


def test_models_are_built_with_python_names() -> None:
    trigger = Trigger(metadata={"name": "t"},
                      spec={"broker": "b", "subscriber": {"uri": "http://s"},
                            "filters": [SubscriptionsAPIFilter(not_=SubscriptionsAPIFilter(cesql="true"))]})
    assert trigger.to_manifest()["spec"]["filters"] == [{"not": {"cesql": "true"}}]


# --- KafkaSource ---------------------------------------------------------------------------------

KNATIVE_KAFKA_SOURCE: dict[str, Any] = {
    "apiVersion": "sources.knative.dev/v1beta1",
    "kind": "KafkaSource",
    "metadata": {"name": "frames", "namespace": "live", "uid": "0b9c6c42-6d1f-4b4e-9a55-2a4d1a9f1e2b",
                 "labels": {"kafkasources.sources.knative.dev/key-type": "int"}},
    "spec": {
        "consumerGroup": "frames-inference",
        "bootstrapServers": ["my-cluster-kafka-bootstrap.kafka:9092"],
        "topics": ["video-frames"],
        "initialOffset": "earliest",
        "consumers": 3,
        "ordering": "ordered",
        "net": {
            "sasl": {"enable": True,
                     "user": {"secretKeyRef": {"name": "kafka-secret", "key": "user"}},
                     "password": {"secretKeyRef": {"name": "kafka-secret", "key": "password"}},
                     "type": {"secretKeyRef": {"name": "kafka-secret", "key": "saslType"}}},
            "tls": {"enable": True, "caCert": {"secretKeyRef": {"name": "kafka-secret", "key": "ca.crt"}}},
        },
        "delivery": {"retry": 2, "deadLetterSink": {"uri": "http://dls.live.svc.cluster.local"}},
        "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}},
        "ceOverrides": {"extensions": {"pipeline": "inference"}},
    },
}


def test_knative_kafka_source_round_trips_with_only_the_api_version_changed() -> None:
    manifest = knative(KNATIVE_KAFKA_SOURCE)
    source = KafkaSource.model_validate(manifest)
    assert source.to_manifest() == manifest
    assert source.key_type == "int"
    assert source.effective_consumer_group() == "frames-inference"


def test_kafka_source_defaults() -> None:
    source = KafkaSource.model_validate({
        "apiVersion": API, "kind": "KafkaSource", "metadata": {"name": "k", "uid": "1234"},
        "spec": {"bootstrapServers": ["k:9092"], "topics": ["t"], "sink": {"uri": "http://s"}},
    })
    spec = source.spec
    assert (spec.consumers, spec.initial_offset, spec.ordering, spec.consumer_group) == (1, "latest", "unordered", None)
    assert source.effective_consumer_group() == "knative-kafka-source-1234"
    assert source.key_type == "string"
    assert source.to_manifest()["spec"] == {"bootstrapServers": ["k:9092"], "topics": ["t"], "initialOffset": "latest",
                                            "consumers": 1, "ordering": "unordered", "sink": {"uri": "http://s"}}


def test_kafka_source_without_group_or_uid_cannot_name_its_group() -> None:
    manifest = knative(KNATIVE_KAFKA_SOURCE)
    del manifest["spec"]["consumerGroup"], manifest["metadata"]["uid"]
    with pytest.raises(ValueError, match=r"metadata\.uid"):
        KafkaSource.model_validate(manifest).effective_consumer_group()


@pytest.mark.parametrize(("labels", "expected"), [
    ({"eventferry.dev/key-type": "byte-array"}, "byte-array"),
    ({"eventferry.dev/key-type": "float", "kafkasources.sources.knative.dev/key-type": "int"}, "float"),
    ({"kafkasources.sources.knative.dev/key-type": "int"}, "int"),
    (None, "string"),
])
def test_key_type_comes_from_our_label_then_knatives(labels: dict[str, str] | None, expected: str) -> None:
    manifest = knative(KNATIVE_KAFKA_SOURCE)
    manifest["metadata"]["labels"] = labels
    assert KafkaSource.model_validate(manifest).key_type == expected


def test_kafka_source_validation_names_each_field() -> None:
    manifest = knative(KNATIVE_KAFKA_SOURCE)
    manifest["metadata"]["labels"] = {"eventferry.dev/key-type": "uuid"}
    manifest["spec"].update({"bootstrapServers": [], "topics": [""], "initialOffset": "newest", "consumers": 0,
                             "ordering": "fifo", "consumerGroup": "", "sink": {},
                             "ceOverrides": {"extensions": {"type": "x"}}})
    manifest["spec"]["net"]["sasl"] = {"enable": True, "user": {"secretKeyRef": {"name": "s", "key": "u"}}}
    manifest["spec"]["net"]["tls"] = {"enable": True, "cert": {"secretKeyRef": {"name": "s", "key": "c"}}}
    found = errors(KafkaSource, manifest)
    assert set(found) == {"spec.bootstrapServers", "spec.topics.0", "spec.initialOffset", "spec.consumers",
                          "spec.ordering", "spec.consumerGroup", "spec.sink", "spec.ceOverrides.extensions",
                          "spec.net.sasl", "spec.net.tls"}
    assert "core CloudEvents attribute" in found["spec.ceOverrides.extensions"]
    assert "sasl.password" in found["spec.net.sasl"]
    assert "tls.key" in found["spec.net.tls"]
    # The label is checked once the spec is valid.
    manifest = knative(KNATIVE_KAFKA_SOURCE)
    manifest["metadata"]["labels"] = {"eventferry.dev/key-type": "uuid"}
    assert "eventferry.dev/key-type" in next(iter(errors(KafkaSource, manifest).values()))


@pytest.mark.parametrize("name", ["Upper", "with-dash", "id", "specversion", ""])
def test_ce_override_names_are_extension_names(name: str) -> None:
    manifest = knative(KNATIVE_KAFKA_SOURCE)
    manifest["spec"]["ceOverrides"] = {"extensions": {name: "x"}}
    assert list(errors(KafkaSource, manifest)) == ["spec.ceOverrides.extensions"]


# --- RocketMQSource ------------------------------------------------------------------------------

ROCKETMQ_SOURCE: dict[str, Any] = {
    "apiVersion": API,
    "kind": "RocketMQSource",
    "metadata": {"name": "comments", "namespace": "live"},
    "spec": {
        "endpoints": "rmq-proxy-0.rocketmq:8081;rmq-proxy-1.rocketmq:8081",
        "topic": "live-comments",
        "consumerGroup": "comments-moderation",
        "filterExpression": "comment || gift",
        "filterType": "tag",
        "namespace": "prod",
        "accessKey": {"secretKeyRef": {"name": "rocketmq", "key": "accessKey"}},
        "secretKey": {"secretKeyRef": {"name": "rocketmq", "key": "secretKey"}},
        "consumers": 2,
        "ordering": "ordered",
        "delivery": {"retry": 5, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S", "backoffMax": "PT10S"},
        "sink": {"ref": {"apiVersion": API, "kind": "Broker", "name": "default"}},
        "ceOverrides": {"extensions": {"app": "live"}},
    },
}


def test_rocketmq_source_round_trips() -> None:
    source = RocketMQSource.model_validate(ROCKETMQ_SOURCE)
    assert source.to_manifest() == ROCKETMQ_SOURCE
    assert split_endpoints(source.spec.endpoints) == ["rmq-proxy-0.rocketmq:8081", "rmq-proxy-1.rocketmq:8081"]


def test_rocketmq_source_defaults() -> None:
    source = RocketMQSource.model_validate({
        "apiVersion": API, "kind": "RocketMQSource", "metadata": {"name": "r"},
        "spec": {"endpoints": "proxy:8081", "topic": "t", "consumerGroup": "g", "sink": {"uri": "http://s"}},
    })
    spec = source.spec
    assert (spec.filter_expression, spec.filter_type, spec.consumers, spec.ordering) == ("*", "tag", 1, "unordered")
    assert spec.namespace is None and spec.access_key is None


@pytest.mark.parametrize("endpoints", ["proxy", "proxy:port", "proxy:8081;", ":8081", "proxy:70000"])
def test_rocketmq_endpoints_are_host_port_pairs(endpoints: str) -> None:
    manifest = copy.deepcopy(ROCKETMQ_SOURCE)
    manifest["spec"]["endpoints"] = endpoints
    found = errors(RocketMQSource, manifest)
    assert list(found) == ["spec.endpoints"]
    assert "host:port" in found["spec.endpoints"]


def test_rocketmq_source_validation_names_each_field() -> None:
    manifest = copy.deepcopy(ROCKETMQ_SOURCE)
    del manifest["spec"]["consumerGroup"], manifest["spec"]["topic"]
    manifest["spec"].update({"filterType": "regex", "consumers": 0})
    assert set(errors(RocketMQSource, manifest)) == {"spec.consumerGroup", "spec.topic", "spec.filterType",
                                                     "spec.consumers"}
    manifest = copy.deepcopy(ROCKETMQ_SOURCE)
    del manifest["spec"]["secretKey"]
    assert "accessKey and secretKey" in errors(RocketMQSource, manifest)["spec"]


# --- the package ---------------------------------------------------------------------------------


def test_kinds_maps_every_kind_to_its_model() -> None:
    for manifest in (knative(KNATIVE_BROKER), knative(KNATIVE_TRIGGER), knative(KNATIVE_KAFKA_SOURCE),
                     ROCKETMQ_SOURCE):
        assert KINDS[manifest["kind"]].model_validate(manifest).to_manifest() == manifest


def test_apis_imports_nothing_else_of_the_project() -> None:
    import eventferry.apis

    package = Path(eventferry.apis.__file__).parent
    for module in package.glob("*.py"):
        imports = re.findall(r"^\s*(?:from|import)\s+(eventferry\S*)", module.read_text(), re.MULTILINE)
        assert all(name.startswith("eventferry.apis") for name in imports), (module.name, imports)
