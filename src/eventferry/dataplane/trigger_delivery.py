"""Delivering one event to one Trigger: the event as its subscriber gets it, the attempt or the whole
delivery (``eventferry.delivery``), the reply re-entering the broker, and the counts of how it ended.

Shared by every broker class; the class decides when to call it and what to do with the outcome.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from eventferry.contract import model
from eventferry.contract.activation import SubscriberEndpoints, TriggerBacklog
from eventferry.dataplane.admission import (
    ARRIVAL_ATTRIBUTE,
    DEFAULT_TTL,
    TTL_ATTRIBUTE,
    Overloaded,
    Unavailable,
    stamp_arrival,
    ttl_of,
)
from eventferry.dataplane.filters import Predicate, compile_attributes, compile_filters, required_exact
from eventferry.dataplane.metrics import BrokerMetrics
from eventferry.delivery import Outcome, Result, Sender, deliver
from eventferry.delivery.deliver import ReplyHandler, ReplyRejected, attempt_once
from eventferry.delivery.pacing import Gate, Pacer
from eventferry.delivery.sender import Attempt
from eventferry.delivery.steps import Exhausted, Stage
from eventferry.events import CloudEvent
from eventferry.events.event import attribute_text


@dataclass(slots=True)
class CompiledTrigger:
    spec: model.Trigger
    predicate: Predicate
    required: dict[str, str]


def compile_trigger(spec: model.Trigger) -> CompiledTrigger:
    predicate = compile_filters(spec.filters) if spec.filters else compile_attributes(spec.attributes)
    return CompiledTrigger(spec, predicate, required_exact(spec.attributes, spec.filters))


# Stores an event into the broker the reply came back to; raises Overloaded or Unavailable.
Reingest = Callable[[list[CloudEvent]], Awaitable[None]]
# Events a broker class holds for a Trigger before they reach its pacer: (count, seconds the oldest waited).
Queued = Callable[[str], tuple[int, float]]


def _nothing_queued(trigger_key: str) -> tuple[int, float]:
    return 0, 0.0


def gate_of(trigger: model.Trigger, endpoints: SubscriberEndpoints | None) -> Gate | None:
    """How an autoscaled Trigger's attempts are gated by its subscriber's endpoints: closed until the operator
    said how many are ready (a replica that just started holds), none once the operator released the hold."""
    if trigger.autoscaled is None or (endpoints is not None and endpoints.released):
        return None
    return Gate(endpoints.ready if endpoints is not None else 0, trigger.autoscaled.target)


class TriggerDelivery:
    def __init__(self, broker: model.Broker, sender: Sender, metrics: BrokerMetrics, reingest: Reingest,
                 queued: Queued = _nothing_queued) -> None:
        self.broker = broker
        self.sender = sender
        self.metrics = metrics
        self.reingest = reingest
        self.queued = queued
        self.pacers: dict[str, Pacer] = {}
        self.endpoints: Mapping[str, SubscriberEndpoints] = {}
        self.update(broker)

    def update(self, broker: model.Broker) -> None:
        """A new contract: each Trigger's pace applies at once, to events waiting for it too."""
        old = self.broker
        self.broker = broker
        wanted = {t.key: t for t in broker.triggers}
        for key in [k for k in self.pacers if k not in wanted]:
            del self.pacers[key]
            name = key.split("/", 1)[1]
            for gauge in (self.metrics.trigger_waiting, self.metrics.trigger_wait_age, self.metrics.trigger_in_flight):
                with contextlib.suppress(KeyError):
                    gauge.remove(old.namespace, old.name, name)
        for key, trigger in wanted.items():
            pacer = self.pacers.get(key)
            if pacer is None:
                pacer = self.pacers[key] = Pacer(trigger.pacing, gate_of(trigger, self.endpoints.get(key)))
                self._export(key, trigger.name, pacer)
                continue
            if pacer.pacing != trigger.pacing:
                pacer.update(trigger.pacing)
            pacer.set_gate(gate_of(trigger, self.endpoints.get(key)))

    def set_endpoints(self, endpoints: Mapping[str, SubscriberEndpoints]) -> None:
        """The operator's word on the autoscaled subscribers' endpoints: held events go as soon as one is ready."""
        self.endpoints = endpoints
        for trigger in self.broker.triggers:
            pacer = self.pacers.get(trigger.key)
            if pacer is not None:
                pacer.set_gate(gate_of(trigger, endpoints.get(trigger.key)))

    def autoscaled(self) -> list[model.Trigger]:
        return [trigger for trigger in self.broker.triggers if trigger.autoscaled is not None]

    def held(self) -> set[str]:
        """The autoscaled Triggers with events waiting while their subscriber has no ready endpoint."""
        found = set()
        for trigger in self.autoscaled():
            pacer = self.pacers.get(trigger.key)
            if pacer is not None and pacer.gate is not None and pacer.gate.closed \
                    and (pacer.waiting or self.queued(trigger.key)[0]):
                found.add(trigger.key)
        return found

    def backlog(self, trigger: model.Trigger, parked: int = 0, unread: int = 0) -> TriggerBacklog:
        """What this process holds for a Trigger: queued or waiting for its pace or its subscriber, in flight,
        and what the broker class adds (``parked`` for a retry, ``unread`` in the log)."""
        pacer = self.pacers.get(trigger.key)
        queued, age = self.queued(trigger.key)
        if pacer is None:
            return TriggerBacklog(waiting=queued + unread, parked=parked, oldest=age)
        return TriggerBacklog(waiting=queued + pacer.waiting + unread, parked=parked, in_flight=pacer.in_flight,
                              oldest=max(age, pacer.oldest_wait()))

    def _export(self, key: str, name: str, pacer: Pacer) -> None:
        labels = (self.broker.namespace, self.broker.name, name)
        self.metrics.trigger_waiting.labels(*labels).set_function(lambda: pacer.waiting + self.queued(key)[0])
        self.metrics.trigger_wait_age.labels(*labels).set_function(
            lambda: max(pacer.oldest_wait(), self.queued(key)[1]))
        self.metrics.trigger_in_flight.labels(*labels).set_function(lambda: pacer.in_flight)

    def pacer(self, trigger: model.Trigger) -> Pacer | None:
        limited = trigger.pacing is not None or trigger.autoscaled is not None
        return self.pacers.get(trigger.key) if limited else None

    async def deliver(self, trigger: model.Trigger, event: CloudEvent, *, exhausted: Exhausted = "drop") -> Result:
        """A whole delivery in process: attempts, retries and the dead-letter sink as ``next_step`` decides."""
        outgoing, headers, on_reply = self._prepare(trigger, event)

        def on_retry(attempt: Attempt, number: int, wait: float) -> None:
            self.metrics.retried.labels(self.broker.namespace, self.broker.name, trigger.name,
                                        str(attempt.status or 0)).inc()

        return await deliver(self.sender, outgoing, trigger.subscriber, trigger.delivery, headers=headers,
                             on_reply=on_reply, on_retry=on_retry, exhausted=exhausted, pacer=self.pacer(trigger))

    async def attempt(self, trigger: model.Trigger, event: CloudEvent, stage: Stage = "subscriber") -> Attempt:
        """One attempt at the subscriber (its reply stored) or, for a dead letter, at the dead-letter sink."""
        outgoing, headers, on_reply = self._prepare(trigger, event)
        if stage == "subscriber":
            attempt, _ = await attempt_once(self.sender, outgoing, trigger.subscriber, trigger.delivery,
                                            headers=headers, on_reply=on_reply, pacer=self.pacer(trigger))
            return attempt
        assert trigger.delivery.dead_letter_sink is not None
        attempt, _ = await attempt_once(self.sender, outgoing, trigger.delivery.dead_letter_sink, trigger.delivery,
                                        headers=headers)
        return attempt

    def _prepare(self, trigger: model.Trigger, event: CloudEvent) -> tuple[CloudEvent, dict[str, str], ReplyHandler]:
        """The event as subscribers get it (no TTL), the request headers, and where its reply goes."""
        ttl = ttl_of(event)
        outgoing = event.copy()
        outgoing.attributes.pop(TTL_ATTRIBUTE, None)  # the TTL is the broker's business, not the subscriber's
        headers = {"prefer": "reply", "kn-namespace": trigger.namespace}

        async def on_reply(reply: CloudEvent) -> None:
            remaining = (ttl if ttl is not None else DEFAULT_TTL) - 1
            if remaining <= 0:
                self.metrics.dropped.labels(self.broker.namespace, self.broker.name, "ttl_expired").inc()
                return
            stamp_arrival(reply, ttl=remaining)
            reply.headers = dict(event.headers)
            try:
                await self.reingest([reply])
            except (Overloaded, Unavailable) as error:
                raise ReplyRejected(str(error)) from None

        return outgoing, headers, on_reply

    def record(self, trigger: model.Trigger, event: CloudEvent, outcome: str, status: int | None) -> None:
        """Counts a delivery that ended, and its latency since the event arrived at the broker.

        ``failed`` (retries spent, no dead-letter sink took it) is also a drop, counted with its reason.
        """
        if outcome == Outcome.FAILED.value:
            self.metrics.dropped.labels(self.broker.namespace, self.broker.name, "retries_exhausted").inc()
        self.metrics.delivered.labels(self.broker.namespace, self.broker.name, trigger.name,
                                      self.metrics.event_type(event.type), str(status or 0), outcome).inc()
        arrival = event.attributes.get(ARRIVAL_ATTRIBUTE)
        if arrival is not None:
            try:
                elapsed = time.time() - datetime.fromisoformat(attribute_text(arrival)).timestamp()
            except ValueError:
                return
            self.metrics.dispatch_latency.labels(self.broker.namespace, self.broker.name,
                                                 trigger.name).observe(max(0.0, elapsed))


__all__ = ["CompiledTrigger", "Outcome", "TriggerDelivery", "compile_trigger"]
