"""The KafkaSource adapter: topic records -> CloudEvents -> sink, at least once.

- One consumer in the source's consumer group (aiokafka), auto-commit off. An offset is committed
  only when every record before it in its partition settled (the sink or the dead-letter sink
  accepted it), so a killed adapter replays and never skips.
- ``ordered``: one record at a time per partition, in offset order, partitions side by side.
  ``unordered``: records of a partition run concurrently. Either way a partition pauses while it holds
  ``max_in_flight_per_partition`` records, and every partition pauses while the adapter holds
  ``max_in_flight``: memory stays bounded whatever the sink does.
- A delivery that ends FAILED (retries and dead-letter sink exhausted) is tried again after a backoff,
  never committed past.
- A record that claims to be a CloudEvent but is malformed goes to the dead-letter sink (wrapped as a
  plain record, with ``knativeerrordata`` saying why); without a dead-letter sink it is logged,
  counted and committed, since retrying cannot repair it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import ssl
import tempfile
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    ConsumerStoppedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)

from eventferry.adapters.config import AdapterConfig, KafkaSettings, Tls
from eventferry.adapters.core import Abandoned, AdapterError, SinkClient, run_with
from eventferry.adapters.health import Health
from eventferry.adapters.kafka_mapping import map_record
from eventferry.adapters.logs import fields
from eventferry.adapters.metrics import AdapterMetrics
from eventferry.adapters.offsets import CommitTracker

log = logging.getLogger("eventferry.adapters.kafka")

AUTH_ERRORS = (SaslAuthenticationFailed, AuthenticationFailedError, UnsupportedSaslMechanismError)
FATAL_ERRORS = (*AUTH_ERRORS, TopicAuthorizationFailedError, GroupAuthorizationFailedError)
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds between attempts to (re)start the consumer
FETCH_BATCH = 500
IDLE_POLL_MS = 200  # longest wait of a fetch when no partition is paused (data ends it at once)
PAUSED_POLL_MS = 20
REVOKE_GRACE = 2.0  # seconds a rebalance waits for deliveries of revoked partitions before committing


async def run_kafka_adapter(config: AdapterConfig, stop: asyncio.Event, *, metrics: AdapterMetrics | None = None,
                            health: Health | None = None) -> None:
    """Runs a KafkaSource adapter until ``stop`` is set; raises AdapterError on a failure waiting cannot fix."""
    if config.kafka is None:
        raise ValueError("not a KafkaSource configuration")

    async def consume(sink: SinkClient, metrics: AdapterMetrics, health: Health, stopping: asyncio.Event) -> None:
        await KafkaAdapter(config, sink, metrics, health, stopping).run()

    await run_with(config, stop, consume, metrics, health)


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka connection options: bootstrap servers, security protocol, SASL and TLS."""
    options: dict[str, Any] = {"bootstrap_servers": list(settings.bootstrap_servers),
                               "security_protocol": settings.security_protocol}
    if settings.sasl is not None:
        options.update(sasl_mechanism=settings.sasl.mechanism, sasl_plain_username=settings.sasl.username,
                       sasl_plain_password=settings.sasl.password)
    if settings.tls is not None:
        options["ssl_context"] = ssl_context(settings.tls)
    return options


def ssl_context(tls: Tls) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=tls.ca_cert) if tls.ca_cert else ssl.create_default_context()
    if tls.cert and tls.key:
        # ssl loads a client key pair only from files: write them where only this process can read, briefly.
        with tempfile.TemporaryDirectory(prefix="eventferry-tls-") as directory:
            cert, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
            for path, text in ((cert, tls.cert), (key, tls.key)):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(text)
            context.load_cert_chain(cert, key)
    return context


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, adapter: KafkaAdapter) -> None:
        self.adapter = adapter

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.adapter.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.adapter.assigned(set(assigned))


