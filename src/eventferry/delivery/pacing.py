"""Pacing of one Trigger's deliveries: at most ``max_concurrency`` attempts in flight and ``rate`` attempts a
second (a token bucket holding up to ``burst``). An event over the pace waits before its attempt (``Hold``);
waiting spends no retry, and a retry is an attempt like any other, so the subscriber never sees more.

An autoscaled Trigger's subscriber adds a ``Gate``: no attempt while it has no ready endpoint (its workload
is at zero or starting: the events are held, not failed), then at most ``per_replica`` in flight per ready one.

``decide`` is the pure part (the clock is passed in); ``Pacer`` waits on it, first come first served.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from eventferry.contract.model import Pacing
from eventferry.delivery.steps import Hold


class TokenBucket:
    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.updated = now

    def refill(self, now: float) -> None:
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: one is)."""
        self.refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


@dataclass(frozen=True)
class Gate:
    """An autoscaled Trigger's subscriber as the broker sees it: its ready endpoints, and the attempts each
    may have in flight (the Trigger's target)."""

    ready: int
    per_replica: int

    @property
    def closed(self) -> bool:
        return self.ready == 0


def decide(pacing: Pacing | None, in_flight: int, bucket: TokenBucket | None, now: float,
           gate: Gate | None = None) -> Hold | None:
    """None: attempt now (the caller then takes the slot and the token); else how long to hold."""
    if gate is not None and in_flight >= gate.ready * gate.per_replica:
        return Hold(None)  # closed (no ready endpoint), or each ready one has its share
    if pacing is not None and pacing.max_concurrency is not None and in_flight >= pacing.max_concurrency:
        return Hold(None)
    if bucket is not None:
        wait = bucket.wait(now)
        if wait > 0:
            return Hold(wait)
    return None


class Pacer:
    """One Trigger's pace, shared by every path that makes an attempt to its subscriber."""

    def __init__(self, pacing: Pacing | None, gate: Gate | None = None) -> None:
        self.pacing = pacing
        self.gate = gate
        self.in_flight = 0
        self._bucket: TokenBucket | None = None
        self._waiting: collections.OrderedDict[int, float] = collections.OrderedDict()  # ticket -> since
        self._tickets = 0
        self._changed = asyncio.Event()
        self.update(pacing)

    def update(self, pacing: Pacing | None) -> None:
        """A new pace applies to the events waiting now too; tokens already earned are kept up to the burst."""
        self.pacing = pacing
        now = time.monotonic()
        if pacing is None or pacing.rate is None:
            self._bucket = None
        elif self._bucket is None:
            self._bucket = TokenBucket(pacing.rate, pacing.burst, now)
        else:
            self._bucket.refill(now)
            self._bucket.rate, self._bucket.burst = pacing.rate, pacing.burst
            self._bucket.tokens = min(self._bucket.tokens, float(pacing.burst))
        self._wake()

    def set_gate(self, gate: Gate | None) -> None:
        """The subscriber's endpoints changed (None: not gated); the events waiting now see it at once."""
        if gate != self.gate:
            self.gate = gate
            self._wake()

    @property
    def limited(self) -> bool:
        return self.pacing is not None or self.gate is not None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def oldest_wait(self, now: float | None = None) -> float:
        """Seconds the longest-waiting event has waited so far (0 when none waits)."""
        if not self._waiting:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, now - next(iter(self._waiting.values())))

    @contextlib.asynccontextmanager
    async def attempt(self) -> AsyncIterator[None]:
        """Holds until the pace allows one more attempt, then counts it in flight while it runs."""
        if not self.limited:
            yield
            return
        self._tickets += 1
        ticket = self._tickets
        self._waiting[ticket] = time.monotonic()
        try:
            while self.limited:
                hold: Hold | None = Hold(None)  # not first in line: wait for a change
                if next(iter(self._waiting)) == ticket:  # first come, first served
                    hold = decide(self.pacing, self.in_flight, self._bucket, time.monotonic(), self.gate)
                    if hold is None:
                        break
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), hold.wait if hold is not None else None)
            if self._bucket is not None:  # None too once the pacing was removed while this waited
                self._bucket.tokens -= 1
            self.in_flight += 1
        finally:
            del self._waiting[ticket]
            self._wake()
        try:
            yield
        finally:
            self.in_flight -= 1
            self._wake()

    def _wake(self) -> None:
        """Every waiter looks again (one event loop: no lock needed)."""
        self._changed.set()
        self._changed = asyncio.Event()
