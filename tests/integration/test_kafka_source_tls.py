"""KafkaSource over TLS: the adapter process against the test environment's SSL, SASL_SSL and mutual-TLS
listeners (certificates signed by the CA the test environment generates), delivering to a real HTTP subscriber;
and a CA that is not Kafka's, which must fail the handshake visibly rather than deliver."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.env.ports import free_port
from tests.env.servers import SCRAM_PASSWORD, SCRAM_USER, Kafka, openssl_ca
from tests.support.processes import kill, start_eventferry, wait_ready
from tests.support.subscriber import Subscribers

pytestmark = pytest.mark.integration

COUNT = 1000
PARTITIONS = 3
VERIFY_FAILED = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"


def ref(secret: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": secret, "key": key}}


TLS = {"enable": True, "caCert": ref("kafka-tls", "ca.crt")}
MUTUAL_TLS = {**TLS, "cert": ref("kafka-tls", "tls.crt"), "key": ref("kafka-tls", "tls.key")}
SASL = {"enable": True, "user": ref("kafka-auth", "user"), "password": ref("kafka-auth", "password"),
        "type": ref("kafka-auth", "mechanism")}


def write_secrets(root: Path, kafka: Kafka, ca_cert: Path) -> Path:
    """The Secrets as the operator mounts them: ``<root>/<secret name>/<key>``."""
    tls, auth = root / "kafka-tls", root / "kafka-auth"
    tls.mkdir(parents=True)
    auth.mkdir(parents=True)
    (tls / "ca.crt").write_text(ca_cert.read_text())
    (tls / "tls.crt").write_text(kafka.client_cert.read_text())
    (tls / "tls.key").write_text(kafka.client_key.read_text())
    (auth / "user").write_text(SCRAM_USER)
    (auth / "password").write_text(SCRAM_PASSWORD)
    (auth / "mechanism").write_text("SCRAM-SHA-512")
    return root


async def topic_with(kafka: Kafka, count: int) -> str:
    """A new topic holding ``count`` records, written over the SSL listener."""
    topic = f"tls-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.ssl_bootstrap, security_protocol="SSL",
                                ssl_context=ssl_context(kafka.ca_cert), acks="all", linger_ms=5)
    await producer.start()
    try:
        for i in range(count):
            await producer.send(topic, value=f"{i}".encode(), key=f"k{i % 7}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    return topic


def ssl_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def adapter_env(spec: dict[str, Any], secrets: Path, metrics_port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("K_")}
    env.update({"K_SINK": spec["sink"]["uri"], "K_SOURCE_SPEC": json.dumps(spec), "K_SOURCE_NAME": "frames",
                "K_SOURCE_NAMESPACE": "live", "K_SECRETS_DIR": str(secrets), "K_METRICS_PORT": str(metrics_port),
                "K_COMMIT_INTERVAL": "0.2", "K_DRAIN_TIMEOUT": "3"})
    return env


def source_spec(topic: str, bootstrap: str, sink: str, net: dict[str, Any]) -> dict[str, Any]:
    return {"bootstrapServers": [bootstrap], "topics": [topic], "consumerGroup": f"group-{topic}",
            "initialOffset": "earliest", "sink": {"uri": sink}, "net": net}


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def log_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"msg": line})
    return lines


@pytest.mark.parametrize("listener", ["ssl", "sasl_ssl", "mtls"])
async def test_every_record_arrives_over_tls(kafka: Kafka, tmp_path: Path, listener: str,
                                             subscribers: Subscribers) -> None:
    bootstrap, net = {"ssl": (kafka.ssl_bootstrap, {"tls": TLS}),
                      "sasl_ssl": (kafka.sasl_ssl_bootstrap, {"tls": TLS, "sasl": SASL}),
                      "mtls": (kafka.mtls_bootstrap, {"tls": MUTUAL_TLS})}[listener]
    topic = await topic_with(kafka, COUNT)
    sink = await subscribers()
    secrets = write_secrets(tmp_path / "secrets", kafka, kafka.ca_cert)
    port, log = free_port(), tmp_path / "adapter.log"
    started = time.monotonic()
    proc = start_eventferry(["adapter", "kafka"], log, adapter_env(source_spec(topic, bootstrap, sink.url, net),
                                                                   secrets, port))
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz", proc, timeout=60)
        await sink.wait_for(COUNT, timeout=90)
    finally:
        kill(proc, timeout=20)
    values = {int(r.event.data or b"-1") for r in sink.received}
    assert values == set(range(COUNT)), f"{COUNT - len(values)} records missing\n{log.read_text()[-3000:]}"
    assert all(str(r.event.attributes["source"]).endswith(f"#{topic}") for r in sink.received)
    first, last = min(r.at for r in sink.received), max(r.at for r in sink.received)
    print(f"\n{listener}: {COUNT} records, the first {first - started:.2f} s after the adapter started, "
          f"all within {last - first:.2f} s more ({COUNT / max(last - first, 1e-3):.0f}/s)")


@pytest.mark.parametrize("listener", ["ssl", "sasl_ssl"])
async def test_a_ca_that_is_not_kafkas_fails_the_handshake(kafka: Kafka, tmp_path: Path, listener: str,
                                                           subscribers: Subscribers) -> None:
    bootstrap, net = {"ssl": (kafka.ssl_bootstrap, {"tls": TLS}),
                      "sasl_ssl": (kafka.sasl_ssl_bootstrap, {"tls": TLS, "sasl": SASL})}[listener]
    openssl_ca(tmp_path / "other-ca", "not-kafkas-ca")
    topic = await topic_with(kafka, 5)
    sink = await subscribers()
    secrets = write_secrets(tmp_path / "secrets", kafka, tmp_path / "other-ca.crt")
    port, log = free_port(), tmp_path / "adapter.log"
    proc: subprocess.Popen[bytes] = start_eventferry(
        ["adapter", "kafka"], log, adapter_env(source_spec(topic, bootstrap, sink.url, net), secrets, port))
    try:
        # A CA that does not verify Kafka's certificate cannot be fixed by waiting (the TLS settings are read
        # at start): the adapter stops with a message that says so; the pod's restart reads the Secret again.
        exited = await asyncio.to_thread(proc.wait, 60)
    finally:
        kill(proc, timeout=20)
    output = log.read_text()
    assert exited == 1, output
    assert sink.received == [], f"delivered with a CA that did not sign Kafka's certificate\n{output}"
    stopped = [line for line in log_lines(log) if line["msg"].startswith("adapter stopped: ")]
    assert stopped and stopped[0].get("level") == "error", output
    message = stopped[0]["msg"]
    assert f"Kafka's TLS certificate at {bootstrap} did not verify" in message, message
    assert "check the CA certificate of the Secret keys spec.net refers to" in message, message

