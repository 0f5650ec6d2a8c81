"""RocketMQSource's access and secret keys against a RocketMQ with ACL 2.0 on (authentication and authorization,
the test environment's RocketMQAcl): the adapter process, its keys read from Secret files, delivers every message
to a real subscriber with the right keys; with a wrong secret key, or a topic the user may not read, it delivers
nothing, is never ready, and stops saying why; the operator's backlog reads (autoscaling) sign with the same keys."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

from tests.env.ports import free_port
from tests.env.servers import (
    ROCKETMQ_ACCESS_KEY,
    ROCKETMQ_ACL_PREFIX,
    ROCKETMQ_SECRET_KEY,
    RocketMQ,
    RocketMQAcl,
)
from tests.support.processes import kill, start_eventferry, wait_ready
from tests.support.subscriber import Subscribers

if TYPE_CHECKING:
    from tests.conftest import TestEnvironment

pytestmark = pytest.mark.integration

COUNT = 200
SECRET = "rocketmq-keys"


@pytest.fixture(scope="session")
def rocketmq_acl(testenv: TestEnvironment) -> RocketMQ:
    """A second RocketMQ of the session, with ACL 2.0 on (the unauthenticated ``rocketmq`` stays as it is)."""
    server = testenv.get(RocketMQAcl, "rocketmq-acl")
    assert isinstance(server, RocketMQ) and server.acl
    return server


def new_topic(rocketmq: RocketMQ, granted: bool = True) -> str:
    """A topic made by the admin tool (as the super user); the user may use it only if its name has the prefix."""
    topic = f"{ROCKETMQ_ACL_PREFIX if granted else 'private-'}{uuid.uuid4().hex[:10]}"
    rocketmq.create_topic(topic)
    return topic


def produce(endpoint: str, topic: str, bodies: list[bytes]) -> list[str]:
    """Sends with the user's keys (the proxy refuses unsigned clients)."""
    from rocketmq import ClientConfiguration, Credentials, Message, Producer

    producer = Producer(ClientConfiguration(endpoint, Credentials(ROCKETMQ_ACCESS_KEY, ROCKETMQ_SECRET_KEY),
                                            request_timeout=10), (topic,))
    producer.startup()
    try:
        futures = []
        for body in bodies:
            message = Message()
            message.topic = topic
            message.body = body
            futures.append(producer.send_async(message))
        return [future.result(timeout=30).message_id for future in futures]
    finally:
        producer.shutdown()


def write_keys(root: Path, access_key: str, secret_key: str) -> Path:
    """The Secret as the operator mounts it: ``<K_SECRETS_DIR>/<secret>/<key>``."""
    (root / SECRET).mkdir(parents=True)
    (root / SECRET / "accessKey").write_text(access_key)
    (root / SECRET / "secretKey").write_text(secret_key)
    return root


def start_adapter(rocketmq: RocketMQ, topic: str, sink: str, secrets: Path, port: int,
                  log: Path) -> subprocess.Popen[bytes]:
    spec = {"endpoints": rocketmq.endpoint, "topic": topic, "consumerGroup": f"{ROCKETMQ_ACL_PREFIX}group-{topic}",
            "sink": {"uri": sink},
            "accessKey": {"secretKeyRef": {"name": SECRET, "key": "accessKey"}},
            "secretKey": {"secretKeyRef": {"name": SECRET, "key": "secretKey"}}}
    env = {key: value for key, value in os.environ.items() if not key.startswith("K_")}
    env.update({"K_SINK": sink, "K_SOURCE_SPEC": json.dumps(spec), "K_SOURCE_NAME": "comments",
                "K_SOURCE_NAMESPACE": "live", "K_SECRETS_DIR": str(secrets), "K_METRICS_PORT": str(port),
                "K_DRAIN_TIMEOUT": "3", "K_ROCKETMQ_INVISIBLE_DURATION": "10", "K_ROCKETMQ_AWAIT_DURATION": "2"})
    return start_eventferry(["adapter", "rocketmq"], log, env)


async def readyz(port: int) -> tuple[int | None, str]:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/readyz") as response:
            return response.status, await response.text()
    except aiohttp.ClientConnectionError as error:  # not listening yet, or stopped
        return None, str(error)


async def test_the_right_keys_consume_every_message(rocketmq_acl: RocketMQ, tmp_path: Path,
                                                    subscribers: Subscribers) -> None:
    topic = new_topic(rocketmq_acl)
    sink = await subscribers()
    secrets = write_keys(tmp_path / "secrets", ROCKETMQ_ACCESS_KEY, ROCKETMQ_SECRET_KEY)
    port, log = free_port(), tmp_path / "adapter.log"
    proc = start_adapter(rocketmq_acl, topic, sink.url, secrets, port, log)
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz", proc, timeout=60)
        ids = await asyncio.to_thread(produce, rocketmq_acl.endpoint, topic, [f"{i}".encode() for i in range(COUNT)])
        deadline = time.monotonic() + 60
        while len({r.event.id for r in sink.received}) < COUNT and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        kill(proc, timeout=20)
    bodies = {int(r.event.data or b"-1") for r in sink.received}
    assert bodies == set(range(COUNT)), f"{COUNT - len(bodies)} messages missing\n{log.read_text()[-3000:]}"
    assert {r.event.id for r in sink.received} == set(ids)


