"""The one delivery decision: after an attempt, what happens to the event next. Pure: no I/O, no clock.

Every path follows it: the in-process loop of ``deliver`` (InMemory, ordered Kafka Triggers, the
source adapters) and the Kafka class's staged deliveries (an attempt, then a park in the retry topic
for the wait it says). A delivery has two stages: the subscriber, then, when the policy is spent or
the answer is not retryable, the dead-letter sink with the same policy and a fresh attempt count.

What happens when the last stage is spent too depends on how durable the path is (``Exhausted``):
- ``drop``: the event is dropped and counted (Knative; the InMemory class);
- ``keep-dead-letters``: a failing dead-letter sink is tried again, never given up (the Kafka class:
  the event stays in Kafka); without a dead-letter sink the event is dropped and counted.
(The source adapters deliver with ``drop`` and try a FAILED delivery again as a whole: their message
stays in its queue until it settled.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from eventferry.contract.model import Delivery
from eventferry.delivery.policy import backoff_seconds, is_retryable, next_wait
from eventferry.delivery.sender import Attempt

Stage = Literal["subscriber", "dead-letter"]
Exhausted = Literal["drop", "keep-dead-letters"]

# The wait before a kept event (its policy spent) is tried again: its backoff, at least KEPT_WAIT_MIN so a
# destination that fails at once is not hammered, at most the cap (KEPT_WAIT_MAX unless the path sets one).
KEPT_WAIT_MIN = 0.5
KEPT_WAIT_MAX = 60.0


@dataclass(frozen=True, slots=True)
class Delivered:
    stage: Stage  # "dead-letter": the dead-letter sink took it


@dataclass(frozen=True, slots=True)
class Retry:
    wait: float  # seconds before the next attempt of the same stage


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Go to the dead-letter sink (its first attempt now)."""


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str


@dataclass(frozen=True, slots=True)
class Hold:
    """Not now: the event waits before its next attempt, spending no retry (a paced Trigger over its pace).
    ``wait`` is how long at least, or None to wait until a delivery in flight ends."""

    wait: float | None


AfterAttempt = Delivered | Retry | DeadLetter | Drop
# Hold comes before an attempt (``eventferry.delivery.pacing.decide``), the others after one (``next_step``).
Step = AfterAttempt | Hold


def next_step(attempt: Attempt, attempts: int, delivery: Delivery, stage: Stage = "subscriber",
              exhausted: Exhausted = "drop", kept_wait_max: float = KEPT_WAIT_MAX) -> AfterAttempt:
    """``attempts``: attempts of this stage so far, the one that gave ``attempt`` included."""
    if attempt.ok:
        return Delivered(stage)
    if is_retryable(attempt.status) and attempts <= delivery.retry:
        return Retry(next_wait(delivery, attempts, attempt.status, attempt.headers.get("retry-after")))
    if stage == "subscriber" and delivery.dead_letter_sink is not None:
        return DeadLetter()
    if exhausted == "keep-dead-letters" and stage == "dead-letter":
        return Retry(kept_wait(delivery, attempts, kept_wait_max))
    return Drop("retries_exhausted")


def kept_wait(delivery: Delivery, attempts: int, cap: float = KEPT_WAIT_MAX) -> float:
    """Seconds before an event whose policy is spent, but that is kept, is tried again."""
    return max(min(KEPT_WAIT_MIN, cap), min(backoff_seconds(delivery, attempts), cap))