class KafkaAdapter:
    def __init__(self, config: AdapterConfig, sink: SinkClient, metrics: AdapterMetrics, health: Health,
                 stopping: asyncio.Event) -> None:
        assert config.kafka is not None
        self.config = config
        self.settings = config.kafka
        self.limits = config.limits
        self.ordered = config.ordering == "ordered"
        self.sink = sink
        self.metrics = metrics
        self.health = health
        self.stopping = stopping
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
        self._warned_headers: set[str] = set()
        self._options: dict[str, Any] = {}

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        # Building a TLS context reads certificates (and writes a client key pair to a private temporary
        # directory): file I/O, kept off the event loop.
        self._options = await asyncio.to_thread(client_options, self.settings)
        failures = 0
        while not self.stopping.is_set():
            try:
                await self._start()
            except FATAL_ERRORS as error:
                raise AdapterError(self._explain(error)) from None
            except (KafkaError, OSError) as error:
                await self._close()
                cause = await self._diagnose() if isinstance(error, KafkaConnectionError) else None
                if cause is not None:
                    raise AdapterError(self._explain(cause)) from None
                message = self._explain(error)
                wait = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
                failures += 1
                self.health.set_not_ready(message)
                log.error("cannot start the Kafka consumer: %s; retrying in %.0fs", message, wait,
                          extra=fields(error=message, retry_in=wait))
                await self._sleep(wait)
                continue
            failures = 0
            try:
                await self._consume()
            except FATAL_ERRORS as error:
                raise AdapterError(self._explain(error)) from None
            except (KafkaError, OSError) as error:
                log.warning("Kafka consumer failed (%s); restarting it", error, extra=fields(error=str(error)))
            finally:
                await self._settle()
                await self._close()

    async def _start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            group_id=self.settings.consumer_group, client_id=f"eventferry-{self.config.namespace}-{self.config.name}",
            enable_auto_commit=False, auto_offset_reset=self.settings.initial_offset,
            max_poll_records=FETCH_BATCH, request_timeout_ms=30000, **self._options)
        self.consumer.subscribe(topics=list(self.settings.topics), listener=_Rebalance(self))
        await self.consumer.start()
        log.info("consuming %s as group %s from %s", ",".join(self.settings.topics), self.settings.consumer_group,
                 ",".join(self.settings.bootstrap_servers),
                 extra=fields(topics=list(self.settings.topics), group=self.settings.consumer_group,
                              ordering=self.config.ordering))

    async def _close(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            self.consumer = None
        for tp in self.tracker.partitions():
            self._forget(tp)
        self._paused.clear()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _diagnose(self) -> KafkaError | None:
        """aiokafka reports a failed bootstrap as 'unable to bootstrap'; one direct connection tells why."""
        options = dict(self._options)
        options.pop("bootstrap_servers")
        for server in self.settings.bootstrap_servers:
            host, _, port = server.rpartition(":")
            try:
                conn = await create_conn(host, int(port), request_timeout_ms=10000, **options)
                conn.close()
                return None
            except AUTH_ERRORS as error:
                return error
            except (KafkaError, OSError, TimeoutError, ValueError):
                continue
        return None

    def _explain(self, error: BaseException) -> str:
        if isinstance(error, AUTH_ERRORS):
            sasl = self.settings.sasl
            who = f" as user {sasl.username!r} with {sasl.mechanism}" if sasl else ""
            return (f"Kafka authentication failed{who} at {','.join(self.settings.bootstrap_servers)}: {error}; "
                    "check the SASL Secret keys (user, password, type) that spec.net.sasl refers to")
        if isinstance(error, TopicAuthorizationFailedError | GroupAuthorizationFailedError):
            return f"Kafka refused access to the topics or the consumer group {self.settings.consumer_group!r}: {error}"
        return f"{type(error).__name__}: {error}"

    # --- consuming -------------------------------------------------------------------------------------

    async def _consume(self) -> None:
        assert self.consumer is not None
        consumer = self.consumer
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
                        self.metrics.received(tp.topic, len(records))
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
            log.debug("offset %d of %s read again; already handled", record.offset, tp)
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
        self.metrics.in_flight(self.tracker.total_in_flight)

    def _spawn(self, tp: TopicPartition, coro: Any) -> asyncio.Task[None]:
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
        """Maps and settles one record; True when it settled (and may be committed)."""
        read_at = time.monotonic()
        while True:
            try:
                await self._settle_record(record, read_at)
                break
            except Abandoned:
                return False
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug, not a sink failure (those are handled inside): keep the record, never skip it.
                log.exception("handling offset %d of %s failed; retrying in 1s", record.offset, tp,
                              extra=fields(topic=tp.topic, partition=tp.partition, offset=record.offset))
                await asyncio.sleep(1)
        if self._epochs[tp] == epoch:
            self.tracker.finished(tp, record.offset)
            self.metrics.in_flight(self.tracker.total_in_flight)
            self._capacity.set()
        return True

    async def _settle_record(self, record: Any, read_at: float) -> None:
        mapped = map_record(record, namespace=self.config.namespace, name=self.config.name,
                            key_type=self.settings.key_type, overrides=self.config.ce_overrides)
        for header in mapped.skipped_headers:
            self.metrics.header_skipped("not_utf8")
            level = logging.DEBUG if header in self._warned_headers else logging.WARNING
            self._warned_headers.add(header)
            log.log(level, "header %r of %s is not UTF-8: left out of the event (further ones logged at debug)",
                    header, mapped.event.id, extra=fields(header=header, event_id=mapped.event.id))
        if mapped.malformed is not None:
            await self._malformed(record, mapped.event, mapped.malformed)
            return
        await self.sink.settle(mapped.event, read_at)

    async def _malformed(self, record: Any, wrapped: Any, reason: str) -> None:
        why = f"record claims to be a CloudEvent but is not valid: {reason}"
        if await self.sink.dead_letter(wrapped, why):
            self.metrics.malformed("dead_lettered")
            log.warning("offset %d of %s-%d: %s; sent to the dead-letter sink", record.offset, record.topic,
                        record.partition, why, extra=fields(topic=record.topic, partition=record.partition,
                                                            offset=record.offset, error=reason))
            return
        self.metrics.malformed("dropped")
        log.error("offset %d of %s-%d: %s; no dead-letter sink, so it is dropped (committed)", record.offset,
                  record.topic, record.partition, why,
                  extra=fields(topic=record.topic, partition=record.partition, offset=record.offset, error=reason))

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
            # A rebalance took the partition away: its new owner replays from the last commit (at least once).
            log.warning("commit of %s failed: %s", {str(tp): o for tp, o in offsets.items()}, error,
                        extra=fields(error=str(error)))
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
                self.metrics.lag(tp.topic, tp.partition, max(0, highwater - low))

    # --- rebalances and stopping --------------------------------------------------------------------------

    def assigned(self, assigned: set[TopicPartition]) -> None:
        self._paused.difference_update(assigned)
        self.health.set_ready()
        log.info("partitions assigned: %s", ", ".join(sorted(f"{tp.topic}-{tp.partition}" for tp in assigned)),
                 extra=fields(assigned=sorted(f"{tp.topic}-{tp.partition}" for tp in assigned)))

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
            task.cancel()
        self._lanes.pop(tp, None)
        self._workers.pop(tp, None)
        self._next_offset.pop(tp, None)
        self._uncommitted.pop(tp, None)
        self._paused.discard(tp)
        self.tracker.forget(tp)
        self.metrics.forget_lag(tp.topic, tp.partition)
        self.metrics.in_flight(self.tracker.total_in_flight)
        self._capacity.set()

    async def _settle(self) -> None:
        """Lets in-flight deliveries end (up to the drain timeout), commits what settled, gives back the rest."""
        tasks = [task for group in self._tasks.values() for task in group]
        if tasks:
            log.info("waiting up to %.0fs for %d in-flight deliveries", self.limits.drain_timeout, len(tasks),
                     extra=fields(in_flight=self.tracker.total_in_flight))
            _done, pending = await asyncio.wait(tasks, timeout=self.limits.drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.commit()
        if self.tracker.total_in_flight:
            log.info("%d records not delivered are left uncommitted: they are read again on restart",
                     self.tracker.total_in_flight, extra=fields(uncommitted=self.tracker.total_in_flight))
