"""A Kafka consumer loop that commits only the contiguous prefix of records whose work ended.

Unordered: records run concurrently up to a bound, partitions pause while the bound is reached.
Ordered: one record at a time per partition, partitions side by side. Either way a record whose
handler has not returned is never committed, so a crash replays it and skips nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from eventferry.delivery.offsets import OffsetTracker

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[None]]  # gets an aiokafka ConsumerRecord; returns when its work is durable


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ConsumerLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.loop.commit(only=set(revoked))
        for tp in revoked:
            self.loop.forget(tp)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.loop.assigned.set()


class ConsumerLoop:
    def __init__(self, name: str, make_consumer: Callable[[], AIOKafkaConsumer], subscription: dict[str, Any],
                 handle: Handler, *, ordered: bool, max_in_flight: int = 2000, commit_interval: float = 0.5) -> None:
        self.name = name
        self.make_consumer = make_consumer
        self.subscription = subscription  # subscribe() arguments: topics=[...] or pattern="..."
        self.handle = handle
        self.ordered = ordered
        self.max_in_flight = max_in_flight
        self.commit_interval = commit_interval
        self.assigned = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._partition_queues: dict[TopicPartition, collections.deque[Any]] = {}
        self._partition_workers: dict[TopicPartition, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._paused = False
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._consume()
            except (KafkaError, OSError) as error:
                log.warning("%s: Kafka consumer failed (%s), restarting in 2s", self.name, error)
                await self._close_consumer()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 2)

    async def _consume(self) -> None:
        self.consumer = self.make_consumer()
        self.consumer.subscribe(**self.subscription, listener=_Rebalance(self))
        await self.consumer.start()
        last_commit = time.monotonic()
        try:
            while not self._stopping.is_set():
                batches = await self.consumer.getmany(timeout_ms=100, max_records=500)
                for tp, records in batches.items():
                    tracker = self._trackers.setdefault(tp, OffsetTracker())
                    for record in records:
                        tracker.add(record.offset)
                        self._start(tp, record, tracker)
                self._flow_control()
                if time.monotonic() - last_commit >= self.commit_interval:
                    await self.commit()
                    last_commit = time.monotonic()
        finally:
            await self._settle()
            await self._close_consumer()

    def _start(self, tp: TopicPartition, record: Any, tracker: OffsetTracker) -> None:
        self._in_flight += 1
        if self.ordered:
            self._partition_queues.setdefault(tp, collections.deque()).append(record)
            worker = self._partition_workers.get(tp)
            if worker is None or worker.done():
                self._partition_workers[tp] = self._spawn(self._drain_partition(tp, tracker))
        else:
            self._spawn(self._run_one(record, tracker))

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _drain_partition(self, tp: TopicPartition, tracker: OffsetTracker) -> None:
        queue = self._partition_queues[tp]
        while queue:
            await self._run_one(queue.popleft(), tracker)

    async def _run_one(self, record: Any, tracker: OffsetTracker) -> None:
        try:
            while True:
                try:
                    await self.handle(record)
                    tracker.done(record.offset)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The handler owns retries; this is a bug or an outage: keep the record, never skip it.
                    log.exception("%s: handling offset %s of %s failed; retrying in 1s", self.name, record.offset,
                                  record.topic)
                    await asyncio.sleep(1)
        finally:
            self._in_flight -= 1

    def _flow_control(self) -> None:
        assert self.consumer is not None
        if not self._paused and self._in_flight >= self.max_in_flight:
            self.consumer.pause(*self.consumer.assignment())
            self._paused = True
        elif self._paused and self._in_flight <= self.max_in_flight // 2:
            self.consumer.resume(*self.consumer.assignment())
            self._paused = False

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        if self.consumer is None:
            return
        offsets = {}
        for tp, tracker in self._trackers.items():
            if only is not None and tp not in only:
                continue
            position = tracker.advance()
            if position is not None:
                offsets[tp] = position
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as error:
            # A rebalance took the partition away: its new owner replays from the last commit (at least once).
            log.warning("%s: commit of %s failed: %s", self.name, offsets, error)

    def forget(self, tp: TopicPartition) -> None:
        self._trackers.pop(tp, None)
        self._partition_queues.pop(tp, None)
        worker = self._partition_workers.pop(tp, None)
        if worker is not None:
            worker.cancel()

    async def _settle(self, timeout: float = 5.0) -> None:
        """On stop: let running deliveries end briefly, commit what ended, abandon the rest (replayed later)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.commit()

    async def _close_consumer(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            self.consumer = None
        self._trackers.clear()
        self._partition_queues.clear()
        self._partition_workers.clear()
        self._paused = False

    def stop(self) -> None:
        self._stopping.set()
