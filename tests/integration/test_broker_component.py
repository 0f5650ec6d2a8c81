"""``eventferry broker`` as a component: a contract file, hot reload, and the ingress/dispatcher split."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from eventferry.contract import model
from tests.env.ports import free_port
from tests.env.servers import Kafka
from tests.support.subscriber import Subscribers

pytestmark = pytest.mark.integration

EVENTFERRY = str(Path(sys.executable).parent / "eventferry")


def contract(generation: int, broker: str, triggers: list[model.Trigger], kafka: Kafka | None = None) -> str:
    settings = None
    if kafka is not None:
        settings = model.KafkaSettings(bootstrap_servers=[kafka.bootstrap], topic=f"knative-broker-default-{broker}",
                                       partitions=2)
    return model.Contract(generation=generation, brokers=[model.Broker(
        namespace="default", name=broker, broker_class="Kafka" if kafka else "InMemory", kafka=settings,
        triggers=triggers)]).to_json()


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([EVENTFERRY, "broker", *args], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> int:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


async def send(url: str, event_id: str) -> int:
    headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/t", "ce-type": "com.example.a"}
    async with aiohttp.ClientSession() as session, session.post(url, headers=headers, data=b"x") as resp:
        return resp.status


async def until(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def test_contract_file_is_followed_while_running(tmp_path: Path, subscribers: Subscribers) -> None:
    sub = await subscribers()
    path = tmp_path / "contract.json"
    path.write_text(contract(1, "b", [model.Trigger(namespace="default", name="t1", subscriber=f"{sub.url}/one")]))
    port = free_port()
    proc = start(["--contract-file", str(path), "--host", "127.0.0.1", "--port", str(port)], tmp_path / "b.log")
    base = f"http://127.0.0.1:{port}"
    try:
        async def ready() -> bool:
            try:
                return (await get(f"{base}/readyz"))[0] == 200
            except aiohttp.ClientError:
                return False

        await until(ready)
        assert await send(f"{base}/default/b", "e1") == 202
        await sub.wait_for(1, "/one")
        path.write_text(contract(2, "b", [model.Trigger(namespace="default", name="t2", subscriber=f"{sub.url}/two")]))

        async def reloaded() -> bool:
            return '"generation":2' in (await get(f"{base}/contract"))[1].replace(" ", "")

        await until(reloaded)
        assert await send(f"{base}/default/b", "e2") == 202
        [got] = await sub.wait_for(1, "/two")
        assert got.event.id == "e2"
        path.write_text("{not json")  # a broken edit keeps the loaded contract
        await asyncio.sleep(1.5)
        assert await send(f"{base}/default/b", "e3") == 202
        await sub.wait_for(2, "/two")
    finally:
        assert stop(proc) == 0


async def test_ingress_and_dispatcher_replicas_split_a_kafka_broker(kafka: Kafka, tmp_path: Path,
                                                                    subscribers: Subscribers) -> None:
    sub = await subscribers()
    name = f"split{uuid.uuid4().hex[:6]}"
    path = tmp_path / "contract.json"
    path.write_text(contract(1, name, [model.Trigger(namespace="default", name="t", subscriber=f"{sub.url}/s")],
                             kafka))
    ingress_port, dispatcher_port = free_port(), free_port()
    ingress = start(["--contract-file", str(path), "--host", "127.0.0.1", "--port", str(ingress_port),
                     "--role", "ingress"], tmp_path / "ingress.log")
    dispatcher = start(["--contract-file", str(path), "--host", "127.0.0.1", "--port", str(dispatcher_port),
                        "--role", "dispatcher"], tmp_path / "dispatcher.log")
    try:
        for port in (ingress_port, dispatcher_port):
            async def ready(port: int = port) -> bool:
                try:
                    return (await get(f"http://127.0.0.1:{port}/readyz"))[0] == 200
                except aiohttp.ClientError:
                    return False

            await until(ready, 60)
        assert await send(f"http://127.0.0.1:{dispatcher_port}/default/{name}", "x") == 503
        for i in range(20):
            assert await send(f"http://127.0.0.1:{ingress_port}/default/{name}", f"e{i}") == 202
        got = await sub.wait_for(20, "/s", timeout=30)
        assert sorted(r.event.id for r in got) == sorted(f"e{i}" for i in range(20))
        _, metrics = await get(f"http://127.0.0.1:{dispatcher_port}/metrics")
        assert 'outcome="delivered"' in metrics  # the dispatcher replica delivered them
        _, metrics = await get(f"http://127.0.0.1:{ingress_port}/metrics")
        assert 'outcome="delivered"' not in metrics
    finally:
        stop(ingress)
        stop(dispatcher)
