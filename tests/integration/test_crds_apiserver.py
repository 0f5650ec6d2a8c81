"""The generated CRDs (and the broker-class policy) in a real kube-apiserver: what they accept,
what they refuse and with which message, scale and printer columns."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from eventferry.apis import KINDS
from eventferry.commands.crds import render_all
from tests.env import provision
from tests.env.servers import KubeAPI

pytestmark = pytest.mark.integration

API = "eventferry.dev/v1alpha1"
SINK = {"uri": "http://display.default.svc.cluster.local"}
PLURALS = ("brokers", "triggers", "kafkasources", "rocketmqsources")


def kubectl(kube: KubeAPI, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=str(kube.kubeconfig))
    return subprocess.run([provision.kubectl(), *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=60)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def kube(kube_api: KubeAPI) -> KubeAPI:
    ok(kubectl(kube_api, "apply", "-f", "-", stdin=render_all()))
    ok(kubectl(kube_api, "wait", "--for=condition=Established", "--timeout=60s",
               *(f"crd/{plural}.eventferry.dev" for plural in PLURALS)))
    return kube_api


@pytest.fixture
def ns(kube: KubeAPI) -> Iterator[str]:
    name = f"crds-{uuid.uuid4().hex[:8]}"
    ok(kubectl(kube, "create", "namespace", name))
    yield name
    ok(kubectl(kube, "delete", ",".join(PLURALS), "--all", "-n", name, "--wait=false"))
    # Without kube-controller-manager the namespace stays Terminating; its objects are gone already.
    kubectl(kube, "delete", "namespace", name, "--wait=false")


def manifest(kind: str, name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name, **metadata}, "spec": spec}


def broker(name: str = "default", **metadata: Any) -> dict[str, Any]:
    return manifest("Broker", name, {"delivery": {"retry": 3, "backoffDelay": "PT0.5S"}}, **metadata)


def trigger(name: str = "t", **spec: Any) -> dict[str, Any]:
    return manifest("Trigger", name, {"broker": "default", "subscriber": SINK, **spec})


def kafka_source(name: str = "frames", **spec: Any) -> dict[str, Any]:
    return manifest("KafkaSource", name, {"bootstrapServers": ["kafka:9092"], "topics": ["frames"], "sink": SINK,
                                          **spec})


def rocketmq_source(name: str = "comments", **spec: Any) -> dict[str, Any]:
    return manifest("RocketMQSource", name, {"endpoints": "proxy:8081", "topic": "comments",
                                             "consumerGroup": "moderation", "sink": SINK, **spec})


def create(kube: KubeAPI, ns: str, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl(kube, "create", "-n", ns, "-f", "-", stdin=json.dumps(obj))


def get(kube: KubeAPI, ns: str, resource: str) -> dict[str, Any]:
    stored: dict[str, Any] = json.loads(ok(kubectl(kube, "get", "-n", ns, resource, "-o", "json")))
    return stored


def patch(kube: KubeAPI, ns: str, resource: str, body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl(kube, "patch", "-n", ns, resource, "--type=merge", "-p", json.dumps(body))


def refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode != 0, f"the API server accepted what it should refuse: {result.stdout}"
    assert message in result.stderr, result.stderr


def test_valid_manifests_of_every_kind_are_stored_with_defaults_and_read_back_by_the_models(
        kube: KubeAPI, ns: str) -> None:
    filters = [{"all": [{"exact": {"type": "dev.live.comment"}},
                        {"not": {"any": [{"prefix": {"source": "/spam"}}, {"cesql": "lang = 'xx'"}]}}]}]
    objects = [
        broker(annotations={"eventing.knative.dev/broker.class": "Kafka"}),
        trigger(filter={"attributes": {"type": "dev.live.comment", "room": ""}}, filters=filters,
                subscriber={"ref": {"apiVersion": "v1", "kind": "Service", "name": "moderation"}, "uri": "/c"},
                delivery={"retry": 2, "timeout": "PT5S", "deadLetterSink": {"uri": "http://dls"}}),
        kafka_source(net={"sasl": {"enable": True,
                                   "user": {"secretKeyRef": {"name": "kafka", "key": "user"}},
                                   "password": {"secretKeyRef": {"name": "kafka", "key": "password"}}}},
                     ceOverrides={"extensions": {"pipeline": "inference"}}),
        rocketmq_source(accessKey={"secretKeyRef": {"name": "rmq", "key": "ak"}},
                        secretKey={"secretKeyRef": {"name": "rmq", "key": "sk"}}),
    ]
    for obj in objects:
        ok(create(kube, ns, obj))
        stored = get(kube, ns, f"{obj['kind'].lower()}/{obj['metadata']['name']}")
        model = KINDS[obj["kind"]].model_validate(stored)
        assert model.metadata.uid, "the API server assigns a uid"
        assert {k: v for k, v in stored["spec"].items() if k in obj["spec"]} == obj["spec"]

    source = get(kube, ns, "kafkasource/frames")["spec"]
    assert (source["consumers"], source["initialOffset"], source["ordering"]) == (1, "latest", "unordered")
    rocketmq = get(kube, ns, "rocketmqsource/comments")["spec"]
    assert (rocketmq["filterExpression"], rocketmq["filterType"], rocketmq["consumers"]) == ("*", "tag", 1)


def test_trigger_broker_is_immutable(kube: KubeAPI, ns: str) -> None:
    ok(create(kube, ns, trigger()))
    refused(patch(kube, ns, "trigger/t", {"spec": {"broker": "other"}}), "spec.broker is immutable")
    ok(patch(kube, ns, "trigger/t", {"spec": {"subscriber": {"uri": "http://elsewhere"}}}))


def test_source_consumer_group_is_immutable(kube: KubeAPI, ns: str) -> None:
    ok(create(kube, ns, kafka_source("with-group", consumerGroup="g1")))
    refused(patch(kube, ns, "kafkasource/with-group", {"spec": {"consumerGroup": "g2"}}),
            "spec.consumerGroup is immutable")
    refused(patch(kube, ns, "kafkasource/with-group", {"spec": {"consumerGroup": None}}),
            "spec.consumerGroup is immutable")
    ok(create(kube, ns, kafka_source("derived-group")))  # the group comes from the uid: setting one changes it
    refused(patch(kube, ns, "kafkasource/derived-group", {"spec": {"consumerGroup": "g3"}}),
            "spec.consumerGroup is immutable")
    ok(create(kube, ns, rocketmq_source()))
    refused(patch(kube, ns, "rocketmqsource/comments", {"spec": {"consumerGroup": "other"}}),
            "spec.consumerGroup is immutable")
    ok(patch(kube, ns, "rocketmqsource/comments", {"spec": {"topic": "other"}}))


def test_broker_class_is_immutable(kube: KubeAPI, ns: str) -> None:
    ok(create(kube, ns, broker()))
    # The same class spelled Knative's way is not a change.
    ok(patch(kube, ns, "broker/default",
             {"metadata": {"annotations": {"eventing.knative.dev/broker.class": "MTChannelBasedBroker"}}}))
    change = {"metadata": {"annotations": {"eventferry.dev/broker.class": "Kafka"}}}
    # The policy takes effect once the API server has loaded it, shortly after it was applied.
    deadline = time.monotonic() + 30
    result = patch(kube, ns, "broker/default", change)
    while result.returncode == 0 and time.monotonic() < deadline:
        ok(patch(kube, ns, "broker/default", {"metadata": {"annotations": {"eventferry.dev/broker.class": None}}}))
        time.sleep(0.5)
        result = patch(kube, ns, "broker/default", change)
    refused(result, "the broker class is immutable")
    assert "it was InMemory, the update makes it Kafka" in result.stderr
    ok(patch(kube, ns, "broker/default", {"metadata": {"labels": {"team": "live"}}}))


AUTOSCALING = "autoscaling.eventferry.dev/"


def created_once_policies_load(kube: KubeAPI, ns: str, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Creates ``obj``, which the policies should refuse; while the API server has not loaded them yet
    (shortly after they were applied) it is stored, so it is deleted and created again."""
    deadline = time.monotonic() + 30
    result = create(kube, ns, obj)
    while result.returncode == 0 and time.monotonic() < deadline:
        ok(kubectl(kube, "delete", "-n", ns, f"{obj['kind'].lower()}/{obj['metadata']['name']}"))
        time.sleep(0.5)
        result = create(kube, ns, obj)
    return result


