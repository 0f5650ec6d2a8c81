"""The KafkaSource adapter: topic records -> CloudEvents -> sink, at least once.

- One consumer in the source's consumer group (aiokafka), auto-commit off, run by the shared consume
  loop (``eventferry.kafka.consumer``): an offset is committed only when every record before it in its
  partition settled (the sink or the dead-letter sink accepted it), so a killed adapter replays and
  never skips; ``ordered`` or not, with per-partition and total in-flight bounds.
- A delivery that ends FAILED (retries and dead-letter sink exhausted) is tried again after a backoff,
  never committed past.
- A record that claims to be a CloudEvent but is malformed goes to the dead-letter sink (wrapped as a
  plain record, with ``knativeerrordata`` saying why); without a dead-letter sink it is logged,
  counted and committed, since retrying cannot repair it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from eventferry.adapters.config import AdapterConfig
from eventferry.adapters.core import Abandoned, AdapterError, SinkClient, run_with
from eventferry.adapters.health import AdapterHealth
from eventferry.adapters.kafka_mapping import map_record
from eventferry.adapters.logs import fields
from eventferry.adapters.metrics import AdapterMetrics
from eventferry.kafka.connection import AUTH_ERRORS, connection_failure, explain_connection_failure
from eventferry.kafka.consumer import FETCH_BATCH, ConsumerLoop, LoopLimits, LoopObserver

log = logging.getLogger("eventferry.adapters.kafka")

FATAL_ERRORS = (*AUTH_ERRORS, TopicAuthorizationFailedError, GroupAuthorizationFailedError)
NET_SECRETS = "the Secret keys spec.net refers to (sasl: user, password, type; tls: caCert, cert, key)"
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds between attempts to (re)start the consumer


async def run_kafka_adapter(config: AdapterConfig, stop: asyncio.Event, *, metrics: AdapterMetrics | None = None,
                            health: AdapterHealth | None = None) -> None:
    """Runs a KafkaSource adapter until ``stop`` is set; raises AdapterError on a failure waiting cannot fix."""
    if config.kafka is None:
        raise ValueError("not a KafkaSource configuration")

    async def consume(sink: SinkClient, metrics: AdapterMetrics, health: AdapterHealth,
                      stopping: asyncio.Event) -> None:
        await KafkaAdapter(config, sink, metrics, health, stopping).run()

    await run_with(config, stop, consume, metrics, health)


class _Observer(LoopObserver):
    def __init__(self, adapter: KafkaAdapter) -> None:
        self.adapter = adapter

    def assigned(self, partitions: set[TopicPartition]) -> None:
        self.adapter.health.set_ready()
        names = sorted(f"{tp.topic}-{tp.partition}" for tp in partitions)
        log.info("partitions assigned: %s", ", ".join(names), extra=fields(assigned=names))

    def received(self, topic: str, count: int) -> None:
        self.adapter.metrics.received(topic, count)

    def in_flight(self, count: int) -> None:
        self.adapter.metrics.in_flight(count)

    def lag(self, tp: TopicPartition, lag: int) -> None:
        self.adapter.metrics.lag(tp.topic, tp.partition, lag)

    def forgot(self, tp: TopicPartition) -> None:
        self.adapter.metrics.forget_lag(tp.topic, tp.partition)


class KafkaAdapter:
    def __init__(self, config: AdapterConfig, sink: SinkClient, metrics: AdapterMetrics, health: AdapterHealth,
                 stopping: asyncio.Event) -> None:
        assert config.kafka is not None
        self.config = config
        self.settings = config.kafka
        self.limits = config.limits
        self.sink = sink
        self.metrics = metrics
        self.health = health
        self.stopping = stopping
        self.consumer: AIOKafkaConsumer | None = None
        limits = LoopLimits(max_in_flight=self.limits.max_in_flight,
                            max_in_flight_per_partition=self.limits.max_in_flight_per_partition,
                            commit_interval=self.limits.commit_interval, drain_timeout=self.limits.drain_timeout)
        self.loop = ConsumerLoop(f"kafka source {config.key}", self._handle, stopping,
                                 ordered=config.ordering == "ordered", limits=limits,
                                 offset_reset=self.settings.initial_offset, observer=_Observer(self))
        self._warned_headers: set[str] = set()
        self._options: dict[str, Any] = {}

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        # Building a TLS context reads certificates (and writes a client key pair to a private temporary
        # directory): file I/O, kept off the event loop.
        self._options = await asyncio.to_thread(self.settings.client_options)
        failures = 0
        while not self.stopping.is_set():
            try:
                await self._start()
            except FATAL_ERRORS as error:
                raise AdapterError(self._explain(error)) from None
            except (KafkaError, OSError) as error:
                await self._close()
                cause = await connection_failure(self._options) if isinstance(error, KafkaConnectionError) else None
                if isinstance(cause, (*AUTH_ERRORS, ssl.SSLError)):
                    # Credentials and TLS are read once, at start: retrying cannot fix them; the pod restarts.
                    raise AdapterError(self._explain(cause)) from None
                error = cause or error
                message = self._explain(error)
                wait = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
                failures += 1
                self.health.set_not_ready(message)
                log.error("cannot start the Kafka consumer: %s; retrying in %.0fs", message, wait,
                          extra=fields(error=message, retry_in=wait))
                await self._sleep(wait)
                continue
            failures = 0
            assert self.consumer is not None
            try:
                await self.loop.consume(self.consumer)
            except FATAL_ERRORS as error:
                raise AdapterError(self._explain(error)) from None
            except (KafkaError, OSError) as error:
                log.warning("Kafka consumer failed (%s); restarting it", error, extra=fields(error=str(error)))
            finally:
                await self._close()

    async def _start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            group_id=self.settings.consumer_group, client_id=f"eventferry-{self.config.namespace}-{self.config.name}",
            enable_auto_commit=False, auto_offset_reset=self.settings.initial_offset,
            max_poll_records=FETCH_BATCH, request_timeout_ms=30000, **self._options)
        self.consumer.subscribe(topics=list(self.settings.topics), listener=self.loop.listener(self.consumer))
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

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    def _explain(self, error: BaseException) -> str:
        if isinstance(error, TopicAuthorizationFailedError | GroupAuthorizationFailedError):
            return f"Kafka refused access to the topics or the consumer group {self.settings.consumer_group!r}: {error}"
        return explain_connection_failure(error, self.settings.bootstrap_servers, self.settings.sasl, NET_SECRETS)

    # --- one record ----------------------------------------------------------------------------------------

    async def _handle(self, record: Any) -> bool:
        """Maps and settles one record; False when the adapter stopped before it settled."""
        try:
            await self._settle_record(record, time.monotonic())
        except Abandoned:
            return False
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
