"""What a subscriber measured of a paced Trigger: its peak concurrency and its rate of attempts."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from tests.support.subscriber import Answer, Received


@dataclass
class Meter:
    """A subscriber script for one path that holds each request ``delay`` seconds and counts the overlap."""

    path: str
    delay: float
    running: int = 0
    peak: int = 0
    starts: list[float] = field(default_factory=list)

    def script(self, received: Received, count: int) -> Answer:
        if received.path != self.path:
            return Answer()
        self.starts.append(time.monotonic())
        self.running += 1
        self.peak = max(self.peak, self.running)
        asyncio.get_running_loop().call_later(self.delay, self._ended)
        return Answer(delay=self.delay)

    def _ended(self) -> None:
        self.running -= 1

    def rate(self) -> float:
        """Attempts a second between the first and the last."""
        return (len(self.starts) - 1) / (self.starts[-1] - self.starts[0])