@pytest.mark.parametrize(("annotations", "message"), [
    ({AUTOSCALING + "class": "hpa"},
     f"metadata.annotations[{AUTOSCALING}class] must be one of keda, builtin or disabled, got hpa"),
    ({AUTOSCALING + "class": "builtin", AUTOSCALING + "max-scale": "lots"},
     f"metadata.annotations[{AUTOSCALING}max-scale] must be a whole number from 1 to 1000000000, got lots"),
    ({"autoscaling.eventing.knative.dev/max-scale": "0"},  # Knative's prefix is read the same way
     f"metadata.annotations[{AUTOSCALING}max-scale] must be a whole number from 1 to 1000000000, got 0"),
    ({AUTOSCALING + "min-scale": "5", AUTOSCALING + "max-scale": "3"},
     f"metadata.annotations[{AUTOSCALING}min-scale] (5) must not exceed max-scale (3)"),
])
def test_bad_autoscaling_annotations_are_refused_with_the_annotation_named(
        kube: KubeAPI, ns: str, annotations: dict[str, str], message: str) -> None:
    for source in (kafka_source(), rocketmq_source()):
        source["metadata"]["annotations"] = annotations
        refused(created_once_policies_load(kube, ns, source), message)


def test_good_autoscaling_annotations_are_stored_and_a_bad_update_is_refused(kube: KubeAPI, ns: str) -> None:
    source = kafka_source()
    source["metadata"]["annotations"] = {AUTOSCALING + "class": "keda.autoscaling.knative.dev",
                                         AUTOSCALING + "max-scale": "8", AUTOSCALING + "cooldown-period": "0"}
    ok(create(kube, ns, source))
    bad = {"metadata": {"annotations": {AUTOSCALING + "lag-threshold": "0"}}}
    deadline = time.monotonic() + 30  # until the API server has loaded the policy
    result = patch(kube, ns, "kafkasource/frames", bad)
    while result.returncode == 0 and time.monotonic() < deadline:
        ok(patch(kube, ns, "kafkasource/frames", {"metadata": {"annotations": {AUTOSCALING + "lag-threshold": None}}}))
        time.sleep(0.5)
        result = patch(kube, ns, "kafkasource/frames", bad)
    refused(result, f"metadata.annotations[{AUTOSCALING}lag-threshold] must be a whole number from 1")


