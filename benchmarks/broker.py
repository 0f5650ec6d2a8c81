"""Broker throughput, beside a plain aiohttp relay measured in the same run.

``python -m benchmarks.broker [--events N] [--concurrency C] [--runs R] [--no-kafka] [--no-fanout]``

Every case sends N binary CloudEvents with C concurrent senders to one ingress URL and times until
the counting sink (a separate process) has received all it should. The baseline is a plain aiohttp relay
that forwards each request to the same sink. Cases: the InMemory broker with one Trigger; the
same with 1,000 extra non-matching Triggers (the trigger index should keep the cost flat); the
Kafka broker (a real single-node Kafka, started here); fan-out: 1, 10, 100 and 1,000 Triggers where each
event matches one, and 10, 100, 1,000 where it matches ten (the sink then gets ten per event; events/s
counts deliveries); batched ingress (``application/cloudevents-batch+json``, 100 events a request) against
single events. Medians of R runs; ratios to the baseline. Also the broker process's resident memory at
rest and after the runs, and its CPU seconds per 1,000 events delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import aiohttp
from tests.env.ports import free_port, wait_for_port

PYTHON = sys.executable
EVENTFERRY = str(Path(sys.executable).parent / "eventferry")


@contextlib.contextmanager
def process(cmd: list[str], port: int, log: Path,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        if not wait_for_port(port, 60):
            raise RuntimeError(f"{cmd[:3]} did not listen on {port}; see {log}")
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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


BATCH = 100
# Extra request headers: fixed, or made anew for each request.
Headers = Mapping[str, str] | Callable[[], Mapping[str, str]]


async def one_run(url: str, sink: str, events: int, concurrency: int, matches: int = 1,
                  batch: int = 1, headers: Headers | None = None) -> tuple[float, float, float, float]:
    """Returns (deliveries/s end to end, median ingress latency ms, p99 ingress latency ms, events/s accepted by
    the ingress); ``matches``: how many Triggers each event reaches; ``batch``: events per request (a CloudEvents
    JSON batch when > 1); ``headers``: sent with every request (a token, say), or made for each by a function."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async with session.post(f"{sink}/reset"):
            pass
        latencies: list[float] = []
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(0, events, batch):
            queue.put_nowait(i)

        def request(i: int) -> tuple[bytes, dict[str, str]]:
            extra = headers() if callable(headers) else headers or {}
            if batch == 1:
                return b'{"comment": "hello from the live stream"}', {
                    "ce-specversion": "1.0", "ce-id": f"e{i}", "ce-source": "/bench", "ce-type": "com.example.bench",
                    "content-type": "application/json", **extra}
            body = json.dumps([{"specversion": "1.0", "id": f"e{j}", "source": "/bench", "type": "com.example.bench",
                                "datacontenttype": "application/json",
                                "data": {"comment": "hello from the live stream"}}
                               for j in range(i, min(i + batch, events))]).encode()
            return body, {"content-type": "application/cloudevents-batch+json", **extra}

        async def sender() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                data, headers = request(i)
                while True:
                    started = time.perf_counter()
                    async with session.post(url, data=data, headers=headers) as resp:
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
        accepted = events / (time.time() - started)
        deadline = time.monotonic() + 120
        while True:
            async with session.get(f"{sink}/count") as resp:
                state = await resp.json()
            if state["count"] >= events * matches or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        if state["count"] < events * matches:
            raise RuntimeError(f"only {state['count']} of {events * matches} deliveries reached the sink")
        elapsed = state["last"] - started
        latencies.sort()
        p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
        return events * matches / elapsed, statistics.median(latencies), p99, accepted


FANOUT = ((1, 1), (10, 1), (100, 1), (1000, 1), (10, 10), (100, 10), (1000, 10))  # (Triggers, matching)


