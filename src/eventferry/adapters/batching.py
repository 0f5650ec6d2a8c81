"""Batches of events to a sink that takes them (an EventFerry Broker: ``application/cloudevents-batch+json``).

One request then carries up to ``batch_size`` events: the adapter's rate is no longer bound by one HTTP
round trip per message. Events join the open batch as they are read; it goes when full or ``batch_linger``
seconds after its first event. A batch is all or nothing, as the Broker's ingress takes it: it is retried as
a whole by the DeliverySpec (``next_step``, the one delivery decision); once the policy is spent, each of
its events goes to the dead-letter sink on its own. Every event's caller gets the batch's outcome, so an
adapter acknowledges (or tries again) exactly as with one event per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from eventferry.contract.model import Delivery
from eventferry.delivery import Attempt, Outcome, Sender, deliver
from eventferry.delivery.deliver import dead_letter_event
from eventferry.delivery.steps import DeadLetter, Delivered, Drop, next_step
from eventferry.events import CloudEvent

Pause = Callable[[float], Awaitable[None]]
Report = Callable[[str, int | None, int], None]  # outcome, last status, events


class SinkBatcher:
    def __init__(self, sender: Sender, sink: str, delivery: Delivery, *, size: int, linger: float, pause: Pause,
                 on_retry: Callable[[Attempt], None], report: Report) -> None:
        self.sender, self.sink, self.delivery = sender, sink, delivery
        self.size, self.linger = size, linger
        self.pause, self.on_retry, self.report = pause, on_retry, report
        self._open: list[tuple[CloudEvent, asyncio.Future[Outcome]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, event: CloudEvent) -> Outcome:
        """Delivers ``event`` in a batch; the batch's outcome. Raises what stopped the batch (Abandoned)."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._open.append((event, future))
        if len(self._open) >= self.size:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._open = self._open, []
        if batch:
            task = asyncio.create_task(self._settle(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _settle(self, batch: list[tuple[CloudEvent, asyncio.Future[Outcome]]]) -> None:
        try:
            outcome: Outcome | BaseException = await self._deliver([event for event, _ in batch])
        except BaseException as error:  # Abandoned (the adapter stops), or a bug: every caller sees it
            outcome = error
        for _, future in batch:
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _deliver(self, events: list[CloudEvent]) -> Outcome:
        attempts = 0
        while True:
            attempts += 1
            attempt = await self.sender.send_batch(self.sink, events, timeout=self.delivery.timeout)
            step = next_step(attempt, attempts, self.delivery)
            if isinstance(step, Delivered):
                self.report(Outcome.DELIVERED.value, attempt.status, len(events))
                return Outcome.DELIVERED
            if isinstance(step, Drop):
                self.report(Outcome.FAILED.value, attempt.status, len(events))
                return Outcome.FAILED
            if isinstance(step, DeadLetter):
                return await self._dead_letter(events, attempt)
            self.on_retry(attempt)
            await self.pause(step.wait)

    async def _dead_letter(self, events: list[CloudEvent], last: Attempt) -> Outcome:
        """Each event of a refused batch to the dead-letter sink on its own; FAILED if any was not taken (the
        batch is then tried again as a whole: at least once, some dead letters may come twice)."""
        assert self.delivery.dead_letter_sink is not None
        results = await asyncio.gather(*(
            deliver(self.sender, dead_letter_event(event, self.sink, last), self.delivery.dead_letter_sink,
                    self.delivery, replies=False, stage="dead-letter", pause=self.pause) for event in events))
        taken = sum(result.outcome is Outcome.DEAD_LETTERED for result in results)
        self.report(Outcome.DEAD_LETTERED.value, last.status, taken)
        if taken < len(events):
            self.report(Outcome.FAILED.value, last.status, len(events) - taken)
            return Outcome.FAILED
        return Outcome.DEAD_LETTERED

    async def close(self) -> None:
        """Sends what is open and waits for the batches in flight."""
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

