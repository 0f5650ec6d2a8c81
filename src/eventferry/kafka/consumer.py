"""The one Kafka consume loop: records handed to a handler, offsets committed only past settled records.

Used by the Kafka broker class (its main, retry and ordered consumers) and the KafkaSource adapter.

- ``ordered``: one record at a time per partition, in offset order, partitions side by side.
  Unordered: records of a partition run concurrently.
- Flow control: a partition pauses while it holds ``max_in_flight_per_partition`` records, every
  partition pauses while the loop holds ``max_in_flight``: memory stays bounded whatever the handler does.
- Commits (every ``commit_interval``): per partition, only the contiguous prefix of settled records
  (``CommitTracker``), so a crash replays what had not settled and skips nothing. A commit that
  fails is kept and tried again.
- Rebalances: revoked partitions' records get ``REVOKE_GRACE`` to settle, their progress is committed,
  then they are forgotten (an epoch makes late finishers of a forgotten partition count for nothing).
  A record read again after the position moved back is not handled twice.
- A partition with no committed offset (a new group) has its start pinned, sought and committed
  before the loop reports it assigned: an event written after that is seen, even across a crash.
- Stopping: records in flight get ``drain_timeout`` to settle, what settled is committed, the rest is
  given back (read again by the next consumer).

The loop runs one consumer until it stops or fails (``consume``); restarting a failed consumer is the
caller's business, since what counts as fatal differs (bad credentials end an adapter).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError

from eventferry.kafka.offsets import CommitTracker

log = logging.getLogger(__name__)

FETCH_BATCH = 500
IDLE_POLL_MS = 200  # longest wait of a fetch when no partition is paused (data ends it at once)
PAUSED_POLL_MS = 20
REVOKE_GRACE = 2.0  # seconds a rebalance waits for records of revoked partitions to settle before committing

# Gets an aiokafka ConsumerRecord; True once its work is settled (may be committed), False when it was
# abandoned because the loop is stopping (never committed). Raising is a bug: the record is tried again.
Handler = Callable[[Any], Awaitable[bool]]


@dataclass(frozen=True)
class LoopLimits:
    max_in_flight: int = 1000
    max_in_flight_per_partition: int = 100
    commit_interval: float = 0.5
    drain_timeout: float = 10.0


# Where partitions with no committed offset start, for those it knows (others: ``offset_reset``).
FreshStarts = Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]]


class LoopObserver:
    """What the loop tells its owner; every method may be left as it is."""

    def assigned(self, partitions: set[TopicPartition]) -> None: ...
    def received(self, topic: str, count: int) -> None: ...
    def in_flight(self, count: int) -> None: ...
    def lag(self, tp: TopicPartition, lag: int) -> None: ...
    def forgot(self, tp: TopicPartition) -> None: ...


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ConsumerLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.loop.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.loop.on_assigned(set(assigned))


class ConsumerLoop:
    def __init__(self, name: str, handle: Handler, stopping: asyncio.Event, *, ordered: bool,
                 limits: LoopLimits | None = None, offset_reset: str = "earliest",
                 observer: LoopObserver | None = None, fresh_starts: FreshStarts | None = None) -> None:
        self.name = name
        self.handle = handle
        self.stopping = stopping
        self.ordered = ordered
        self.limits = limits or LoopLimits()
        self.offset_reset = offset_reset  # where a partition with no committed offset starts
        self.fresh_starts = fresh_starts  # or there, where it names one
        self.observer = observer or LoopObserver()
        self.assigned = asyncio.Event()  # set once partitions were assigned and their starts pinned
        self.consumer: AIOKafkaConsumer | None = None
        self.tracker: CommitTracker[TopicPartition] = CommitTracker()
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = collections.defaultdict(set)
        self._lanes: dict[TopicPartition, collections.deque[Any]] = {}  # ordered: records waiting, per partition
        self._workers: dict[TopicPartition, asyncio.Task[None]] = {}  # ordered: the task draining each lane
        self._epochs: dict[TopicPartition, int] = collections.defaultdict(int)
        self._next_offset: dict[TopicPartition, int] = {}
        self._uncommitted: dict[TopicPartition, int] = {}  # positions whose commit has not succeeded yet
        self._paused: set[TopicPartition] = set()
        self._capacity = asyncio.Event()

    def listener(self, consumer: AIOKafkaConsumer) -> ConsumerRebalanceListener:
        """The rebalance listener to subscribe ``consumer`` with, before it starts: its first assignment
        may come while it starts, and its starting offsets are pinned through it."""
        self.consumer = consumer
        return _Rebalance(self)

    async def consume(self, consumer: AIOKafkaConsumer) -> None:
        """Runs ``consumer`` (subscribed with ``listener()`` and started) until ``stopping`` is set or Kafka
        fails (the error is raised); either way settles what it holds and forgets the consumer."""
        self.consumer = consumer
        try:
            await self._fetch_and_dispatch(consumer)
        finally:
            await self._drain_on_stop()
            self._forget_all()
            self.consumer = None

    # --- consuming -------------------------------------------------------------------------------------

    async def _fetch_and_dispatch(self, consumer: AIOKafkaConsumer) -> None:
        last_commit = time.monotonic()
        while not self.stopping.is_set():
            self._flow_control()
            free = self.limits.max_in_flight - self.tracker.total_in_flight
            room = [tp for tp in consumer.assignment() if tp not in self._paused]
            if free <= 0 or not room:
                self._capacity.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._capacity.wait(), self.limits.commit_interval)
            else:
                try:
                    # Only partitions with room. A short wait while some are paused, so that a paused
                    # partition resumes soon after it drained rather than after a long empty fetch.
                    batches = await consumer.getmany(
                        *room, timeout_ms=PAUSED_POLL_MS if self._paused else IDLE_POLL_MS,
                        max_records=min(free, self.limits.max_in_flight_per_partition, FETCH_BATCH))
                except ConsumerStoppedError:
                    return
                for tp, records in batches.items():
                    if records:
                        self.observer.received(tp.topic, len(records))
                    for record in records:
                        self._dispatch(tp, record)
            if time.monotonic() - last_commit >= self.limits.commit_interval:
                await self.commit()
                self._report_lag()
                last_commit = time.monotonic()

    def _dispatch(self, tp: TopicPartition, record: Any) -> None:
        expected = self._next_offset.get(tp)
        if expected is not None and record.offset < expected:
            # Read again (the client moved its position back): that record is in flight or settled already.
            log.debug("%s: offset %d of %s read again; already handled", self.name, record.offset, tp)
            return
        self.tracker.started(tp, record.offset)
        self._next_offset[tp] = record.offset + 1
        epoch = self._epochs[tp]
        if self.ordered:
            lane = self._lanes.get(tp)
            if lane is None:
                lane = self._lanes[tp] = collections.deque()
            lane.append(record)
            worker = self._workers.get(tp)
            if worker is None or worker.done():  # the partition's worker ended with its lane empty: start one
                self._workers[tp] = self._spawn(tp, self._drain_lane(tp, lane, epoch))
        else:
            self._spawn(tp, self._process(tp, record, epoch))
        self.observer.in_flight(self.tracker.total_in_flight)

    def _spawn(self, tp: TopicPartition, coro: Awaitable[Any]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        tasks = self._tasks[tp]
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    async def _drain_lane(self, tp: TopicPartition, lane: collections.deque[Any], epoch: int) -> None:
        while lane and not self.stopping.is_set():
            if not await self._process(tp, lane[0], epoch):
                return
            lane.popleft()

    async def _process(self, tp: TopicPartition, record: Any, epoch: int) -> bool:
        """Hands one record to the handler; True when it settled (and may be committed)."""
        while True:
            try:
                if not await self.handle(record):
                    return False
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                # The handler owns retries; this is a bug or an outage: keep the record, never skip it.
                log.exception("%s: handling offset %d of %s failed; retrying in 1s", self.name, record.offset, tp)
                await asyncio.sleep(1)
        if self._epochs[tp] == epoch:
            self.tracker.finished(tp, record.offset)
            self.observer.in_flight(self.tracker.total_in_flight)
            self._capacity.set()
        return True

    def _flow_control(self) -> None:
        if self.consumer is None:
            return
        per_partition, total_max = self.limits.max_in_flight_per_partition, self.limits.max_in_flight
        total = self.tracker.total_in_flight
        pause, resume = [], []
        for tp in self.consumer.assignment():
            held = self.tracker.in_flight(tp)
            if tp not in self._paused:
                if held >= per_partition or total >= total_max:
                    pause.append(tp)
            elif held <= per_partition // 2 and total <= total_max // 2:
                resume.append(tp)
        if pause:
            self.consumer.pause(*pause)
            self._paused.update(pause)
        if resume:
            self.consumer.resume(*resume)
            self._paused.difference_update(resume)

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        if self.consumer is None:
            return
        self._uncommitted.update(self.tracker.commits())
        offsets = {tp: offset for tp, offset in self._uncommitted.items() if only is None or tp in only}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as error:
            # Kept and tried again at the next interval; if a rebalance took the partition away meanwhile,
            # its new owner replays from the last commit (at least once).
            log.warning("%s: commit of %s failed: %s", self.name, {str(tp): o for tp, o in offsets.items()}, error)
            return
        for tp, offset in offsets.items():
            if self._uncommitted.get(tp) == offset:
                del self._uncommitted[tp]

    def _report_lag(self) -> None:
        if self.consumer is None:
            return
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            low = self.tracker.lowest_unfinished(tp)
            if low is None:
                low = self._next_offset.get(tp)
            if highwater is not None and low is not None:
                self.observer.lag(tp, max(0, highwater - low))

    # --- rebalances and stopping -----------------------------------------------------------------------

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Pins the start of partitions that have no committed offset yet, then reports them assigned.

        Without the pin, a consumer starting at "latest" settles where the end is when it first fetches,
        after readiness was reported; a crash before its first commit would settle at a later end again.
        Either way events acknowledged in between would be skipped.
        """
        self._paused.difference_update(assigned)
        consumer = self.consumer
        if consumer is not None and assigned:
            try:
                fresh = [tp for tp in sorted(assigned) if await consumer.committed(tp) is None]
                if fresh:
                    starts = await (consumer.beginning_offsets(fresh) if self.offset_reset == "earliest"
                                    else consumer.end_offsets(fresh))
                    if self.fresh_starts is not None:
                        starts.update(await self.fresh_starts(fresh))
                    for tp, offset in starts.items():
                        consumer.seek(tp, offset)
                    await consumer.commit(dict(starts))
            except KafkaError as error:
                log.warning("%s: could not pin the starting offsets of %s: %s", self.name,
                            sorted(map(str, assigned)), error)
                return  # not assigned as far as readiness goes: the next rebalance (or restart) tries again
        self.assigned.set()
        self.observer.assigned(assigned)

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        tasks = [task for tp in revoked for task in self._tasks.get(tp, ())]
        if tasks:
            await asyncio.wait(tasks, timeout=REVOKE_GRACE)
        await self.commit(only=revoked)
        for tp in revoked:
            self._forget(tp)

    def _forget(self, tp: TopicPartition) -> None:
        self._epochs[tp] += 1
        for task in list(self._tasks.pop(tp, ())):
            task.cancel()  # not ours to commit any more; the partition's next owner replays it
        self._lanes.pop(tp, None)
        self._workers.pop(tp, None)
        self._next_offset.pop(tp, None)
        self._uncommitted.pop(tp, None)
        self._paused.discard(tp)
        self.tracker.forget(tp)
        self.observer.forgot(tp)
        self.observer.in_flight(self.tracker.total_in_flight)
        self._capacity.set()

    def _forget_all(self) -> None:
        for tp in self.tracker.partitions():
            self._forget(tp)
        self._paused.clear()

    async def _drain_on_stop(self) -> None:
        """Lets records in flight settle (up to the drain timeout), commits what settled, gives back the rest."""
        tasks = [task for group in self._tasks.values() for task in group]
        if tasks:
            log.info("%s: waiting up to %.0fs for %d records in flight", self.name, self.limits.drain_timeout,
                     self.tracker.total_in_flight)
            _done, pending = await asyncio.wait(tasks, timeout=self.limits.drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.commit()
        if self.tracker.total_in_flight:
            log.info("%s: %d records not settled are left uncommitted: they are read again on restart", self.name,
                     self.tracker.total_in_flight)
