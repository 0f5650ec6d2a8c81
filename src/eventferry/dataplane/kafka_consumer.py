"""A Kafka consumer loop that commits only the contiguous prefix of records whose work ended.

Unordered: records run concurrently up to a bound, partitions pause while the bound is reached.
Ordered: one record at a time per partition, partitions side by side. Either way a record whose
handler has not returned is never committed, so a crash replays it and skips nothing.

What bounds the replay after a crash to what was in flight plus one commit interval:
- static group membership (``group_instance_id``): a restarted process takes its partitions back at
  once instead of waiting out its dead predecessor's session and a second rebalance;
- on a rebalance, deliveries of revoked partitions get a grace period and their progress is
  committed before the partitions go; a commit that fails is kept and tried again;
- a record read again after a rebalance (the position moved back) while it is in flight or done
  here is not handled twice.
And what makes "ready" true to its word: a group with no committed offset (a new ordered Trigger
starting at the end of the topic) resolves and commits its starting position before the loop
reports itself assigned, so an event written after readiness is seen even across a crash.
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
REVOKE_GRACE = 2.0  # seconds a rebalance waits for deliveries of revoked partitions before committing


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ConsumerLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.loop.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.loop.on_assigned(set(assigned))


class ConsumerLoop:
    def __init__(self, name: str, make_consumer: Callable[[], AIOKafkaConsumer], subscription: dict[str, Any],
                 handle: Handler, *, ordered: bool, offset_reset: str = "earliest", max_in_flight: int = 2000,
                 commit_interval: float = 0.5) -> None:
        self.name = name
        self.offset_reset = offset_reset  # where a group with no committed offset starts: "earliest" or "latest"
        self.make_consumer = make_consumer
        self.subscription = subscription  # subscribe() arguments: topics=[...] or pattern="..."
        self.handle = handle
        self.ordered = ordered
        self.max_in_flight = max_in_flight
        self.commit_interval = commit_interval
        self.assigned = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._next_offset: dict[TopicPartition, int] = {}  # one past the last record read, per partition
        self._uncommitted: dict[TopicPartition, int] = {}  # positions whose commit has not succeeded yet
        self._partition_queues: dict[TopicPartition, collections.deque[Any]] = {}
        self._partition_workers: dict[TopicPartition, asyncio.Task[None]] = {}
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = collections.defaultdict(set)
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
                        self._start(tp, record, tracker)
                self._flow_control()
                if time.monotonic() - last_commit >= self.commit_interval:
                    await self.commit()
                    last_commit = time.monotonic()
        finally:
            await self._settle()
            await self._close_consumer()

    def _start(self, tp: TopicPartition, record: Any, tracker: OffsetTracker) -> None:
        expected = self._next_offset.get(tp)
        if expected is not None and record.offset < expected:
            return  # read again after the position moved back: in flight or handled here already
        self._next_offset[tp] = record.offset + 1
        tracker.add(record.offset)
        self._in_flight += 1
        if self.ordered:
            self._partition_queues.setdefault(tp, collections.deque()).append(record)
            worker = self._partition_workers.get(tp)
            if worker is None or worker.done():
                self._partition_workers[tp] = self._spawn(tp, self._drain_partition(tp, tracker))
        else:
            self._spawn(tp, self._run_one(record, tracker))

    def _spawn(self, tp: TopicPartition, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        tasks = self._tasks[tp]
        tasks.add(task)
        task.add_done_callback(tasks.discard)
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
        for tp, tracker in self._trackers.items():
            position = tracker.advance()
            if position is not None:
                self._uncommitted[tp] = position
        offsets = {tp: o for tp, o in self._uncommitted.items() if only is None or tp in only}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as error:
            # Kept in _uncommitted and tried again at the next interval (or by the partition's next owner's
            # replay, at least once, if a rebalance took it away meanwhile).
            log.warning("%s: commit of %s failed: %s", self.name, offsets, error)
            return
        for tp, offset in offsets.items():
            if self._uncommitted.get(tp) == offset:
                del self._uncommitted[tp]

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Pins the start of partitions that have no committed offset yet, then reports the loop assigned.

        Without the pin, a consumer starting at "latest" settles where the end is when it first fetches,
        after readiness was reported; a crash before its first commit would settle at a later end again.
        Either way events acknowledged in between would be skipped.
        """
        consumer = self.consumer
        if consumer is not None and assigned:
            try:
                fresh = [tp for tp in sorted(assigned) if await consumer.committed(tp) is None]
                if fresh:
                    starts = await (consumer.beginning_offsets(fresh) if self.offset_reset == "earliest"
                                    else consumer.end_offsets(fresh))
                    for tp, offset in starts.items():
                        consumer.seek(tp, offset)
                    await consumer.commit(dict(starts))
            except KafkaError as error:
                log.warning("%s: could not pin the starting offsets of %s: %s", self.name, sorted(map(str, assigned)),
                            error)
                return  # not ready: the next rebalance (or restart of the consumer) tries again
        self.assigned.set()

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        tasks = [task for tp in revoked for task in self._tasks.get(tp, ())]
        if tasks:
            await asyncio.wait(tasks, timeout=REVOKE_GRACE)
        await self.commit(only=revoked)
        for tp in revoked:
            self.forget(tp)

    def forget(self, tp: TopicPartition) -> None:
        self._trackers.pop(tp, None)
        self._next_offset.pop(tp, None)
        self._uncommitted.pop(tp, None)
        waiting = self._partition_queues.pop(tp, None)
        self._in_flight -= len(waiting or ())  # records that were queued behind the running one never start
        worker = self._partition_workers.pop(tp, None)
        if worker is not None:
            worker.cancel()
        for task in list(self._tasks.pop(tp, ())):
            task.cancel()  # not ours to commit any more; the partition's next owner replays it

    async def _settle(self, timeout: float = 5.0) -> None:
        """On stop: let running deliveries end briefly, commit what ended, abandon the rest (replayed later)."""
        tasks = [task for group in self._tasks.values() for task in group]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.commit()

    async def _close_consumer(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            self.consumer = None
        self._trackers.clear()
        self._next_offset.clear()
        self._uncommitted.clear()
        self._partition_queues.clear()
        self._partition_workers.clear()
        self._tasks.clear()
        self._paused = False

    def stop(self) -> None:
        self._stopping.set()
