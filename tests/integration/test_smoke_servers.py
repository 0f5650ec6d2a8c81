"""Each server of the test environment is real: a round trip through it with its own client."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.env import provision
from tests.env.servers import Kafka, KubeAPI, RocketMQ

pytestmark = pytest.mark.integration

WIDGET_CRD = textwrap.dedent("""\
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.smoke.eventferry.dev
    spec:
      group: smoke.eventferry.dev
      scope: Namespaced
      names: {plural: widgets, singular: widget, kind: Widget}
      versions:
        - name: v1
          served: true
          storage: true
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  properties:
                    size: {type: integer, minimum: 1}
    """)


def kubectl(kube: KubeAPI, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=str(kube.kubeconfig))
    return subprocess.run([provision.kubectl(), *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=60)


def test_kube_apiserver_stores_custom_objects(kube_api: KubeAPI) -> None:
    applied = kubectl(kube_api, "apply", "-f", "-", stdin=WIDGET_CRD)
    assert applied.returncode == 0, applied.stderr
    waited = kubectl(kube_api, "wait", "--for=condition=Established", "--timeout=30s",
                     "crd/widgets.smoke.eventferry.dev")
    assert waited.returncode == 0, waited.stderr

    widget = {"apiVersion": "smoke.eventferry.dev/v1", "kind": "Widget",
              "metadata": {"name": "w1", "namespace": "default"}, "spec": {"size": 3}}
    created = kubectl(kube_api, "create", "-f", "-", stdin=json.dumps(widget))
    assert created.returncode == 0, created.stderr
    read = kubectl(kube_api, "get", "widget", "w1", "-o", "json")
    assert read.returncode == 0, read.stderr
    stored = json.loads(read.stdout)
    assert stored["spec"] == {"size": 3}
    assert stored["metadata"]["uid"]  # assigned by the API server, proof it was stored

    # The schema is enforced by the real server, not by kubectl.
    widget["metadata"]["name"] = "w2"
    widget["spec"] = {"size": 0}
    refused = kubectl(kube_api, "create", "--validate=false", "-f", "-", stdin=json.dumps(widget))
    assert refused.returncode != 0
    assert "spec.size" in refused.stderr


def test_helm_installs_a_chart_into_the_api_server(kube_api: KubeAPI, tmp_path: Path) -> None:
    chart = tmp_path / "smoke"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: smoke\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n")
    env = dict(os.environ, KUBECONFIG=str(kube_api.kubeconfig), HELM_CACHE_HOME=str(tmp_path / "hc"),
               HELM_CONFIG_HOME=str(tmp_path / "hcfg"), HELM_DATA_HOME=str(tmp_path / "hd"))
    installed = subprocess.run([str(provision.HELM.ensure()), "install", "smoke", str(chart),
                                "--set", "greeting=hi", "--namespace", "default"],
                               capture_output=True, text=True, env=env, timeout=120)
    assert installed.returncode == 0, installed.stderr
    read = kubectl(kube_api, "get", "configmap", "smoke-cm", "-o", "json")
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["data"] == {"greeting": "hi"}
    removed = subprocess.run([str(provision.HELM.ensure()), "uninstall", "smoke", "--namespace", "default"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert removed.returncode == 0, removed.stderr
    assert kubectl(kube_api, "get", "configmap", "smoke-cm").returncode != 0


async def test_kafka_round_trip(kafka: Kafka) -> None:
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"hello kafka", key=b"k1", headers=[("h", b"v")])
    finally:
        await producer.stop()
    assert meta.offset == 0

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, group_id=f"g-{topic}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.value, list(record.headers)) == (b"k1", b"hello kafka", [("h", b"v")])


def test_rocketmq_round_trip_through_the_grpc_proxy(rocketmq: RocketMQ) -> None:
    from rocketmq import ClientConfiguration, Credentials, FilterExpression, Message, Producer, SimpleConsumer

    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    rocketmq.create_topic(topic)
    config = ClientConfiguration(rocketmq.endpoint, Credentials(), request_timeout=10)
    group = f"g-{topic}"
    # The consumer group subscribes first, so that it reads from the start of what is sent next.
    consumer = SimpleConsumer(config, group, {topic: FilterExpression("*")}, await_duration=5)
    consumer.startup()
    producer = Producer(config, (topic,))
    producer.startup()
    try:
        message = Message()
        message.topic = topic
        message.body = b"hello rocketmq"
        message.tag = "smoke"
        message.keys = "key-1"
        message.add_property("origin", "smoke-test")
        receipt = producer.send(message)
        assert receipt.message_id

        received = []
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline:
            received = consumer.receive(16, 15) or []
        assert received, "no message received through the proxy within 60s"
        got = received[0]
        consumer.ack(got)
        assert got.body == b"hello rocketmq"
        assert got.tag == "smoke"
        assert got.message_id == receipt.message_id
        assert got.properties.get("origin") == "smoke-test"
    finally:
        producer.shutdown()
        consumer.shutdown()
