"""The InMemory broker class: per-Trigger bounded queues in this process.

Fast, and not durable: events accepted but not yet delivered are lost if the process dies. Each
Trigger has its own queue and its own in-flight limit, so a slow subscriber fills only its own
queue; when an event's matching Triggers have no room (or the broker's byte budget is spent), the
ingress answers 429 with Retry-After and stores nothing: back-pressure instead of unbounded memory.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field

from eventferry.contract import model
from eventferry.contract.activation import TriggerBacklog
from eventferry.dataplane.admission import Overloaded
from eventferry.dataplane.filters import TriggerIndex
from eventferry.dataplane.metrics import BrokerMetrics
from eventferry.dataplane.trigger_delivery import CompiledTrigger, TriggerDelivery, compile_trigger
from eventferry.delivery import Outcome, Sender
from eventferry.events import CloudEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryLimits:
    queue_per_trigger: int = 10_000  # events waiting per Trigger
    in_flight_per_trigger: int = 64  # concurrent deliveries per Trigger
    buffered_bytes: int = 256 * 1024 * 1024  # data bytes held by the whole broker


@dataclass(eq=False)
class _TriggerQueue:
    trigger: CompiledTrigger
    waiting: collections.deque[tuple[CloudEvent, float]] = field(default_factory=collections.deque)  # event, since
    in_flight: int = 0
    removed: bool = False


class InMemoryBroker:
    def __init__(self, spec: model.Broker, sender: Sender, metrics: BrokerMetrics,
                 limits: MemoryLimits | None = None) -> None:
        self.limits = limits or MemoryLimits()
        self.metrics = metrics
        self.spec = spec
        self._queues: dict[str, _TriggerQueue] = {}
        self.trigger_delivery = TriggerDelivery(spec, sender, metrics, self.ingest, queued=self._queued)
        self._index: TriggerIndex[_TriggerQueue] = TriggerIndex()
        self._tasks: set[asyncio.Task[None]] = set()
        self._buffered = 0
        self._pending = 0  # deliveries waiting or in flight, across Triggers (kept, not summed per event)
        self._idle = asyncio.Event()
        self._idle.set()
        self._queued_gauge = metrics.queued.labels(spec.namespace, spec.name)
        self.update(spec)

    def update(self, spec: model.Broker) -> None:
        """Applies a new contract for this broker; queued and in-flight deliveries carry on."""
        self.spec = spec
        self.trigger_delivery.update(spec)
        queues: dict[str, _TriggerQueue] = {}
        index: TriggerIndex[_TriggerQueue] = TriggerIndex()
        for trigger_spec in spec.triggers:
            compiled = compile_trigger(trigger_spec)
            queue = self._queues.pop(trigger_spec.key, None) or _TriggerQueue(compiled)
            queue.trigger = compiled
            queues[trigger_spec.key] = queue
            index.add(queue, compiled.predicate, compiled.required)
        for gone in self._queues.values():
            gone.removed = True  # what it holds was accepted while it existed: it still drains
        self._queues, self._index = queues, index

    async def ingest(self, events: list[CloudEvent]) -> None:
        plans = [(event, self._index.match(event.attributes)) for event in events]
        size = sum(len(event.data or b"") for event, queues in plans if queues)
        if self._buffered + size > self.limits.buffered_bytes:
            raise Overloaded(f"broker {self.spec.key} holds {self._buffered} bytes of undelivered events")
        demand: collections.Counter[_TriggerQueue] = collections.Counter()
        for _, queues in plans:
            demand.update(queues)
        for queue, count in demand.items():
            if len(queue.waiting) + count > self.limits.queue_per_trigger:
                raise Overloaded(f"trigger {queue.trigger.spec.key} has {len(queue.waiting)} events waiting")
        # Checked first, stored after: in one event loop nothing runs in between, so all or nothing is stored.
        for event, queues in plans:
            if not queues:
                self.metrics.dropped.labels(self.spec.namespace, self.spec.name, "no_matching_trigger").inc()
                continue
            self._buffered += len(event.data or b"") * len(queues)
            self._pending += len(queues)
            now = time.monotonic()
            for queue in queues:
                queue.waiting.append((event, now))
                self._pump(queue)

    def _pump(self, queue: _TriggerQueue) -> None:
        while queue.waiting and queue.in_flight < self.limits.in_flight_per_trigger:
            event, _ = queue.waiting.popleft()
            queue.in_flight += 1
            self._idle.clear()
            task = asyncio.create_task(self._deliver(queue, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._queued_gauge.set(self._pending)

    async def _deliver(self, queue: _TriggerQueue, event: CloudEvent) -> None:
        try:
            result = await self.trigger_delivery.deliver(queue.trigger.spec, event)
            self.trigger_delivery.record(queue.trigger.spec, event, result.outcome.value, result.last.status)
            if result.outcome is Outcome.FAILED:
                log.warning("event %s to trigger %s lost after %d attempts: last status %s %s", event.id,
                            queue.trigger.spec.key, result.attempts, result.last.status, result.last.error or "")
        except Exception:
            # deliver() turns every fault of an attempt into a failed attempt; reaching here is a bug in
            # the bookkeeping around it. The event is not silently gone: it is counted as dropped.
            self.metrics.dropped.labels(self.spec.namespace, self.spec.name, "internal_error").inc()
            log.exception("delivery of event %s to trigger %s crashed: dropped", event.id, queue.trigger.spec.key)
        finally:
            queue.in_flight -= 1
            self._pending -= 1
            self._buffered -= len(event.data or b"")
            self._pump(queue)
            if self._pending == 0:
                self._idle.set()

    def _queued(self, trigger_key: str) -> tuple[int, float]:
        queue = self._queues.get(trigger_key)
        if queue is None or not queue.waiting:
            return 0, 0.0
        return len(queue.waiting), time.monotonic() - queue.waiting[0][1]

    def pending(self) -> int:
        return self._pending

    async def backlogs(self) -> dict[str, TriggerBacklog]:
        """The backlog of each autoscaled Trigger; a delivery that is neither waiting nor attempting sleeps
        before a retry: parked."""
        found = {}
        for trigger in self.trigger_delivery.autoscaled():
            queue = self._queues.get(trigger.key)
            pacer = self.trigger_delivery.pacers.get(trigger.key)
            attempting = (pacer.waiting + pacer.in_flight) if pacer is not None else 0
            parked = max(0, (queue.in_flight if queue is not None else 0) - attempting)
            found[trigger.key] = self.trigger_delivery.backlog(trigger, parked=parked)
        return found

    async def start(self) -> None:
        return None

    def ready(self) -> bool:
        return True

    async def drain(self, timeout: float) -> bool:
        """Waits until nothing is queued or in flight; False if time ran out."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