def fanout_manifests(sink: str) -> str:
    """A Broker per (Triggers, matching) pair: ``matching`` Triggers take com.example.bench, the rest not."""
    docs = []
    for total, matching in FANOUT:
        broker = f"fan-{total}-{matching}"
        docs.append(f"apiVersion: eventferry.dev/v1alpha1\nkind: Broker\nmetadata: {{name: {broker}}}\n")
        for i in range(total):
            kind = "com.example.bench" if i < matching else f"com.example.other{i}"
            docs.append(f"""apiVersion: eventferry.dev/v1alpha1
kind: Trigger
metadata: {{name: {broker}-{i}}}
spec: {{broker: {broker}, filter: {{attributes: {{type: {kind}}}}}, subscriber: {{uri: "{sink}/{broker}"}}}}
""")
    return "---\n".join(docs)


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
        text = manifests(sink, kafka.bootstrap if kafka else None, 1000)
        manifest.write_text(text if args.no_fanout else text + "---\n" + fanout_manifests(sink))
        with process([PYTHON, "-m", "benchmarks.sink", "--port", str(sink_port)], sink_port, work / "sink.log"), \
                process([PYTHON, "-m", "benchmarks.relay", "--port", str(relay_port), "--target", f"{sink}/relay"],
                        relay_port, work / "relay.log"), \
                process([EVENTFERRY, "run", "-f", str(manifest), "--port", str(broker_port), "--log-level", "WARNING"],
                        broker_port, work / "broker.log") as broker_process:
            broker = f"http://127.0.0.1:{broker_port}"
            await wait_ready(broker)
            at_rest = rss_mib(broker_process.pid)
            # (name, URL, Triggers matched per event, events per request)
            cases = [("baseline: aiohttp relay", f"http://127.0.0.1:{relay_port}/relay", 1, 1),
                     ("InMemory broker, 1 Trigger", f"{broker}/default/memory", 1, 1),
                     ("InMemory broker, 1 + 1,000 non-matching Triggers", f"{broker}/default/crowded", 1, 1),
                     (f"InMemory, batched ingress ({BATCH} a request)", f"{broker}/default/memory", 1, BATCH)]
            if not args.no_fanout:
                cases += [(f"fan-out: {total} Trigger(s), {matching} match", f"{broker}/default/fan-{total}-{matching}",
                           matching, 1) for total, matching in FANOUT]
            if kafka:
                cases.append(("Kafka broker (acks=all), 1 Trigger", f"{broker}/default/durable", 1, 1))
            for _, url, matches, batch in cases:  # warm-up of every path
                await one_run(url, sink, min(500, args.events), args.concurrency, matches, batch)
            results: dict[str, list[tuple[float, float, float, float]]] = {case[0]: [] for case in cases}
            cpu: list[float] = []
            for run in range(args.runs):
                for name, url, matches, batch in cases:
                    before = cpu_seconds(broker_process.pid)
                    # Batched: twice the events (100 requests, within one Trigger's queue of 10,000), so that a run
                    # lasts more than the first few round trips of the 32 senders.
                    count = args.events * 2 if batch > 1 else args.events
                    results[name].append(await one_run(url, sink, count, args.concurrency, matches, batch))
                    if name.startswith("InMemory broker, 1 Trigger"):
                        cpu.append((cpu_seconds(broker_process.pid) - before) / args.events * 1000)
                    print(f"  run {run + 1}/{args.runs} {name}: {results[name][-1][0]:.0f} deliveries/s",
                          file=sys.stderr)
            loaded = rss_mib(broker_process.pid)
        base = statistics.median(r[0] for r in results[cases[0][0]])
        one = statistics.median(r[0] for r in results["InMemory broker, 1 Trigger"])
        print(f"\n{args.events} events x {args.runs} runs, {args.concurrency} concurrent senders, medians")
        single_in = statistics.median(r[3] for r in results["InMemory broker, 1 Trigger"])
        print("deliv./s: deliveries the sink received a second (end to end); accepted/s: events the ingress took a "
              "second; p50/p99: the ingress's answer time per request")
        print(f"{'case':52} {'deliv./s':>9} {'vs relay':>9} {'vs 1 Trig.':>10} {'accepted/s':>11} {'vs single':>10} "
              f"{'p50 ms':>8} {'p99 ms':>8}")
        for name, *_ in cases:
            rate, p50, p99, accepted = (statistics.median(r[i] for r in results[name]) for i in range(4))
            print(f"{name:52} {rate:9.0f} {rate / base:8.2f}x {rate / one:9.2f}x {accepted:11.0f} "
                  f"{accepted / single_in:9.2f}x {p50:8.2f} {p99:8.2f}")
        print(f"broker process (eventferry run, {3300 if not args.no_fanout else 1002} Triggers loaded): "
              f"RSS {at_rest:.0f} MiB at rest, {loaded:.0f} MiB after the runs; "
              f"{statistics.median(cpu):.2f} CPU s per 1,000 events (InMemory, 1 Trigger)")
    finally:
        if kafka:
            kafka.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-kafka", action="store_true")
    parser.add_argument("--no-fanout", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
