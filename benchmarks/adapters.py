"""Source adapter throughput, beside the raw consume rate of the same client in the same run.

``python -m benchmarks.adapters [--kafka-messages N] [--rocketmq-messages M] [--runs R]``
(or ``python benchmarks/adapters.py``)

Starts a single-node Kafka and a RocketMQ 5 (name server + proxy) from ``tests.env.servers`` in a
temporary directory, fills one topic of each with small messages, then, R times:
- baseline: the client alone reads every message (aiokafka consumer; rocketmq SimpleConsumer with
  as many receiving threads as the adapter has receivers, acknowledging each message) in a new group;
- adapter: ``eventferry adapter kafka|rocketmq`` as a process, in a new consumer group, delivering
  every message as a CloudEvent to a counting aiohttp sink (a separate process), committing/acking.
Rates count from the first message to the last (start-up and group join excluded; the raw Kafka
clock starts once the first fetched batch is in hand, so it measures reading prefetched records).
For context, plain HTTP POSTs into the same sink (no adapter) are measured too: every adapter event
is one POST, so that is the adapter's ceiling here. And the Kafka adapter into an InMemory Broker
(``eventferry run``, one Trigger to the same sink), in batches of 100 (what the operator sets for a Broker
sink) and one event a request. Medians of R runs.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.env.ports import free_port, wait_for_port

from benchmarks.broker import rss_mib

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
EVENTFERRY = str(Path(sys.executable).parent / "eventferry")
PAYLOAD = json.dumps({"room": "live-42", "user": "viewer-7", "comment": "what a play!"}).encode()
KAFKA_PARTITIONS = 3
ROCKETMQ_RECEIVERS = 4


BROKER_MANIFEST = """apiVersion: eventferry.dev/v1alpha1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventferry.dev/v1alpha1
kind: Trigger
metadata: {{name: to-sink}}
spec: {{broker: default, subscriber: {{uri: "{sink}/broker"}}}}
---
apiVersion: eventferry.dev/v1alpha1
kind: Broker
metadata: {{name: ingest}}
"""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def process(cmd: list[str], log_file: Path, env: dict[str, str] | None = None,
            port: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log_file.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=REPO)
    try:
        if port is not None and not wait_for_port(port, 60):
            raise RuntimeError(f"{cmd[:3]} did not listen on {port}; see {log_file}")
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def sink_state(session: aiohttp.ClientSession, sink: str) -> dict[str, float]:
    async with session.get(f"{sink}/count") as response:
        state: dict[str, float] = await response.json()
        return state


async def adapter_rate(kind: str, spec: dict[str, object], sink: str, count: int, work: Path,
                       target: str | None = None, extra_env: dict[str, str] | None = None) -> float:
    """Messages/s delivered by an adapter process into the sink, first to last message. ``target``: where the
    adapter sends (a Broker in front of the sink), when not the sink itself."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("K_")}
    env.update({"K_SINK": target or sink, "K_SOURCE_SPEC": json.dumps(spec), "K_SOURCE_NAME": "bench",
                "K_SOURCE_NAMESPACE": "default", "K_METRICS_PORT": str(free_port()), "K_LOG_LEVEL": "WARNING",
                **(extra_env or {})})
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{sink}/reset"):
            pass
        with process([EVENTFERRY, "adapter", kind], work / f"adapter-{kind}.log", env=env) as proc:
            deadline = time.monotonic() + 300
            while True:
                state = await sink_state(session, sink)
                if state["count"] >= count:
                    log(f"    {kind} adapter RSS after {count} messages: {rss_mib(proc.pid):.0f} MiB")
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} adapter delivered {state['count']:.0f} of {count}; see {work}")
                await asyncio.sleep(0.2)
    return (state["count"] - 1) / (state["last"] - state["first"])


