"""What both adapters share: the sink client (delivery, trace context, metrics, logs) and the process frame.

The sink client delivers through ``eventferry.delivery`` (retries, backoff, dead-letter sink as the
DeliverySpec says, decided by ``next_step``). An event whose delivery ends FAILED (retries and
dead-letter sink spent) is never skipped: the client tries it again after a backoff, until it is
delivered or the adapter stops, and the caller acknowledges the message only when it settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from eventferry.adapters import tracing
from eventferry.adapters.batching import SinkBatcher
from eventferry.adapters.config import AdapterConfig
from eventferry.adapters.health import AdapterHealth, HealthServer
from eventferry.adapters.logs import fields
from eventferry.adapters.metrics import AdapterMetrics
from eventferry.delivery import Attempt, Outcome, Sender, deliver
from eventferry.delivery.deliver import dead_letter_event
from eventferry.delivery.steps import kept_wait
from eventferry.events import CloudEvent
from eventferry.net.tokenfile import TokenFile

log = logging.getLogger("eventferry.adapters")

# Seconds a stopping adapter may take beyond its drain timeout (a RocketMQ receive long-polls, a client
# shuts down) before it is cancelled.
STOP_GRACE = 20.0


def trace(event: CloudEvent) -> None:
    """Gives the event the traceparent of its hop to the sink (a child of the one it came with, or a new trace)."""
    event.headers[tracing.TRACEPARENT] = tracing.outgoing(event.headers.get(tracing.TRACEPARENT))


class Abandoned(Exception):
    """The adapter is stopping: the delivery was given up and its message must not be acknowledged."""


class AdapterError(RuntimeError):
    """A failure the adapter cannot recover from by waiting (bad credentials, a refused subscription)."""


class SinkClient:
    def __init__(self, config: AdapterConfig, sender: Sender, metrics: AdapterMetrics, stopping: asyncio.Event) -> None:
        self.config = config
        self.sender = sender
        self.metrics = metrics
        self.stopping = stopping
        self.delivery = config.delivery
        limits = config.limits
        self.batcher = None if limits.batch_size <= 1 else SinkBatcher(
            sender, config.sink, config.delivery, size=limits.batch_size, linger=limits.batch_linger,
            pause=self._pause, on_retry=lambda attempt: self.metrics.retried(attempt.status), report=self._count)

    def _count(self, outcome: str, status: int | None, events: int) -> None:
        for _ in range(events):
            self.metrics.outcome(outcome, status)

    def _on_retry(self, attempt: Attempt, retry: int, wait: float) -> None:
        self.metrics.retried(attempt.status)

    async def settle(self, event: CloudEvent, read_at: float) -> Outcome:
        """Delivers ``event`` to the sink (or its dead-letter sink) and returns how it ended: nothing is
        given up, a spent policy is tried again after a backoff; raises Abandoned when the adapter stops first.
        """
        trace(event)
        failures = 0
        while True:
            outcome = await self.send(event, read_at)
            if outcome is not Outcome.FAILED:
                return outcome
            failures += 1
            wait = self.failed_backoff(failures)
            log.debug("event %s not acknowledged; trying it again in %.1fs", event.id, wait,
                      extra=fields(event_id=event.id, retry_in=wait))
            await self._pause(wait)

    async def send(self, event: CloudEvent, read_at: float) -> Outcome:
        """One delivery as the DeliverySpec says (retries, then the dead-letter sink); FAILED is returned
        (``settle`` or the caller's queue has it tried again later). In a batch when the sink takes them."""
        if self.batcher is not None:
            outcome = await self.batcher.send(event)
            if outcome is not Outcome.FAILED:
                self.metrics.latency(time.monotonic() - read_at)
            return outcome
        result = await deliver(self.sender, event, self.config.sink, self.delivery, on_retry=self._on_retry,
                               replies=False, pause=self._pause)
        self.metrics.outcome(result.outcome.value, result.last.status)
        answer = result.last.status or result.last.error
        if result.outcome is Outcome.FAILED:
            log.warning("delivery of event %s failed after %d attempts (last answer %s)", event.id, result.attempts,
                        answer, extra=fields(event_id=event.id, outcome="failed", attempts=result.attempts,
                                             status=result.last.status, error=result.last.error))
            return result.outcome
        self.metrics.latency(time.monotonic() - read_at)
        if result.outcome is Outcome.DEAD_LETTERED:
            log.warning("event %s dead-lettered after %d attempts (last answer %s)", event.id, result.attempts,
                        answer, extra=fields(event_id=event.id, outcome="dead_lettered", attempts=result.attempts,
                                             status=result.last.status, error=result.last.error))
        return result.outcome

    async def dead_letter(self, event: CloudEvent, reason: str) -> bool:
        """Sends an event that cannot go to the sink (a malformed message) to the dead-letter sink.

        False when there is no dead-letter sink. Retried until accepted; raises Abandoned on stop.
        """
        dead_letter_sink = self.delivery.dead_letter_sink
        if dead_letter_sink is None:
            return False
        dead = dead_letter_event(event, self.config.sink, Attempt(None, error=reason))
        trace(dead)
        failures = 0
        while True:
            result = await deliver(self.sender, dead, dead_letter_sink, self.delivery, on_retry=self._on_retry,
                                   replies=False, stage="dead-letter", pause=self._pause)
            if result.outcome is Outcome.DEAD_LETTERED:
                self.metrics.outcome(Outcome.DEAD_LETTERED.value, result.last.status)
                return True
            self.metrics.outcome(Outcome.FAILED.value, result.last.status)
            failures += 1
            wait = self.failed_backoff(failures)
            log.warning("dead-letter sink refused malformed message %s (%s); trying again in %.1fs", event.id,
                        result.last.status or result.last.error, wait,
                        extra=fields(event_id=event.id, status=result.last.status, error=result.last.error))
            await self._pause(wait)

    def failed_backoff(self, failures: int) -> float:
        """Seconds before an event whose delivery FAILED ``failures`` times in a row is tried again."""
        return kept_wait(self.delivery, failures, self.config.limits.failed_backoff_max)

    async def _pause(self, seconds: float) -> None:
        if self.stopping.is_set():
            raise Abandoned()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        if self.stopping.is_set():
            raise Abandoned()


def sink_authorization(config: AdapterConfig) -> Callable[[str], Awaitable[str | None]] | None:
    """The adapter's token, for requests to its sink only (not to the dead-letter sink: the token would let
    whoever runs that send to the Broker as this source)."""
    if not config.sink_token_file:
        return None
    token = TokenFile(config.sink_token_file)

    async def authorization(url: str) -> str | None:
        return token.authorization() if url == config.sink else None

    return authorization


# A consumer loop: runs until ``stopping`` is set, then returns what it holds (drains or gives back).
ConsumerRun = Callable[[SinkClient, AdapterMetrics, AdapterHealth, asyncio.Event], Awaitable[None]]


async def run_with(config: AdapterConfig, stop: asyncio.Event, consume: ConsumerRun,
                   metrics: AdapterMetrics | None = None, health: AdapterHealth | None = None) -> None:
    """The frame of an adapter: sender, metrics, health server, the consumer loop, and a clean stop.

    Returns when ``stop`` is set and the consumer has settled or given back what it held; raises
    AdapterError for failures that waiting does not fix.
    """
    metrics = metrics or AdapterMetrics(config.kind, config.namespace, config.name)
    health = health or AdapterHealth()
    sender = Sender(authorization=sink_authorization(config))
    sender.trust.set(config.ca_certs_by_url())
    server = HealthServer(health, metrics.registry, config.metrics_port) if config.metrics_port is not None else None
    stopping = asyncio.Event()
    await sender.start()
    try:
        if server is not None:
            await server.start()
        log.info("%s adapter for %s starting; sink %s", config.kind, config.key, config.sink,
                 extra=fields(kind=config.kind, source=config.key, sink=config.sink, ordering=config.ordering))
        consumer = asyncio.ensure_future(consume(SinkClient(config, sender, metrics, stopping), metrics, health,
                                                 stopping))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopping.set()
            health.set_not_ready("stopping")
            # The consumer drains on ``stopping`` (and re-raises its failure, if any). A client call that
            # hangs (a broker that does not answer) must not hold the stop for ever: past the grace, cancel.
            await asyncio.wait({consumer}, timeout=config.limits.drain_timeout + STOP_GRACE)
            if not consumer.done():
                log.warning("%s adapter for %s did not stop within %.0fs: cancelling it", config.kind, config.key,
                            config.limits.drain_timeout + STOP_GRACE, extra=fields(source=config.key))
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer
            else:
                consumer.result()
        except asyncio.CancelledError:
            # The host cancelled us instead of setting ``stop``: nothing is acknowledged past this point.
            stopping.set()
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await consumer
            raise
        finally:
            stopper.cancel()
        log.info("%s adapter for %s stopped", config.kind, config.key, extra=fields(source=config.key))
    finally:
        health.set_not_ready("stopped")
        if server is not None:
            await server.stop()
        await sender.close()