@pytest.mark.parametrize(("case", "refusal", "advice"), [
    ("wrong secret key", "check signature failed", "refused the credentials"),
    ("topic not granted", f"User:{ROCKETMQ_ACCESS_KEY} has no permission to access Topic:private-",
     "accepted the keys but does not let their user consume"),
])
async def test_refused_keys_deliver_nothing_and_say_why(rocketmq_acl: RocketMQ, tmp_path: Path, case: str,
                                                        refusal: str, advice: str, subscribers: Subscribers) -> None:
    granted = case != "topic not granted"
    topic = new_topic(rocketmq_acl, granted=granted)
    if granted:  # something to deliver, were the keys accepted
        await asyncio.to_thread(produce, rocketmq_acl.endpoint, topic, [b"not for you"] * 5)
    sink = await subscribers()
    secret_key = "not-the-secret" if case == "wrong secret key" else ROCKETMQ_SECRET_KEY
    secrets = write_keys(tmp_path / "secrets", ROCKETMQ_ACCESS_KEY, secret_key)
    port, log = free_port(), tmp_path / "adapter.log"
    proc = start_adapter(rocketmq_acl, topic, sink.url, secrets, port, log)
    try:
        deadline = time.monotonic() + 60
        answers = []
        while proc.poll() is None and time.monotonic() < deadline:
            answers.append(await readyz(port))
            await asyncio.sleep(0.2)
        exit_code = proc.poll()
    finally:
        kill(proc, timeout=20)
    output = log.read_text()
    assert sink.received == [], f"delivered with refused keys ({case})\n{output[-3000:]}"
    # Retrying cannot mend refused keys: the adapter stops (its pod restarts, in Kubernetes) and says why,
    # in its own words, with the proxy's answer (UNAUTHORIZED, 40100) and what to change.
    assert exit_code == 1, f"the adapter did not stop on refused keys ({case})\n{output[-3000:]}"
    stopped = [line for line in output.splitlines() if line.startswith("error: ")]
    assert stopped, output[-3000:]
    assert advice in stopped[-1] and refusal in stopped[-1] and "40100" in stopped[-1], stopped[-1]
    if not granted:  # the grant to ask for names the topic
        assert topic in stopped[-1], stopped[-1]
    assert all(status != 200 for status, _ in answers), f"ready with refused keys ({case}): {answers}"
    assert secret_key not in output, "the secret key is in the adapter's log"


async def test_the_autoscalers_backlog_reads_sign_with_the_sources_keys(rocketmq_acl: RocketMQ) -> None:
    """The operator reads a group's backlog over RocketMQ's remoting protocol (no adapter needs to run): with ACL
    on, its requests carry the source's keys, signed as RocketMQ's own clients sign them, or the broker refuses."""
    from eventferry.apis.rocketmqsource import RocketMQSource
    from eventferry.controller.autoscaler import backlog_reader
    from eventferry.controller.rocketmq_backlog import BacklogReader, Credentials, RemotingError
    from eventferry.kafka.connection import MappingSecrets

    topic = new_topic(rocketmq_acl)
    group = f"{ROCKETMQ_ACL_PREFIX}group-{topic}"
    await asyncio.to_thread(produce, rocketmq_acl.endpoint, topic, [b"waiting"] * 30)
    source = RocketMQSource.model_validate({
        "apiVersion": "eventferry.dev/v1alpha1", "kind": "RocketMQSource",
        "metadata": {"name": "comments", "namespace": "live"},
        "spec": {"endpoints": rocketmq_acl.endpoint, "nameServers": rocketmq_acl.namesrv, "topic": topic,
                 "consumerGroup": group, "sink": {"uri": "http://127.0.0.1:1/"},
                 "accessKey": {"secretKeyRef": {"name": SECRET, "key": "accessKey"}},
                 "secretKey": {"secretKeyRef": {"name": SECRET, "key": "secretKey"}}}})
    secrets = MappingSecrets({(SECRET, "accessKey"): ROCKETMQ_ACCESS_KEY, (SECRET, "secretKey"): ROCKETMQ_SECRET_KEY})
    reader, _ = backlog_reader(source, secrets)  # what the built-in autoscaler reads with
    try:
        # Offsets are RocketMQ's Get action (not Sub): the keys are accepted, the request is not allowed.
        with pytest.raises(RemotingError, match=r"no permission.*grant the source's user Get"):
            await reader.read()
        await asyncio.to_thread(rocketmq_acl.mqadmin, "createAcl", "-s", f"User:{ROCKETMQ_ACCESS_KEY}", "-a", "Get",
                                "-d", "Allow", "-r", f"Topic:{topic},Group:{group}", "-c", "DefaultCluster")
        deadline = time.monotonic() + 30
        while True:  # the grant reaches the broker's ACL cache within moments
            try:
                lag = await reader.read()
                break
            except RemotingError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await reader.close()
    assert (lag.total, lag.partitions > 0) == (30, True), lag  # the group never consumed: all 30 wait

    wrong_key = BacklogReader(rocketmq_acl.namesrv, topic, group,
                              credentials=Credentials(ROCKETMQ_ACCESS_KEY, "not-the-secret"))
    unsigned = BacklogReader(rocketmq_acl.namesrv, topic, group)
    for refused, why in ((wrong_key, "wrong secret key"), (unsigned, "no keys")):
        try:
            with pytest.raises(RemotingError) as error:
                await refused.read()
        finally:
            await refused.close()
        print(f"{why}: {error.value}")
        assert "spec.accessKey and spec.secretKey" in str(error.value), error.value
        assert "not-the-secret" not in str(error.value)
