"""Broker throughput, beside a plain aiohttp relay measured in the same run.

``python -m benchmarks.broker [--events N] [--concurrency C] [--runs R]``

Every case sends N binary CloudEvents with C concurrent senders to one ingress URL and times until
the counting sink (a separate process) has received all N. The baseline is a plain aiohttp relay
that forwards each request to the same sink. Cases: the InMemory broker with one Trigger; the
same with 1,000 extra non-matching Triggers (the trigger index should keep the cost flat); the
Kafka broker (a real single-node Kafka, started here). Medians of R runs; ratios to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from tests.env.ports import free_port, wait_for_port

PYTHON = sys.executable
EVENTFERRY = str(Path(sys.executable).parent / "eventferry")


@contextlib.contextmanager
def process(cmd: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_for_port(port, 60):
            raise RuntimeError(f"{cmd[:3]} did not listen on {port}; see {log}")
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


async def wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{base} not ready")


async def one_run(url: str, sink: str, events: int, concurrency: int) -> tuple[float, float, float]:
    """Returns (events/s end to end, median ingress latency ms, p99 ingress latency ms)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async with session.post(f"{sink}/reset"):
            pass
        latencies: list[float] = []
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(events):
            queue.put_nowait(i)

        async def sender() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                headers = {"ce-specversion": "1.0", "ce-id": f"e{i}", "ce-source": "/bench",
                           "ce-type": "com.example.bench", "content-type": "application/json"}
                while True:
                    started = time.perf_counter()
                    async with session.post(url, data=b'{"comment": "hello from the live stream"}',
                                            headers=headers) as resp:
                        await resp.read()
                        if resp.status == 429:
                            await asyncio.sleep(0.05)
                            continue
                        if resp.status not in (200, 202):
                            raise RuntimeError(f"{url} answered {resp.status}")
                    latencies.append((time.perf_counter() - started) * 1000)
                    break

        started = time.time()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        deadline = time.monotonic() + 120
        while True:
            async with session.get(f"{sink}/count") as resp:
                state = await resp.json()
            if state["count"] >= events or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        if state["count"] < events:
            raise RuntimeError(f"only {state['count']} of {events} events reached the sink")
        elapsed = state["last"] - started
        latencies.sort()
        return events / elapsed, statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


def manifests(sink: str, kafka_bootstrap: str | None, extra_triggers: int) -> str:
    docs = ["""apiVersion: eventferry.dev/v1alpha1
kind: Broker
metadata: {name: memory}
"""]
    docs.append(f"""apiVersion: eventferry.dev/v1alpha1
kind: Trigger
metadata: {{name: to-sink}}
spec: {{broker: memory, filter: {{attributes: {{type: com.example.bench}}}}, subscriber: {{uri: "{sink}/memory"}}}}
""")
    docs.append("""apiVersion: eventferry.dev/v1alpha1
kind: Broker
metadata: {name: crowded}
""")
    docs.append(f"""apiVersion: eventferry.dev/v1alpha1
kind: Trigger
metadata: {{name: to-sink}}
spec: {{broker: crowded, filter: {{attributes: {{type: com.example.bench}}}}, subscriber: {{uri: "{sink}/crowded"}}}}
""")
    for i in range(extra_triggers):
        docs.append(f"""apiVersion: eventferry.dev/v1alpha1
kind: Trigger
metadata: {{name: other-{i}}}
spec: {{broker: crowded, filter: {{attributes: {{type: com.example.other{i}}}}}, subscriber: {{uri: "{sink}/other"}}}}
""")
    if kafka_bootstrap:
        docs.append(f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: kafka-config}}
data: {{bootstrap.servers: "{kafka_bootstrap}", default.topic.partitions: "4"}}
""")
        docs.append("""apiVersion: eventferry.dev/v1alpha1
kind: Broker
metadata: {name: durable, annotations: {eventferry.dev/broker.class: Kafka}}
spec: {config: {apiVersion: v1, kind: ConfigMap, name: kafka-config}}
""")
        docs.append(f"""apiVersion: eventferry.dev/v1alpha1
kind: Trigger
metadata: {{name: to-sink}}
spec: {{broker: durable, subscriber: {{uri: "{sink}/kafka"}}}}
""")
    return "---\n".join(docs)


async def main_async(args: argparse.Namespace) -> None:
    from tests.env.servers import Kafka

    work = Path(tempfile.mkdtemp(prefix="eventferry-bench-"))
    kafka = Kafka.start(work / "kafka") if not args.no_kafka else None
    try:
        sink_port, relay_port, broker_port = free_port(), free_port(), free_port()
        sink = f"http://127.0.0.1:{sink_port}"
        manifest = work / "bench.yaml"
        manifest.write_text(manifests(sink, kafka.bootstrap if kafka else None, 1000))
        with process([PYTHON, "-m", "benchmarks.sink", "--port", str(sink_port)], sink_port, work / "sink.log"), \
                process([PYTHON, "-m", "benchmarks.relay", "--port", str(relay_port), "--target", f"{sink}/relay"],
                        relay_port, work / "relay.log"), \
                process([EVENTFERRY, "run", "-f", str(manifest), "--port", str(broker_port), "--log-level", "WARNING"],
                        broker_port, work / "broker.log"):
            broker = f"http://127.0.0.1:{broker_port}"
            await wait_ready(broker)
            cases = [("baseline: aiohttp relay", f"http://127.0.0.1:{relay_port}/relay"),
                     ("InMemory broker, 1 Trigger", f"{broker}/default/memory"),
                     ("InMemory broker, 1 + 1,000 non-matching Triggers", f"{broker}/default/crowded")]
            if kafka:
                cases.append(("Kafka broker (acks=all), 1 Trigger", f"{broker}/default/durable"))
            await one_run(cases[0][1], sink, min(500, args.events), args.concurrency)  # warm-up of every path
            for _, url in cases[1:]:
                await one_run(url, sink, min(500, args.events), args.concurrency)
            results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in cases}
            for run in range(args.runs):
                for name, url in cases:
                    results[name].append(await one_run(url, sink, args.events, args.concurrency))
                    print(f"  run {run + 1}/{args.runs} {name}: {results[name][-1][0]:.0f} events/s", file=sys.stderr)
        base = statistics.median(r[0] for r in results[cases[0][0]])
        print(f"\n{args.events} events x {args.runs} runs, {args.concurrency} concurrent senders, medians")
        print(f"{'case':52} {'events/s':>9} {'vs relay':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for name, _ in cases:
            rate = statistics.median(r[0] for r in results[name])
            p50 = statistics.median(r[1] for r in results[name])
            p99 = statistics.median(r[2] for r in results[name])
            print(f"{name:52} {rate:9.0f} {rate / base:8.2f}x {p50:8.2f} {p99:8.2f}")
    finally:
        if kafka:
            kafka.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-kafka", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