@pytest.mark.parametrize("filters", [
    [{"exact": {"type": "a"}, "prefix": {"source": "b"}}],
    [{"all": [{"any": [{"suffix": {"type": "a"}, "cesql": "true"}]}]}],
    [{}],
])
def test_a_filter_with_other_than_one_dialect_is_refused(kube: KubeAPI, ns: str,
                                                          filters: list[dict[str, Any]]) -> None:
    refused(create(kube, ns, trigger(filters=filters)), "a filter must set exactly one dialect")


def test_filter_attribute_names_are_checked(kube: KubeAPI, ns: str) -> None:
    refused(create(kube, ns, trigger(filter={"attributes": {"Bad-Key": "x"}})),
            "attribute names must start with a lower-case letter")
    refused(create(kube, ns, trigger("nested", filters=[{"not": {"exact": {"Bad-Key": "x"}}}])),
            "attribute names must start with a lower-case letter")


def test_a_destination_needs_a_ref_or_a_uri(kube: KubeAPI, ns: str) -> None:
    refused(create(kube, ns, trigger(subscriber={})), "a destination needs a ref or a uri")
    refused(create(kube, ns, kafka_source(sink={"CACerts": "pem"})), "a destination needs a ref or a uri")
    no_dead_letter = copy.deepcopy(broker())
    no_dead_letter["spec"]["delivery"]["deadLetterSink"] = {"audience": "x"}
    refused(create(kube, ns, no_dead_letter), "a destination needs a ref or a uri")