async def broker_intake_rate(spec: dict[str, object], broker_base: str, count: int, work: Path) -> float:
    """Messages/s a Kafka adapter gets into a Broker's ingress (202s counted by the broker; the Broker has no
    Trigger, so nothing is delivered on: this is the adapter and the ingress alone), in batches of 100."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("K_")}
    env.update({"K_SINK": f"{broker_base}/default/ingest", "K_SOURCE_SPEC": json.dumps(spec), "K_SOURCE_NAME": "bench",
                "K_SOURCE_NAMESPACE": "default", "K_METRICS_PORT": str(free_port()), "K_LOG_LEVEL": "WARNING",
                "K_SINK_BATCH_SIZE": "100"})

    async def accepted(session: aiohttp.ClientSession) -> float:
        async with session.get(f"{broker_base}/metrics") as response:
            text = await response.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("eventferry_broker_events_received_total{") and 'broker="ingest"' in line
                   and 'code="202"' in line)

    async with aiohttp.ClientSession() as session:
        before = await accepted(session)
        with process([EVENTFERRY, "adapter", "kafka"], work / "adapter-intake.log", env=env) as proc:
            first = last = 0.0
            deadline = time.monotonic() + 300
            while True:
                got = await accepted(session) - before
                if got and not first:
                    first = time.time()
                if got >= count:
                    last = time.time()
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Broker accepted {got:.0f} of {count}; see {work}")
                await asyncio.sleep(0.05)
    return count / max(last - first, 1e-3)


async def http_ceiling(sink: str, count: int, concurrency: int = 100) -> float:
    """Events/s that plain POSTs (eventferry's Sender, no broker, no adapter) get into the same sink: the
    HTTP hop's own ceiling on this machine, for reading the adapter figures."""
    from eventferry.delivery import Sender
    from eventferry.events import CloudEvent

    event = CloudEvent({"specversion": "1.0", "id": "x", "source": "/bench", "type": "bench"}, PAYLOAD)
    sender = Sender()
    await sender.start()
    left = count

    async def post() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            attempt = await sender.send(f"{sink}/ceiling", event, timeout=10)
            if not attempt.ok:
                raise RuntimeError(f"sink answered {attempt.status}: {attempt.error}")

    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{sink}/reset"):
                pass
            await asyncio.gather(*(post() for _ in range(concurrency)))
            state = await sink_state(session, sink)
    finally:
        await sender.close()
    return (state["count"] - 1) / (state["last"] - state["first"])


# --- Kafka --------------------------------------------------------------------------------------------

async def kafka_fill(bootstrap: str, topic: str, count: int) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, KAFKA_PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for i in range(count):
            await producer.send(topic, PAYLOAD, key=f"user-{i % 100}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def kafka_raw_rate(bootstrap: str, topic: str, count: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        got, first, first_batch = 0, 0.0, 0
        while got < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            fetched = sum(len(records) for records in batches.values())
            if fetched and not first:
                # The clock starts when the first batch is in hand: it does not count towards the rate.
                first, first_batch = time.time(), fetched
            got += fetched
        last = time.time()
        await consumer.commit()
    finally:
        await consumer.stop()
    return (count - first_batch) / (last - first)


# --- RocketMQ -----------------------------------------------------------------------------------------

def rocketmq_fill(endpoint: str, topic: str, count: int) -> None:
    from rocketmq import ClientConfiguration, Credentials, Message, Producer

    producer = Producer(ClientConfiguration(endpoint, Credentials(), request_timeout=10), (topic,))
    producer.startup()
    try:
        futures = []
        for i in range(count):
            message = Message()
            message.topic = topic
            message.body = PAYLOAD
            message.tag = "comment"
            message.keys = f"user-{i % 100}"
            futures.append(producer.send_async(message))
        for future in futures:
            future.result(timeout=60)
    finally:
        producer.shutdown()


def rocketmq_raw_rate(endpoint: str, topic: str, count: int) -> float:
    from rocketmq import ClientConfiguration, Credentials, FilterExpression, SimpleConsumer

    consumer = SimpleConsumer(ClientConfiguration(endpoint, Credentials(), request_timeout=10),
                              f"raw-{uuid.uuid4().hex[:8]}", {topic: FilterExpression("*")}, await_duration=2)
    consumer.startup()
    lock = threading.Lock()
    state = {"got": 0, "first": 0.0, "last": 0.0}

    def receive() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with lock:
                if state["got"] >= count:
                    return
            try:
                messages = consumer.receive(32, 60)
            except Exception:  # e.g. the proxy has not got the client's settings yet
                time.sleep(0.2)
                continue
            for message in messages:
                consumer.ack(message)
            with lock:
                if messages and not state["first"]:
                    state["first"] = time.time()
                state["got"] += len(messages)
                if messages:
                    state["last"] = time.time()

    try:
        with concurrent.futures.ThreadPoolExecutor(ROCKETMQ_RECEIVERS) as pool:
            for done in [pool.submit(receive) for _ in range(ROCKETMQ_RECEIVERS)]:
                done.result()
    finally:
        consumer.shutdown()
    if state["got"] < count:
        raise RuntimeError(f"raw SimpleConsumer read {state['got']} of {count}")
    return (state["got"] - 1) / (state["last"] - state["first"])


# --- main ---------------------------------------------------------------------------------------------

async def main_async(args: argparse.Namespace) -> None:
    from tests.env.servers import Kafka, RocketMQ

    work = Path(tempfile.mkdtemp(prefix="eventferry-bench-adapters-"))
    servers: list[Kafka | RocketMQ] = []
    results: dict[str, list[float]] = {}
    try:
        log(f"starting Kafka and RocketMQ in {work}")
        kafka = Kafka.start(work / "kafka")
        servers.append(kafka)
        rocketmq = RocketMQ.start(work / "rocketmq")
        servers.append(rocketmq)
        sink_port = free_port()
        sink = f"http://127.0.0.1:{sink_port}"
        broker_port = free_port()
        broker_manifest = work / "broker.yaml"
        broker_manifest.write_text(BROKER_MANIFEST.format(sink=sink))
        with process([PYTHON, "-m", "benchmarks.sink", "--port", str(sink_port)], work / "sink.log",
                     port=sink_port), \
                process([EVENTFERRY, "run", "-f", str(broker_manifest), "--port", str(broker_port), "--log-level",
                         "WARNING"], work / "broker.log", port=broker_port):
            broker = f"http://127.0.0.1:{broker_port}/default/default"
            kafka_topic = f"bench-{uuid.uuid4().hex[:8]}"
            await kafka_fill(kafka.bootstrap, kafka_topic, args.kafka_messages)
            rocketmq_topic = f"bench-{uuid.uuid4().hex[:8]}"
            rocketmq.create_topic(rocketmq_topic)
            await asyncio.to_thread(rocketmq_fill, rocketmq.endpoint, rocketmq_topic, args.rocketmq_messages)
            log(f"filled {kafka_topic} ({args.kafka_messages}) and {rocketmq_topic} ({args.rocketmq_messages})")
            for run in range(1, args.runs + 1):
                cases = {
                    "context: HTTP POSTs alone into the sink": lambda: http_ceiling(sink, args.kafka_messages),
                    "kafka raw (aiokafka consumer)": lambda: kafka_raw_rate(kafka.bootstrap, kafka_topic,
                                                                            args.kafka_messages),
                    "kafka adapter -> sink": lambda: adapter_rate("kafka", {
                        "bootstrapServers": [kafka.bootstrap], "topics": [kafka_topic], "initialOffset": "earliest",
                        "consumerGroup": f"adapter-{uuid.uuid4().hex[:8]}", "sink": {"uri": sink}},
                        sink, args.kafka_messages, work),
                    "kafka adapter -> Broker, batches of 100 -> sink": lambda: adapter_rate("kafka", {
                        "bootstrapServers": [kafka.bootstrap], "topics": [kafka_topic], "initialOffset": "earliest",
                        "consumerGroup": f"adapter-{uuid.uuid4().hex[:8]}", "sink": {"uri": broker}},
                        sink, args.kafka_messages, work, target=broker, extra_env={"K_SINK_BATCH_SIZE": "100"}),
                    "kafka adapter -> Broker ingress alone, batches of 100": lambda: broker_intake_rate({
                        "bootstrapServers": [kafka.bootstrap], "topics": [kafka_topic], "initialOffset": "earliest",
                        "consumerGroup": f"adapter-{uuid.uuid4().hex[:8]}", "sink": {"uri": broker}},
                        broker.rsplit("/", 2)[0], args.kafka_messages, work),
                    "kafka adapter -> Broker, one a request -> sink": lambda: adapter_rate("kafka", {
                        "bootstrapServers": [kafka.bootstrap], "topics": [kafka_topic], "initialOffset": "earliest",
                        "consumerGroup": f"adapter-{uuid.uuid4().hex[:8]}", "sink": {"uri": broker}},
                        sink, args.kafka_messages, work, target=broker),
                    "rocketmq raw (SimpleConsumer, receive+ack)": lambda: asyncio.to_thread(
                        rocketmq_raw_rate, rocketmq.endpoint, rocketmq_topic, args.rocketmq_messages),
                    "rocketmq adapter -> sink": lambda: adapter_rate("rocketmq", {
                        "endpoints": rocketmq.endpoint, "topic": rocketmq_topic,
                        "consumerGroup": f"adapter-{uuid.uuid4().hex[:8]}", "sink": {"uri": sink}},
                        sink, args.rocketmq_messages, work),
                }
                for name, measure in cases.items():
                    rate = await measure()
                    results.setdefault(name, []).append(rate)
                    log(f"  run {run}/{args.runs} {name}: {rate:.0f} msg/s")
    finally:
        for server in reversed(servers):
            server.stop()
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    print(f"\nmessages/s, medians of {args.runs} runs ({args.kafka_messages} Kafka records on {KAFKA_PARTITIONS} "
          f"partitions, {args.rocketmq_messages} RocketMQ messages; {len(PAYLOAD)}-byte bodies; {os.cpu_count()} "
          "CPUs shared by brokers, adapter and sink)")
    print(f"{'case':46} {'msg/s':>9} {'runs':>26} {'vs raw':>8}")
    for kind in ("kafka", "rocketmq", "context"):
        raw = next((name for name in medians if name.startswith(kind) and "raw" in name), None)
        for name in (n for n in medians if n.startswith(kind)):
            runs = "/".join(f"{r:.0f}" for r in results[name])
            ratio = f"{medians[name] / medians[raw]:.3g}x" if raw else ""
            print(f"{name:46} {medians[name]:9.0f} {runs:>26} {ratio:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kafka-messages", type=int, default=20000)
    parser.add_argument("--rocketmq-messages", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
