"""The Kafka broker class: durable, each event read once, a failing subscriber isolated.

- Ingress writes each event to the Broker's topic (CloudEvents Kafka binary binding) and answers
  202 only after the write is acknowledged by all in-sync replicas.
- Unordered Triggers share ONE consumer group per Broker: each record is read once and matched
  through the trigger index, so the cost does not grow with the number of Triggers. A delivery
  gets one attempt in place; if ``next_step`` says retry, the event moves to a durable retry topic of
  its Trigger (``<topic>.retry.<trigger>``) and the main offset moves on, so a failing subscriber holds
  back neither the other Triggers nor their commits. A retry consumer (one per Broker, pattern
  subscription) delivers parked events when due, parks them again or dead-letters them.
- An event whose dead-letter delivery fails is parked again, never committed as done: retried, not lost.
- Ordered Triggers keep a consumer group of their own and deliver one record at a time per
  partition, retrying in place, as ordering needs.
- Paced Triggers (``spec.pacing``) and autoscaled ones (held while their subscriber has no ready endpoint)
  keep a consumer group of their own too, so that events waiting for their pace or their subscriber wait
  in the log (the group's lag), durably, and hold back no other Trigger. Its in-flight records
  are few (``paced_in_flight``); the rest stays in Kafka. A Trigger that becomes paced starts its group
  where the shared group has committed, and leaves the shared group only once its own group has its
  partitions: some events may come twice, none is skipped.
See docs/kafka-broker.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from eventferry.contract import model
from eventferry.contract.activation import TriggerBacklog
from eventferry.contract.kafka_names import broker_topic, group_prefix, retry_topic, retry_topic_pattern, topic_safe
from eventferry.dataplane.admission import Unavailable
from eventferry.dataplane.filters import TriggerIndex
from eventferry.dataplane.metrics import BrokerMetrics
from eventferry.dataplane.trigger_delivery import CompiledTrigger, TriggerDelivery, compile_trigger
from eventferry.delivery import Sender
from eventferry.delivery.deliver import dead_letter_event
from eventferry.delivery.steps import DeadLetter, Delivered, Drop, Stage, next_step
from eventferry.events import CloudEvent, InvalidEvent
from eventferry.events.event import attribute_text
from eventferry.events.kafka import from_kafka, to_kafka
from eventferry.kafka.connection import (
    CredentialsError,
    Sasl,
    Tls,
    broker_security,
    client_options,
    connection_failure,
    explain_connection_failure,
)
from eventferry.kafka.consumer import ConsumerLoop, FreshStarts, LoopLimits
from eventferry.net.secrets import SecretReader

log = logging.getLogger(__name__)

H_TRIGGER = "eventferry-trigger"
H_ATTEMPTS = "eventferry-attempts"
H_NOT_BEFORE = "eventferry-not-before"  # epoch milliseconds
H_STAGE = "eventferry-stage"  # "subscriber" or "dead-letter"
RETRY_HEADERS = (H_TRIGGER, H_ATTEMPTS, H_NOT_BEFORE, H_STAGE)


@dataclass(frozen=True)
class KafkaLimits:
    in_flight_records: int = 2000  # per consumer; partitions pause past it, so memory stays bounded
    retry_topic_partitions: int = 3
    commit_interval: float = 0.5
    paced_in_flight: int = 200  # per paced Trigger's consumer: what waits for its pace in memory
    session_timeout_ms: int = 10_000  # how long a replica that died and did not come back holds its partitions


class KafkaUnreachable(Exception):
    """The Broker's Kafka could not be reached at start; the message says why."""


