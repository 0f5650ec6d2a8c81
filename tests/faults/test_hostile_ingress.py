"""An ``eventferry run`` process under hostile input: malformed requests of every class found, slow clients,
half-sent requests and a connection flood, while good events keep flowing. No 5xx for a client's fault, no
crash, every good event delivered, and the process's memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.env.ports import free_port
from tests.faults.support import rss_mib
from tests.support.processes import kill, start_eventferry, wait_ready
from tests.support.rawhttp import request_head, send_raw
from tests.support.subscriber import Subscribers

pytestmark = pytest.mark.faults

RSS_LIMIT_MIB = 250
FLOOD = 800  # idle connections held open at once
SLOW_CLIENTS = 60
GOOD_EVENTS = 2000


def hostile_requests(rng: random.Random) -> list[tuple[list[tuple[bytes, bytes]], bytes]]:
    base = [(b"ce-specversion", b"1.0"), (b"ce-id", b"x"), (b"ce-source", b"/s"), (b"ce-type", b"t")]
    structured = [(b"content-type", b"application/cloudevents+json")]
    batch = [(b"content-type", b"application/cloudevents-batch+json")]
    cases = [
        (structured, b"[" * 100_000),
        (batch, b"[" * 100_000),
        (structured, b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":"\\ud800"}'),
        (structured, b'{"specversion":"1.0","id":"1","source":"\\udfff","type":"t"}'),
        ([(b"ce-specversion", b"1.0"), (b"ce-id", b"x"), (b"ce-source", b"\xff\xfe"), (b"ce-type", b"t")], b""),
        ([*base, (b"ce-time", b"2020-01-01")], b""),
        ([*base, (b"ce-huge", b"v" * 20_000)], b""),
        ([*base, *((f"x-{i}".encode(), b"1") for i in range(300))], b""),
        (structured, b"{" + b'"a":' * 50_000),
        (batch, b"[]"),
        ([(b"content-type", b"application/cloudevents+xml")], b"<x/>"),
        (base, b"z" * (5 * 1024 * 1024)),  # past the 4 MiB default limit
    ]
    cases += [([(b"ce-" + bytes([rng.randrange(33, 127)]), rng.randbytes(10).replace(b"\r", b"").replace(b"\n", b""))],
               rng.randbytes(rng.randrange(0, 2000))) for _ in range(40)]
    return cases


@pytest.mark.timeout(300)
async def test_hostile_input_gets_4xx_and_the_process_stays_small(tmp_path: Path, subscribers: Subscribers) -> None:
    sub = await subscribers()
    manifest = tmp_path / "broker.yaml"
    manifest.write_text(f"""apiVersion: eventferry.dev/v1alpha1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventferry.dev/v1alpha1
kind: Trigger
metadata: {{name: all}}
spec:
  broker: default
  subscriber: {{uri: "{sub.url}/s"}}
""")
    port = free_port()
    proc = start_eventferry(["run", "-f", str(manifest), "--port", str(port), "--idle-timeout", "3"],
                            tmp_path / "run.log")
    rng = random.Random(11)
    statuses: dict[int, int] = {}
    peak = 0.0
    held: list[asyncio.StreamWriter] = []
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        start_rss = rss_mib(proc.pid)

        async def good_events() -> None:
            async with aiohttp.ClientSession() as session:
                for i in range(GOOD_EVENTS):
                    headers = {"ce-specversion": "1.0", "ce-id": f"good-{i}", "ce-source": "/s", "ce-type": "t"}
                    async with session.post(f"http://127.0.0.1:{port}/default/default", headers=headers,
                                            data=b"x" * 1024) as response:
                        assert response.status == 202, await response.text()

        async def hostile() -> None:
            for _ in range(5):
                for headers, body in hostile_requests(rng):
                    answer = await send_raw(port, "/default/default", headers, body, chunk=rng.choice([0, 512]))
                    statuses[answer.status] = statuses.get(answer.status, 0) + 1

        async def slow_client(number: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            with contextlib.suppress(ConnectionError):
                head = request_head("/default/default", [(b"ce-specversion", b"1.0")], length=10)
                for byte in head[: 20 + number]:  # a request that trickles in and never ends
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)
                await asyncio.wait_for(reader.read(), 20)  # the server closes it (idle timeout)
            writer.close()

        async def flood() -> None:
            for _ in range(FLOOD):
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    held.append(writer)

        async def watch_memory(done: asyncio.Event) -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_mib(proc.pid))
                await asyncio.sleep(0.2)

        done = asyncio.Event()
        watcher = asyncio.create_task(watch_memory(done))
        await asyncio.gather(good_events(), hostile(), flood(), *(slow_client(i) for i in range(SLOW_CLIENTS)))
        await sub.wait_for(GOOD_EVENTS, timeout=60)
        done.set()
        await watcher
        assert proc.poll() is None, "the data plane crashed"
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
    finally:
        for writer in held:
            writer.close()
        kill(proc, signal.SIGTERM)
    print(f"\nhostile ingress: answers {dict(sorted(statuses.items()))}; RSS {start_rss:.0f} MiB at start, "
          f"peak {peak:.0f} MiB with {FLOOD} idle connections, {SLOW_CLIENTS} slow clients and {GOOD_EVENTS} good "
          "events delivered")
    # 0: the server closed a hostile connection before its answer could be read (never a 5xx)
    assert all(400 <= status < 500 or status == 0 for status in statuses), statuses
    assert peak < RSS_LIMIT_MIB, f"RSS peaked at {peak:.0f} MiB"
    assert {r.event.id for r in sub.received} >= {f"good-{i}" for i in range(GOOD_EVENTS)}
