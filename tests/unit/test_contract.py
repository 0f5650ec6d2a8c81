"""Compiling Brokers and Triggers into the routing contract (one pure function)."""

from __future__ import annotations

from typing import Any

import pytest

from eventferry.apis.broker import Broker
from eventferry.apis.trigger import Trigger
from eventferry.contract.compile import compile_contract
from eventferry.contract.model import Contract
from eventferry.contract.resolve import Resolver

pytestmark = pytest.mark.unit

RESOLVER = Resolver(broker_url=lambda ns, name: f"http://ingress.system.svc.cluster.local/{ns}/{name}"
                    if name != "ghost" else None)


def broker(name: str = "default", namespace: str = "live", **spec: Any) -> Broker:
    annotations = spec.pop("annotations", {})
    return Broker.model_validate({"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker",
                                  "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                                               "annotations": annotations}, "spec": spec})


def trigger(name: str, subscriber: dict[str, Any], broker_name: str = "default", namespace: str = "live",
            **spec: Any) -> Trigger:
    return Trigger.model_validate({"apiVersion": "eventferry.dev/v1alpha1", "kind": "Trigger",
                                   "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
                                   "spec": {"broker": broker_name, "subscriber": subscriber, **spec}})


def test_destination_forms_resolve_as_knative() -> None:
    triggers = [
        trigger("uri", {"uri": "http://example.test/hook"}),
        trigger("service", {"ref": {"apiVersion": "v1", "kind": "Service", "name": "moderation"}}),
        trigger("other-ns", {"ref": {"apiVersion": "v1", "kind": "Service", "name": "asr", "namespace": "ai"}}),
        trigger("relative", {"ref": {"apiVersion": "v1", "kind": "Service", "name": "vision"}, "uri": "/frames"}),
        trigger("broker", {"ref": {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker", "name": "other"}}),
    ]
    compiled = compile_contract([broker(), broker("other")], triggers, RESOLVER, generation=3)
    assert compiled.problems == []
    uris = {t.name: t.subscriber for t in compiled.contract.brokers[0].triggers}
    assert uris == {
        "uri": "http://example.test/hook",
        "service": "http://moderation.live.svc.cluster.local",
        "other-ns": "http://asr.ai.svc.cluster.local",
        "relative": "http://vision.live.svc.cluster.local/frames",
        "broker": "http://ingress.system.svc.cluster.local/live/other",
    }
    assert compiled.contract.generation == 3


def test_trigger_of_a_missing_broker_is_left_out_with_a_reason() -> None:
    compiled = compile_contract([], [trigger("t", {"uri": "http://x.test"})], RESOLVER, generation=1)
    assert compiled.contract.brokers == []
    problem = compiled.problem("Trigger", "live", "t")
    assert problem is not None and problem.reason == "BrokerDoesNotExist"


def test_unresolvable_subscriber_is_reported() -> None:
    ghost = {"ref": {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker", "name": "ghost"}}
    weird = {"ref": {"apiVersion": "example.dev/v1", "kind": "Widget", "name": "w"}}
    compiled = compile_contract([broker()], [trigger("a", ghost), trigger("b", weird)], RESOLVER, generation=1)
    reasons = {p.name: p.reason for p in compiled.problems}
    assert reasons == {"a": "BrokerNotAddressable", "b": "UnsupportedReference"}
    assert compiled.contract.brokers[0].triggers == []


def test_invalid_cesql_is_refused_at_compile_time_with_its_position() -> None:
    bad = trigger("t", {"uri": "http://x.test"}, filters=[{"all": [{"cesql": "type = 'a' AND"}]}])
    compiled = compile_contract([broker()], [bad], RESOLVER, generation=1)
    problem = compiled.problem("Trigger", "live", "t")
    assert problem is not None and problem.reason == "InvalidFilter"
    assert "line 1, column" in problem.message


def test_delivery_precedence_and_defaults() -> None:
    dls = {"uri": "http://dls.test"}
    broker_delivery = {"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT1S", "deadLetterSink": dls}
    triggers = [
        trigger("inherits", {"uri": "http://x.test"}),
        trigger("own", {"uri": "http://x.test"}, delivery={"timeout": "PT2S", "backoffMax": "PT10S"}),
    ]
    compiled = compile_contract([broker(delivery=broker_delivery), broker("plain")],
                                [*triggers, trigger("default", {"uri": "http://x.test"}, broker_name="plain")],
                                RESOLVER, generation=1)
    by_name = {t.name: t.delivery for b in compiled.contract.brokers for t in b.triggers}
    assert (by_name["inherits"].retry, by_name["inherits"].backoff_policy, by_name["inherits"].backoff_delay,
            by_name["inherits"].dead_letter_sink) == (3, "linear", 1.0, "http://dls.test")
    # A Trigger's delivery fully overrides its Broker's: no retries and no dead letter inherited.
    assert (by_name["own"].retry, by_name["own"].dead_letter_sink, by_name["own"].timeout,
            by_name["own"].backoff_max) == (0, None, 2.0, 10.0)
    assert (by_name["default"].retry, by_name["default"].backoff_policy,
            by_name["default"].backoff_delay) == (10, "exponential", 0.2)


def test_kafka_broker_settings_from_its_config_map() -> None:
    kafka = broker("k", annotations={"eventferry.dev/broker.class": "Kafka"},
                   config={"apiVersion": "v1", "kind": "ConfigMap", "name": "kafka-config"})
    config = {("live", "kafka-config"): {"bootstrap.servers": "a:9092, b:9092", "default.topic.partitions": "6"}}
    compiled = compile_contract([kafka], [], RESOLVER, generation=1, config_maps=config)
    settings = compiled.contract.brokers[0].kafka
    assert settings is not None
    assert (settings.bootstrap_servers, settings.partitions, settings.topic) == (
        ["a:9092", "b:9092"], 6, "knative-broker-live-k")
    missing = compile_contract([kafka], [], RESOLVER, generation=1)
    problem = missing.problem("Broker", "live", "k")
    assert problem is not None and "does not exist" in problem.message


def test_unknown_broker_class_is_a_problem_not_a_crash() -> None:
    odd = broker("odd", annotations={"eventferry.dev/broker.class": "Pulsar"})
    compiled = compile_contract([odd], [trigger("t", {"uri": "http://x.test"}, broker_name="odd")], RESOLVER,
                                generation=1)
    assert compiled.problem("Broker", "live", "odd").reason == "UnknownBrokerClass"  # type: ignore[union-attr]
    assert compiled.problem("Trigger", "live", "t").reason == "BrokerDoesNotExist"  # type: ignore[union-attr]


def test_knative_manifest_ports_by_changing_the_api_version() -> None:
    knative = broker("kn", annotations={"eventing.knative.dev/broker.class": "MTChannelBasedBroker"})
    ordered = Trigger.model_validate({
        "apiVersion": "eventferry.dev/v1alpha1", "kind": "Trigger",
        "metadata": {"name": "o", "namespace": "live",
                     "annotations": {"kafka.eventing.knative.dev/delivery.order": "ordered"}},
        "spec": {"broker": "kn", "filter": {"attributes": {"type": "x"}},
                 "subscriber": {"ref": {"apiVersion": "v1", "kind": "Service", "name": "s"}}}})
    compiled = compile_contract([knative], [ordered], RESOLVER, generation=1)
    [contract_trigger] = compiled.contract.brokers[0].triggers
    assert compiled.contract.brokers[0].broker_class == "InMemory"
    assert contract_trigger.ordering == "ordered" and contract_trigger.attributes == {"type": "x"}


def test_contract_json_round_trip() -> None:
    compiled = compile_contract([broker()], [trigger("t", {"uri": "http://x.test"},
                                                     filters=[{"cesql": "a = 'b'"}])], RESOLVER, generation=7)
    text = compiled.contract.to_json()
    assert '"class": "InMemory"' in text and '"backoffDelay": 0.2' in text
    assert Contract.from_json(text) == compiled.contract