class KafkaBroker:
    def __init__(self, spec: model.Broker, sender: Sender, metrics: BrokerMetrics,
                 default_bootstrap: list[str] | None = None, limits: KafkaLimits | None = None,
                 consume: bool = True, instance_id: str | None = None,
                 read_secret: SecretReader | None = None) -> None:
        settings = spec.kafka
        if settings is None:
            if not default_bootstrap:
                raise ValueError(f"Kafka broker {spec.key} names no bootstrap servers: set them in the broker's "
                                 "config or give the data plane a default (--kafka-bootstrap-servers)")
            settings = model.KafkaSettings(bootstrap_servers=default_bootstrap,
                                           topic=broker_topic(spec.namespace, spec.name))
        self.settings = settings
        self.read_secret = read_secret  # for the credentials Secret the contract names (its values stay here)
        self._security: tuple[Sasl | None, Tls | None] = (None, None)
        self.consume = consume  # False on ingress-only replicas
        self.instance_id = instance_id  # this replica's static group membership id, stable across restarts
        self.spec = spec
        self.limits = limits or KafkaLimits()
        self.sender = sender
        self.metrics = metrics
        self.trigger_delivery = TriggerDelivery(spec, sender, metrics, self.ingest)
        self.group_prefix = group_prefix(spec.namespace, spec.name)
        self._producer: AIOKafkaProducer | None = None
        self._index: TriggerIndex[CompiledTrigger] = TriggerIndex()
        self._triggers: dict[str, CompiledTrigger] = {}
        # "main", "retry", and one per ordered Trigger: each loop with the event that stops it
        self._loops: dict[str, tuple[ConsumerLoop, asyncio.Event]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._known_topics: set[str] = set()
        self._background: set[asyncio.Future[None]] = set()
        self._parked: collections.Counter[str] = collections.Counter()  # retry records waiting until due, by Trigger
        self._started = False
        self._apply_triggers(spec)

    # --- lifecycle ------------------------------------------------------------------------------

    def _client_args(self) -> dict[str, Any]:
        return client_options(self.settings.bootstrap_servers, *self._security)

    async def _load_credentials(self) -> None:
        secret = self.settings.auth_secret
        if secret is None:
            return
        where = f"Secret {secret.namespace}/{secret.name} (auth.secret.ref.name of Broker {self.spec.key}'s config)"
        if self.read_secret is None:
            raise CredentialsError(f"{where}: this data plane cannot read Secrets")
        values = await self.read_secret(secret.namespace, secret.name)
        if values is None:
            raise CredentialsError(f"{where} does not exist")
        self._security = broker_security(values, where)

    async def start(self) -> None:
        await self._load_credentials()
        try:
            await self._start_clients()
        except KafkaConnectionError as error:
            secret = self.settings.auth_secret
            where = f"Secret {secret.namespace}/{secret.name}" if secret else "the Broker's config (no credentials)"
            cause = await connection_failure(self._client_args())
            raise KafkaUnreachable(f"Broker {self.spec.key}: " + explain_connection_failure(
                cause or error, self.settings.bootstrap_servers, self._security[0], where)) from None

    async def _start_clients(self) -> None:
        await self._ensure_topic(self.settings.topic, self.settings.partitions, self.settings.replication_factor)
        self._producer = AIOKafkaProducer(**self._client_args(), acks="all", enable_idempotence=True,
                                          linger_ms=1, max_request_size=8 * 1024 * 1024)
        await self._producer.start()
        self._started = True
        if not self.consume:
            return
        self._start_loop("main", {"topics": [self.settings.topic]}, self._handle_main, ordered=False,
                         offset_reset="earliest")
        retry_pattern = "^" + retry_topic_pattern(self.settings.topic) + "$"
        self._start_loop("retry", {"pattern": retry_pattern}, self._handle_retry, ordered=False,
                         offset_reset="earliest")
        self._sync_ordered_loops()

    def _start_loop(self, key: str, subscription: dict[str, Any], handler: Any, *, ordered: bool,
                    offset_reset: str, group: str | None = None, in_flight: int | None = None,
                    fresh_starts: FreshStarts | None = None) -> None:
        group_id = group or f"{self.group_prefix}-{key}"

        def make_consumer() -> AIOKafkaConsumer:
            # Static membership: a restarted replica (same instance id) takes its partitions back at once,
            # instead of waiting out the session of the process it replaces.
            return AIOKafkaConsumer(**self._client_args(), group_id=group_id, enable_auto_commit=False,
                                    auto_offset_reset=offset_reset, fetch_max_wait_ms=50,
                                    max_poll_interval_ms=600_000, metadata_max_age_ms=5_000,
                                    group_instance_id=self.instance_id,
                                    session_timeout_ms=self.limits.session_timeout_ms)

        async def settled(record: Any) -> bool:
            await handler(record)  # returns once the record's work is durable (delivered, parked, dropped)
            return True

        stopping = asyncio.Event()
        records = in_flight or self.limits.in_flight_records
        loop = ConsumerLoop(f"{self.spec.key}/{key}", settled, stopping, ordered=ordered, offset_reset=offset_reset,
                            limits=LoopLimits(max_in_flight=records, max_in_flight_per_partition=records,
                                              commit_interval=self.limits.commit_interval, drain_timeout=5.0),
                            fresh_starts=fresh_starts)
        self._loops[key] = (loop, stopping)
        self._tasks[key] = asyncio.create_task(self._keep_consuming(loop, stopping, make_consumer, subscription))

    async def _keep_consuming(self, loop: ConsumerLoop, stopping: asyncio.Event,
                              make_consumer: Callable[[], AIOKafkaConsumer], subscription: dict[str, Any]) -> None:
        """Runs the loop on a consumer until stopped; a consumer that fails is replaced after 2 s."""
        while not stopping.is_set():
            consumer = make_consumer()
            consumer.subscribe(**subscription, listener=loop.listener(consumer))
            try:
                await consumer.start()
                await loop.consume(consumer)
            except (KafkaError, OSError) as error:
                log.warning("%s: Kafka consumer failed (%s), restarting in 2s", loop.name, error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 2)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _stop_loop(self, key: str) -> None:
        entry = self._loops.pop(key, None)
        task = self._tasks.pop(key, None)
        if entry is not None:
            entry[1].set()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 15)

    def ready(self) -> bool:
        """True once every consumer of this broker has its partitions: events sent now will be seen."""
        return self._started and all(loop.assigned.is_set() for key, (loop, _) in self._loops.items()
                                     if key != "retry")

    async def drain(self, timeout: float) -> bool:
        return True  # accepted events are in Kafka; nothing in memory needs draining

    async def stop(self) -> None:
        for key in list(self._loops):
            await self._stop_loop(key)
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    # --- contract -------------------------------------------------------------------------------

    def update(self, spec: model.Broker) -> None:
        self.spec = spec
        self.trigger_delivery.update(spec)
        self._apply_triggers(spec)
        if self._started and self.consume:
            self._sync_ordered_loops()

    def _apply_triggers(self, spec: model.Broker) -> None:
        index: TriggerIndex[CompiledTrigger] = TriggerIndex()
        triggers = {}
        for trigger in spec.triggers:
            compiled = compile_trigger(trigger)
            triggers[trigger.key] = compiled
            if trigger.ordering == "unordered":
                index.add(compiled, compiled.predicate, compiled.required)
        self._index, self._triggers = index, triggers

    def _sync_ordered_loops(self) -> None:
        """Ordered and paced Triggers each run a consumer group of their own (see the module's docstring)."""
        wanted = {f"ordered:{key}": t for key, t in self._triggers.items() if t.spec.ordering == "ordered"}
        paced = {f"paced:{key}": t for key, t in self._triggers.items()
                 if t.spec.ordering == "unordered" and t.spec.own_group}
        for key in [k for k in self._loops if k.startswith(("ordered:", "paced:")) and k not in wanted | paced]:
            stopping = asyncio.ensure_future(self._stop_loop(key))
            self._background.add(stopping)
            stopping.add_done_callback(self._background.discard)
        for key, trigger in wanted.items():
            if key not in self._loops:
                group = self._own_group(trigger.spec)
                # A new ordered Trigger starts at the end of the topic, as a new subscription does.
                self._start_loop(key, {"topics": [self.settings.topic]}, self._ordered_handler(trigger.spec.key),
                                 ordered=True, offset_reset="latest", group=group)
        for key, trigger in paced.items():
            if key not in self._loops:
                self._start_loop(key, {"topics": [self.settings.topic]}, self._paced_handler(trigger.spec.key),
                                 ordered=False, offset_reset="latest", group=self._own_group(trigger.spec),
                                 in_flight=self.limits.paced_in_flight, fresh_starts=self._where_shared_group_is)

    def _own_group(self, trigger: model.Trigger) -> str:
        return f"{self.group_prefix}-trigger-{topic_safe(trigger.uid or f'{trigger.namespace}-{trigger.name}')}"

    async def _where_shared_group_is(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The shared group's committed offsets: a Trigger's own new group starts there, so that what the
        shared group had not settled for it when it became paced is delivered by its own group."""
        admin = AIOKafkaAdminClient(**self._client_args())
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(f"{self.group_prefix}-main", partitions=partitions)
        finally:
            await admin.close()
        return {tp: meta.offset for tp, meta in committed.items() if meta.offset is not None and meta.offset >= 0}

    def _paced_by_own_group(self, trigger: CompiledTrigger) -> bool:
        """True once the Trigger's own group has its partitions: until then the shared group delivers to it."""
        if trigger.spec.ordering != "unordered" or not trigger.spec.own_group:
            return False
        entry = self._loops.get(f"paced:{trigger.spec.key}")
        return entry is not None and entry[0].assigned.is_set()

    # --- ingress --------------------------------------------------------------------------------

    async def ingest(self, events: list[CloudEvent]) -> None:
        if self._producer is None:
            raise Unavailable(f"broker {self.spec.key} is starting")
        try:
            pending = []
            for event in events:
                headers, value = to_kafka(event)
                key = event.attributes.get("partitionkey")
                pending.append(await self._producer.send(self.settings.topic, value, headers=headers,
                                                         key=None if key is None else attribute_text(key).encode()))
            await asyncio.gather(*pending)
        except KafkaError as error:
            raise Unavailable(f"Kafka did not acknowledge the write: {error}") from None

    # --- delivery -------------------------------------------------------------------------------

    def _parse(self, record: Any) -> CloudEvent | None:
        headers = [(k, v) for k, v in record.headers if k not in RETRY_HEADERS]
        try:
            return from_kafka(headers, record.value)
        except InvalidEvent as error:
            log.error("%s: record %s/%s is not a CloudEvent (%s); skipped", self.spec.key, record.partition,
                      record.offset, error)
            self.metrics.dropped.labels(self.spec.namespace, self.spec.name, "invalid_record").inc()
            return None

    async def _handle_main(self, record: Any) -> None:
        event = self._parse(record)
        if event is None:
            return
        matched = [t for t in self._index.match(event.attributes) if not self._paced_by_own_group(t)]
        if not matched:
            self.metrics.dropped.labels(self.spec.namespace, self.spec.name, "no_matching_trigger").inc()
            return
        await asyncio.gather(*(self._advance(t.spec, event, "subscriber", 0) for t in matched))

    async def _advance(self, trigger: model.Trigger, event: CloudEvent, stage: Stage, attempts_before: int) -> None:
        """One attempt at ``stage``, then what ``next_step`` says: done, dropped (counted), or parked in the
        Trigger's retry topic for the wait it gives (returns once Kafka acknowledged the park). No retry
        happens in place: a record's commit waits for every matching Trigger, and must not wait on one."""
        while True:
            attempts = attempts_before + 1
            attempt = await self.trigger_delivery.attempt(trigger, event, stage)
            step = next_step(attempt, attempts, trigger.delivery, stage, exhausted="keep-dead-letters")
            if isinstance(step, Delivered):
                outcome = "delivered" if step.stage == "subscriber" else "dead_lettered"
                self.trigger_delivery.record(trigger, event, outcome, attempt.status)
                return
            if isinstance(step, Drop):
                self.trigger_delivery.record(trigger, event, "failed", attempt.status)
                log.warning("event %s to trigger %s failed after %d attempts (last answer %s) and has no "
                            "dead-letter sink: dropped", event.id, trigger.key, attempts,
                            attempt.status or attempt.error)
                return
            if isinstance(step, DeadLetter):
                event, stage, attempts_before = dead_letter_event(event, trigger.subscriber, attempt), \
                    "dead-letter", 0
                continue
            # Beyond Knative, in the dead-letter stage: a dead-letter sink that fails is tried again, never
            # given up; the event stays in Kafka meanwhile.
            await self._park(trigger, event, attempts, stage, time.time() + step.wait)
            return

    def retry_topic(self, trigger: model.Trigger) -> str:
        return retry_topic(self.settings.topic, trigger.namespace, trigger.name, trigger.uid)

    async def _park(self, trigger: model.Trigger, event: CloudEvent, attempts: int, stage: str, due: float) -> None:
        """Stores the event in its Trigger's retry topic; returns only once Kafka acknowledged it."""
        topic = self.retry_topic(trigger)
        headers, value = to_kafka(event)
        headers += [(H_TRIGGER, trigger.key.encode()), (H_ATTEMPTS, str(attempts).encode()),
                    (H_NOT_BEFORE, str(int(due * 1000)).encode()), (H_STAGE, stage.encode())]
        wait = 0.5
        while True:
            try:
                await self._ensure_topic(topic, self.limits.retry_topic_partitions, self.settings.replication_factor)
                assert self._producer is not None
                await self._producer.send_and_wait(topic, value, headers=headers)
                self.metrics.retried.labels(self.spec.namespace, self.spec.name, trigger.name, "parked").inc()
                return
            except KafkaError as error:
                log.warning("parking event %s for trigger %s failed (%s); trying again in %.1fs", event.id,
                            trigger.key, error, wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 10)

    async def _handle_retry(self, record: Any) -> None:
        meta = {k: v.decode() for k, v in record.headers if k in RETRY_HEADERS}
        compiled = self._triggers.get(meta.get(H_TRIGGER, ""))
        if compiled is None:
            self.metrics.dropped.labels(self.spec.namespace, self.spec.name, "trigger_deleted").inc()
            return
        event = self._parse(record)
        if event is None:
            return
        trigger = compiled.spec
        attempts = int(meta.get(H_ATTEMPTS, "1"))
        wait = int(meta.get(H_NOT_BEFORE, "0")) / 1000 - time.time()
        if wait > 0:
            self._parked[trigger.key] += 1
            try:
                await asyncio.sleep(wait)
            finally:
                self._parked[trigger.key] -= 1
        stage: Stage = "dead-letter" if meta.get(H_STAGE) == "dead-letter" else "subscriber"
        await self._advance(trigger, event, stage, attempts)

    def _paced_handler(self, trigger_key: str) -> Any:
        async def handle(record: Any) -> None:
            compiled = self._triggers.get(trigger_key)
            if compiled is None or not self._paced_by_own_group(compiled):
                return  # no longer paced: the shared group delivers to it
            event = self._parse(record)
            if event is None or not compiled.predicate(event.attributes):
                return
            await self._advance(compiled.spec, event, "subscriber", 0)  # waits for the pace in there

        return handle

    def _ordered_handler(self, trigger_key: str) -> Any:
        async def handle(record: Any) -> None:
            compiled = self._triggers.get(trigger_key)
            event = self._parse(record)
            if compiled is None or event is None or not compiled.predicate(event.attributes):
                return
            # In place, one record at a time (ordering); a failing dead-letter sink holds the partition
            # rather than letting the event be skipped.
            result = await self.trigger_delivery.deliver(compiled.spec, event, exhausted="keep-dead-letters")
            self.trigger_delivery.record(compiled.spec, event, result.outcome.value, result.last.status)

        return handle

    # --- backlog of autoscaled Triggers ----------------------------------------------------------------

    async def backlogs(self) -> dict[str, TriggerBacklog]:
        """The backlog of each autoscaled Trigger: in memory, parked for a retry, and unread in the log by its
        own group on the partitions this replica has (one ListOffsets request per Trigger)."""
        found = {}
        for trigger in self.trigger_delivery.autoscaled():
            unread = 0
            entry = self._loops.get(f"{'ordered' if trigger.ordering == 'ordered' else 'paced'}:{trigger.key}")
            consumer = entry[0].consumer if entry is not None else None
            if consumer is not None:
                with contextlib.suppress(KafkaError, AssertionError, OSError, TimeoutError):
                    unread = await asyncio.wait_for(self._unread(consumer), 5)
            found[trigger.key] = self.trigger_delivery.backlog(trigger, parked=max(0, self._parked[trigger.key]),
                                                               unread=unread)
        return found

    @staticmethod
    async def _unread(consumer: AIOKafkaConsumer) -> int:
        partitions = list(consumer.assignment())
        if not partitions:
            return 0
        ends = await consumer.end_offsets(partitions)
        unread = 0
        for partition in partitions:
            with contextlib.suppress(Exception):  # a partition revoked meanwhile has no position
                unread += max(0, ends[partition] - await consumer.position(partition))
        return unread

    # --- topics ---------------------------------------------------------------------------------

    async def _ensure_topic(self, topic: str, partitions: int, replication: int) -> None:
        if topic in self._known_topics:
            return
        admin = AIOKafkaAdminClient(**self._client_args())
        await admin.start()
        try:
            existing = await admin.list_topics()
            if topic not in existing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics([NewTopic(topic, partitions, replication)])
                    log.info("created topic %s (%d partitions, replication %d)", topic, partitions, replication)
        finally:
            await admin.close()
        self._known_topics.add(topic)