def test_schema_refuses_invalid_values(kube: KubeAPI, ns: str) -> None:
    refused(create(kube, ns, kafka_source(consumers=0)), "spec.consumers")
    refused(create(kube, ns, rocketmq_source(ordering="fifo")), "spec.ordering")
    refused(create(kube, ns, trigger(delivery={"backoffDelay": "1s"})), "spec.delivery.backoffDelay")
    refused(create(kube, ns, kafka_source(ceOverrides={"extensions": {"type": "x"}})),
            "not a core CloudEvents attribute")


def test_scale_sets_consumers(kube: KubeAPI, ns: str) -> None:
    ok(create(kube, ns, kafka_source("x")))
    ok(kubectl(kube, "scale", "-n", ns, "kafkasource/x", "--replicas=3"))
    assert get(kube, ns, "kafkasource/x")["spec"]["consumers"] == 3
    ok(create(kube, ns, rocketmq_source("y")))
    ok(kubectl(kube, "scale", "-n", ns, "rocketmqsource/y", "--replicas=2"))
    assert get(kube, ns, "rocketmqsource/y")["spec"]["consumers"] == 2


def test_printer_columns(kube: KubeAPI, ns: str) -> None:
    ok(create(kube, ns, broker()))
    url = f"http://eventferry-broker-ingress.eventferry.svc.cluster.local/{ns}/default"
    status = {"status": {"address": {"url": url}, "conditions": [
        {"type": "Ready", "status": "False", "reason": "IngressNotReady", "lastTransitionTime": "2025-01-01T00:00:00Z"},
    ]}}
    ok(kubectl(kube, "patch", "-n", ns, "broker/default", "--subresource=status", "--type=merge",
               "-p", json.dumps(status)))
    header, row = ok(kubectl(kube, "get", "brokers", "-n", ns)).splitlines()
    assert header.split() == ["NAME", "URL", "AGE", "READY", "REASON"]
    assert row.split()[:2] == ["default", url] and row.split()[-2:] == ["False", "IngressNotReady"]

    ok(create(kube, ns, trigger()))
    header = ok(kubectl(kube, "get", "triggers", "-n", ns)).splitlines()[0]
    assert header.split() == ["NAME", "BROKER", "SUBSCRIBER_URI", "AGE", "READY", "REASON"]
    ok(create(kube, ns, kafka_source()))
    header = ok(kubectl(kube, "get", "kafkasources", "-n", ns)).splitlines()[0]
    assert header.split() == ["NAME", "SINK", "AGE", "READY", "REASON"]
    # Short names and the eventing category reach the new kinds too.
    assert "frames" in ok(kubectl(kube, "get", "efkafkasource", "-n", ns))
    assert "kafkasource.eventferry.dev/frames" in ok(kubectl(kube, "get", "eventing", "-n", ns, "-o", "name"))


@pytest.mark.parametrize(("pacing", "message"), [
    ({"maxConcurrency": 0}, "spec.pacing.maxConcurrency"),
    # rate 0 passes this API server's minimum check (an integer 0 against a number minimum); the
    # operator refuses it when it compiles the contract (tests/unit/test_pacing.py) and reports it.
    ({"rate": -1}, "spec.pacing.rate"),
    ({"rate": 0.0001}, "spec.pacing.rate"),
    ({"rate": 5, "burst": 0}, "spec.pacing.burst"),
    ({"burst": 5}, "pacing.burst needs pacing.rate"),
    ({}, "pacing must set maxConcurrency, rate, or both"),
])
def test_bad_pacing_is_refused_by_the_api_server_with_the_field_named(kube: KubeAPI, ns: str,
                                                                      pacing: dict[str, Any], message: str) -> None:
    refused(create(kube, ns, trigger(pacing=pacing)), message)


def test_pacing_is_stored(kube: KubeAPI, ns: str) -> None:
    ok(create(kube, ns, trigger("paced", pacing={"maxConcurrency": 4, "rate": 2.5, "burst": 5})))
