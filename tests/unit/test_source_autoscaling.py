"""Source autoscaling without a cluster: the annotations, KEDA's objects, the built-in decision, the status."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from eventferry.apis import KafkaSource, RocketMQSource
from eventferry.apis.autoscaling import BUILTIN, DISABLED, KEDA, SourceScaling, scaling_of
from eventferry.resources.adapter import AdapterSettings, adapter_deployment, autoscaled
from eventferry.resources.conditions import unknown
from eventferry.resources.scaling import (
    Lag,
    Recommendations,
    decide,
    scaled_object,
    trigger_authentication,
    wanted_replicas,
)
from eventferry.resources.status import Resolution, ScaleReport, SourceFacts, StatusProblem, source_status

pytestmark = pytest.mark.unit

UID = "0b5e6a6c-1d2e-4f3a-9b8c-7d6e5f4a3b2c"
P = "autoscaling.eventferry.dev/"


def kafka_source(annotations: dict[str, str] | None = None, **spec: Any) -> KafkaSource:
    return KafkaSource.model_validate({
        "apiVersion": "eventferry.dev/v1alpha1", "kind": "KafkaSource",
        "metadata": {"name": "frames", "namespace": "live", "uid": UID, "annotations": annotations or {}},
        "spec": {"bootstrapServers": ["kafka-0:9092", "kafka-1:9092"], "topics": ["frames", "thumbs.v2"],
                 "consumerGroup": "frames-group", "initialOffset": "earliest", "consumers": 2,
                 "sink": {"uri": "http://broker/live/default"}, **spec},
    })


# --- annotations ---------------------------------------------------------------------------------------------

def test_defaults_are_knatives_and_autoscaling_is_off_without_a_class() -> None:
    scaling = scaling_of({})
    assert scaling == SourceScaling(DISABLED, 0, 50, 100, 0, 10, 30)
    assert not scaling.enabled


def test_knatives_prefix_and_class_value_port_and_ours_win() -> None:
    scaling = scaling_of({"autoscaling.eventing.knative.dev/class": "keda.autoscaling.knative.dev",
                          "autoscaling.eventing.knative.dev/max-scale": "7", P + "max-scale": "9",
                          P + "lag-threshold": "20", P + "cooldown-period": "0"})
    assert (scaling.scaling_class, scaling.max_scale, scaling.lag_threshold, scaling.cooldown_period) == \
        (KEDA, 9, 20, 0)


@pytest.mark.parametrize(("name", "value", "said"), [
    ("class", "hpa", "must be one of keda, builtin or disabled"),
    ("max-scale", "0", "from 1 to"),
    ("min-scale", "-1", "from 0 to"),
    ("lag-threshold", "ten", "whole number"),
    ("polling-interval", "0", "from 1 to"),
    ("cooldown-period", "1.5", "whole number"),
])
def test_a_bad_annotation_is_refused_with_its_name(name: str, value: str, said: str) -> None:
    with pytest.raises(ValidationError) as caught:
        kafka_source({P + "class": "builtin", P + name: value})
    assert f"metadata.annotations[{P}{name}]" in str(caught.value)
    assert said in str(caught.value)


def test_min_scale_above_max_scale_is_refused() -> None:
    with pytest.raises(ValueError, match=r"min-scale\] \(5\) must not exceed max-scale \(3\)"):
        scaling_of({P + "min-scale": "5", P + "max-scale": "3"})


# --- the Deployment ------------------------------------------------------------------------------------------

def test_an_autoscaled_kafka_sources_deployment_leaves_replicas_to_the_autoscaler() -> None:
    settings = AdapterSettings(image="eventferry:test")
    plain = adapter_deployment(kafka_source(), sink_uri="http://b/", delivery=None, settings=settings)
    scaled = adapter_deployment(kafka_source({P + "class": "builtin"}), sink_uri="http://b/", delivery=None,
                                settings=settings)
    assert plain["spec"]["replicas"] == 2
    assert "replicas" not in scaled["spec"]
    rocketmq = RocketMQSource.model_validate({
        "apiVersion": "eventferry.dev/v1alpha1", "kind": "RocketMQSource",
        "metadata": {"name": "c", "namespace": "live", "uid": UID, "annotations": {P + "class": "keda"}},
        "spec": {"endpoints": "proxy:8081", "topic": "t", "consumerGroup": "g", "consumers": 3,
                 "sink": {"uri": "http://b/"}}})
    assert not autoscaled(rocketmq)  # without name servers its backlog cannot be read: consumers apply
    assert adapter_deployment(rocketmq, sink_uri="http://b/", delivery=None, settings=settings)["spec"]["replicas"] == 3
    builtin = rocketmq.model_copy(update={"metadata": rocketmq.metadata.model_copy(
        update={"annotations": {P + "class": "builtin"}})})
    assert not autoscaled(builtin)
    with_name_servers = builtin.model_copy(update={"spec": builtin.spec.model_copy(
        update={"name_servers": "namesrv:9876"})})
    assert autoscaled(with_name_servers)
    assert "replicas" not in adapter_deployment(with_name_servers, sink_uri="http://b/", delivery=None,
                                                settings=settings)["spec"]


# --- KEDA ------------------------------------------------------------------------------------------------------

def test_scaled_object_targets_the_adapter_deployment_with_one_kafka_trigger_per_topic() -> None:
    source = kafka_source({P + "class": "keda", P + "min-scale": "1", P + "max-scale": "6",
                           P + "lag-threshold": "40", P + "activation-lag-threshold": "5",
                           P + "polling-interval": "3", P + "cooldown-period": "60"})
    obj = scaled_object(source, source.scaling)
    assert obj["apiVersion"] == "keda.sh/v1alpha1"
    assert obj["metadata"]["name"] == "kafkasource-frames"
    assert obj["metadata"]["ownerReferences"][0]["uid"] == UID  # deleted with the source
    spec = obj["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "kafkasource-frames"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["pollingInterval"], spec["cooldownPeriod"]) == \
        (1, 6, 3, 60)
    assert [t["metadata"]["topic"] for t in spec["triggers"]] == ["frames", "thumbs.v2"]
    assert [t["name"] for t in spec["triggers"]] == ["topic-frames", "topic-thumbs-v2"]
    first = spec["triggers"][0]
    assert first["type"] == "kafka"
    assert first["metadata"] | {"topic": "x"} == {
        "bootstrapServers": "kafka-0:9092,kafka-1:9092", "consumerGroup": "frames-group", "lagThreshold": "40",
        "activationLagThreshold": "5", "offsetResetPolicy": "earliest", "allowIdleConsumers": "false", "topic": "x"}
    assert "authenticationRef" not in first
    assert trigger_authentication(source) is None


def test_sasl_and_tls_reach_keda_as_references_to_the_sources_secret_keys() -> None:
    def ref(name: str, key: str) -> dict[str, Any]:
        return {"secretKeyRef": {"name": name, "key": key}}

    source = kafka_source({P + "class": "keda"}, net={
        "sasl": {"enable": True, "user": ref("kafka-auth", "user"), "password": ref("kafka-auth", "password"),
                 "type": ref("kafka-auth", "mechanism")},
        "tls": {"enable": True, "caCert": ref("kafka-ca", "ca.crt")}})
    auth = trigger_authentication(source)
    assert auth is not None
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "username", "name": "kafka-auth", "key": "user"},
        {"parameter": "password", "name": "kafka-auth", "key": "password"},
        {"parameter": "ca", "name": "kafka-ca", "key": "ca.crt"}]
    trigger = scaled_object(source, source.scaling, "SCRAM-SHA-512")["spec"]["triggers"][0]
    assert trigger["metadata"]["sasl"] == "scram_sha512"  # KEDA's spelling of the mechanism
    assert trigger["metadata"]["tls"] == "enable"
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert "s3cret" not in str(auth) and "password'" not in str(trigger["metadata"])


# --- the built-in decision -------------------------------------------------------------------------------------

SCALING = SourceScaling(BUILTIN, min_scale=0, max_scale=5, lag_threshold=100, activation_lag_threshold=0,
                        polling_interval=1, cooldown_period=30)


@pytest.mark.parametrize(("lag", "partitions", "wanted", "why"), [
    (0, 6, 0, "not above the activation threshold 0: min-scale 0"),
    (1, 6, 1, "lag 1 at 100 per replica: 1"),
    (250, 6, 3, "lag 250 at 100 per replica: 3"),
    (10_000, 6, 5, "capped at 5 by max-scale"),
    (10_000, 2, 2, "capped at 2 by 2 partition(s)"),
])
def test_wanted_replicas_follow_kedas_rules(lag: int, partitions: int, wanted: int, why: str) -> None:
    got, reason = wanted_replicas(SCALING, Lag(lag, partitions))
    assert got == wanted
    assert why in reason


def test_min_scale_holds_even_when_idle_and_above_the_partitions() -> None:
    scaling = SourceScaling(BUILTIN, min_scale=3, max_scale=5)
    assert wanted_replicas(scaling, Lag(0, 6))[0] == 3
    assert wanted_replicas(scaling, Lag(10_000, 2))[0] == 3


def test_scale_up_is_at_once_and_scale_down_waits_for_the_cooldown() -> None:
    history = Recommendations()
    assert decide(SCALING, Lag(450, 6), current=0, history=history, now=0).replicas == 5
    assert decide(SCALING, Lag(120, 6), current=5, history=history, now=10).replicas == 5  # 2 wanted, held
    held = decide(SCALING, Lag(0, 6), current=5, history=history, now=29)
    assert (held.replicas, held.wanted) == (5, 0)
    assert "held at 5 until the lag has stayed low for the cooldown (30s)" in held.reason
    # The 5 fell out of the window; the 2 seen at t=10 still holds it up.
    assert decide(SCALING, Lag(0, 6), current=5, history=history, now=31).replicas == 2
    assert decide(SCALING, Lag(0, 6), current=2, history=history, now=41).replicas == 0


def test_an_idle_source_stays_at_zero_and_wakes_on_the_first_lag_over_the_activation_threshold() -> None:
    scaling = SourceScaling(BUILTIN, activation_lag_threshold=10, lag_threshold=100)
    history = Recommendations()
    assert decide(scaling, Lag(10, 3), current=0, history=history, now=0).replicas == 0
    assert decide(scaling, Lag(11, 3), current=0, history=history, now=1).replicas == 1


# --- status ----------------------------------------------------------------------------------------------------

def test_status_shows_the_replicas_wanted_and_why_and_a_problem_blocks_ready() -> None:
    sink = Resolution("http://broker/live/default")
    deployed_ok = unknown("Deployed", "DeploymentProgressing", "0 of 0")
    working = source_status(SourceFacts(sink, deployed_ok, scaling=ScaleReport(
        "builtin", 3, 250, "lag 250 at 100 per replica: 3")), None, 1, "2026-01-01T00:00:00Z")
    assert working["autoscaling"] == {"class": "builtin", "desiredReplicas": 3, "lag": 250,
                                      "message": "lag 250 at 100 per replica: 3"}
    condition = next(c for c in working["conditions"] if c["type"] == "Autoscaled")
    assert (condition["status"], condition["reason"]) == ("True", "Builtin")
    broken = source_status(SourceFacts(sink, deployed_ok, scaling=ScaleReport(
        "keda", problem=StatusProblem("KEDANotInstalled", "install KEDA"))), None, 1, "2026-01-01T00:00:00Z")
    autoscaled_condition = next(c for c in broken["conditions"] if c["type"] == "Autoscaled")
    assert autoscaled_condition["status"] == "False"
    assert broken["conditions"][0]["status"] == "False"
    assert broken["conditions"][0]["reason"] == "KEDANotInstalled"
    off = source_status(SourceFacts(sink, deployed_ok), working, 1, "2026-01-01T00:00:00Z")
    assert off["autoscaling"] is None  # the merge patch removes it
    assert all(c["type"] != "Autoscaled" for c in off["conditions"])


# --- RocketMQ's remoting frames ------------------------------------------------------------------------------

def test_remoting_frames_round_trip_and_fastjson_numeric_keys_are_read() -> None:
    import struct

    from eventferry.controller.rocketmq_backlog import GET_MAX_OFFSET, decode, encode, parse_route

    frame = encode(GET_MAX_OFFSET, 7, {"topic": "t", "queueId": "3"})
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    header, body = decode(frame[4:])
    assert (header["code"], header["opaque"], header["flag"], header["extFields"]) == (
        30, 7, 0, {"topic": "t", "queueId": "3"})
    assert body == b""
    route = parse_route(b'{"brokerDatas":[{"brokerAddrs":{0:"10.0.0.1:10911",1:"10.0.0.2:10911"},'
                        b'"brokerName":"broker-a"}],"queueDatas":[{"brokerName":"broker-a","readQueueNums":4}]}')
    assert route["brokerDatas"][0]["brokerAddrs"] == {"0": "10.0.0.1:10911", "1": "10.0.0.2:10911"}


def test_signed_remoting_fields_cover_every_value_in_name_order_and_never_carry_the_secret() -> None:
    """The signature (checked against a broker with ACL in tests/integration/test_rocketmq_acl.py) is over the
    values sorted by field name, so the order the fields were written in does not change it."""
    from eventferry.controller.rocketmq_backlog import Credentials, sign

    keys = Credentials("reader", "s3cret")
    one = sign({"topic": "t", "queueId": "3", "consumerGroup": "g"}, keys)
    other = sign({"consumerGroup": "g", "queueId": "3", "topic": "t"}, keys)
    assert one == other
    assert set(one) == {"topic", "queueId", "consumerGroup", "AccessKey", "Signature"}
    assert one["AccessKey"] == "reader"
    assert sign({"topic": "t", "queueId": "4", "consumerGroup": "g"}, keys)["Signature"] != one["Signature"]
    assert sign({"topic": "t", "queueId": "3", "consumerGroup": "g"}, Credentials("reader", "other"))[
        "Signature"] != one["Signature"]
    assert "s3cret" not in repr(keys) and "s3cret" not in str(one)


def test_a_rocketmq_sources_scaled_object_reads_the_backlog_from_the_operator() -> None:
    from eventferry.controller.backlog_endpoint import backlog_path
    from eventferry.resources.scaling import rocketmq_scaled_object

    source = RocketMQSource.model_validate({
        "apiVersion": "eventferry.dev/v1alpha1", "kind": "RocketMQSource",
        "metadata": {"name": "comments", "namespace": "live", "uid": UID,
                     "annotations": {P + "class": "keda", P + "lag-threshold": "50", P + "max-scale": "4"}},
        "spec": {"endpoints": "proxy:8081", "nameServers": "namesrv:9876", "topic": "t", "consumerGroup": "g",
                 "sink": {"uri": "http://b/"}}})
    assert autoscaled(source)
    url = "http://ef-eventferry-operator.eventferry-system.svc.cluster.local:9090" + backlog_path("live", "comments")
    obj = rocketmq_scaled_object(source, source.scaling, url)
    assert obj["spec"]["scaleTargetRef"]["name"] == "rocketmqsource-comments"
    assert obj["spec"]["maxReplicaCount"] == 4
    assert obj["spec"]["triggers"] == [{"type": "metrics-api", "name": "backlog", "metadata": {
        "url": url, "format": "json", "valueLocation": "backlog", "targetValue": "50", "activationTargetValue": "0"}}]
    assert url.endswith("/backlog/rocketmqsources/live/comments")
