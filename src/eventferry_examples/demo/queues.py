"""``eventferry demo --with-queues``: Kafka and RocketMQ from the project's test environment (``tests/env``,
in a source checkout, with its servers installed), the sources of examples/live-stream-sources pointed at
them, and traffic that writes comments into RocketMQ and key frames into Kafka.

Each run uses topics and consumer groups of its own, so a sandbox that is already running (``python -m
tests.env up``) is reused without old messages; one this started is stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from eventferry_examples.demo.session import QueuesUnavailable, SinkFactory
from eventferry_examples.sinks import HttpSink, KafkaSink, RocketMQSink, RoutedSink
from eventferry_examples.traffic import Sink

COMMENT_TAG = "comment"  # the RocketMQSource's filterExpression takes "comment || danmaku"
FRAME_PARTITIONS = 2
PROGRESS_EVERY = 5.0


def _test_environment() -> tuple[ModuleType, ModuleType, ModuleType]:
    """tests.env's sandbox, provision and servers modules, from the checkout this runs in."""
    for root in (Path.cwd(), *Path(__file__).resolve().parents):
        if (root / "tests" / "env" / "sandbox.py").is_file():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            return tuple(importlib.import_module(f"tests.env.{name}")  # type: ignore[return-value]
                         for name in ("sandbox", "provision", "servers"))
    raise QueuesUnavailable("--with-queues needs the source tree's test environment (tests/env): run from a checkout")


@contextlib.asynccontextmanager
async def queues(sources: Path, say: Callable[[str], None]) -> AsyncIterator[tuple[list[Path], SinkFactory]]:
    sandbox, provision, servers = _test_environment()
    before = sandbox.SandboxState.load(sandbox.sandbox_dir())
    reused = before is not None and all(before.alive().values()) and {"kafka", "rocketmq"} <= set(before.extra)
    say("reusing the running sandbox's Kafka and RocketMQ" if reused else
        "starting Kafka and RocketMQ from the test environment (tests/env; about a minute the first time)")
    state = await _with_progress(asyncio.to_thread(sandbox.up, ["kafka", "rocketmq"]), say, "starting servers")
    started_here = not reused
    try:
        bootstrap, endpoint = state.exports["KAFKA_BOOTSTRAP_SERVERS"], state.exports["ROCKETMQ_ENDPOINTS"]
        suffix = uuid.uuid4().hex[:6]
        comments, frames = f"live-comments-{suffix}", f"video-frames-{suffix}"
        rocketmq = servers.RocketMQ(workdir=Path(state.extra["rocketmq"]["workdir"]), libs=provision.ROCKETMQ.ensure(),
                                    namesrv=state.exports["ROCKETMQ_NAMESRV"], endpoint=endpoint)
        await _with_progress(asyncio.to_thread(rocketmq.create_topic, comments), say, f"creating topic {comments}")
        await _create_kafka_topic(bootstrap, frames)
        say(f"Kafka {bootstrap} topic {frames}; RocketMQ {endpoint} topic {comments}")
        with tempfile.TemporaryDirectory(prefix="eventferry-demo-") as directory:
            manifest = Path(directory) / "sources.yaml"
            manifest.write_text(yaml.safe_dump_all(_point_sources(sources, bootstrap, endpoint, comments, frames)))

            async def make_sink(broker_url: str) -> Sink:
                rocket = RocketMQSink(endpoint, comments, COMMENT_TAG)
                kafka = KafkaSink(bootstrap, frames)
                await rocket.start()
                await kafka.start()
                return RoutedSink(comments=rocket, frames=kafka, rest=HttpSink(broker_url))

            yield [manifest], make_sink
    finally:
        if started_here:
            say("stopping the Kafka and RocketMQ this demo started")
            await asyncio.to_thread(sandbox.down)


def _point_sources(sources: Path, bootstrap: str, endpoint: str, comments: str, frames: str) -> list[dict[str, Any]]:
    """The example's sources, pointed at these servers, topics and fresh consumer groups; frames from the
    start of their (new) topic, so none written before the adapter's consumer joined is skipped."""
    from eventferry.embedded.manifests import load_documents, manifest_files

    documents = [doc for path in manifest_files([sources]) for doc in load_documents(path)]
    for doc in documents:
        spec = doc.get("spec", {})
        if doc.get("kind") == "RocketMQSource":
            spec.update(endpoints=endpoint, topic=comments, consumerGroup=f"demo-{comments}")
        elif doc.get("kind") == "KafkaSource":
            spec.update(bootstrapServers=[bootstrap], topics=[frames], consumerGroup=f"demo-{frames}",
                        initialOffset="earliest")
    return documents


async def _create_kafka_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=FRAME_PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()


async def _with_progress(work: Any, say: Callable[[str], None], what: str) -> Any:
    """Awaits ``work``, saying every few seconds that it is still going."""
    task = asyncio.ensure_future(work)
    started = time.monotonic()
    while True:
        done, _ = await asyncio.wait({task}, timeout=PROGRESS_EVERY)
        if done:
            return task.result()
        say(f"... {what}: {time.monotonic() - started:.0f}s")
