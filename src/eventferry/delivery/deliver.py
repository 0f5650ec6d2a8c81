"""Delivery of one event to one destination, with Knative's retry, dead-letter and reply semantics.

``attempt_once`` makes one attempt; ``deliver`` runs attempts in process as ``next_step`` decides.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from eventferry.contract.model import Delivery
from eventferry.delivery.pacing import Pacer
from eventferry.delivery.sender import MAX_RESPONSE_BYTES, Attempt, Sender
from eventferry.delivery.steps import DeadLetter, Delivered, Drop, Exhausted, Stage, next_step
from eventferry.events import CloudEvent, InvalidEvent
from eventferry.events.http import claims_cloudevent, from_http

ERROR_DATA_BYTES = 1024

# Stores a reply event; raises when it cannot (the delivery then counts as failed and is retried).
ReplyHandler = Callable[[CloudEvent], Awaitable[None]]
# Told about every failed attempt that will be retried: (attempt, retry number, wait in seconds).
RetryObserver = Callable[[Attempt, int, float], None]


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"
    FAILED = "failed"  # retries exhausted and no dead-letter sink took it


@dataclass(slots=True)
class Result:
    outcome: Outcome
    attempts: int
    last: Attempt
    reply: CloudEvent | None = None


class ReplyRejected(Exception):
    """A reply could not be stored; the message says why."""


# Waits between attempts; the adapters' raises when they stop, which abandons the delivery.
Pause = Callable[[float], Awaitable[None]]


async def deliver(sender: Sender, event: CloudEvent, url: str, delivery: Delivery, *,
                  headers: dict[str, str] | None = None, on_reply: ReplyHandler | None = None,
                  on_retry: RetryObserver | None = None, replies: bool = True, stage: Stage = "subscriber",
                  exhausted: Exhausted = "drop", pacer: Pacer | None = None,
                  pause: Pause = asyncio.sleep) -> Result:
    """Sends ``event`` to ``url`` as ``next_step`` decides: retries, then the dead-letter sink with the same
    policy; what happens once both are spent is ``exhausted`` (see ``eventferry.delivery.steps``).

    ``stage="dead-letter"``: ``event`` is a dead letter already and ``url`` the dead-letter sink.
    ``pacer``: the subscriber's pace; every attempt at the subscriber waits for it (``Hold``), spending no retry.
    ``replies=False`` reads no reply from a 2xx answer (any 2xx is a success), as Knative's source
    adapters do: they send events, they do not request them.
    """
    current, target = event, url
    attempts = total = 0
    subscriber_answer: Attempt | None = None  # the subscriber's last answer, which a dead letter reports
    while True:
        attempts += 1
        total += 1
        attempt, reply = await attempt_once(sender, current, target, delivery, headers=headers, replies=replies,
                                            on_reply=on_reply if stage == "subscriber" else None,
                                            pacer=pacer if stage == "subscriber" else None)
        step = next_step(attempt, attempts, delivery, stage, exhausted)
        if isinstance(step, Delivered):
            if step.stage == "subscriber":
                return Result(Outcome.DELIVERED, total, attempt, reply)
            return Result(Outcome.DEAD_LETTERED, total, subscriber_answer or attempt)
        if isinstance(step, Drop):
            return Result(Outcome.FAILED, total, attempt)
        if isinstance(step, DeadLetter):
            assert delivery.dead_letter_sink is not None
            subscriber_answer = attempt
            current, target, stage, attempts = dead_letter_event(event, url, attempt), delivery.dead_letter_sink, \
                "dead-letter", 0
            continue
        if on_retry is not None:
            on_retry(attempt, attempts, step.wait)
        await pause(step.wait)


async def attempt_once(sender: Sender, event: CloudEvent, url: str, delivery: Delivery, *,
                       headers: dict[str, str] | None = None, on_reply: ReplyHandler | None = None,
                       replies: bool = True, pacer: Pacer | None = None) -> tuple[Attempt, CloudEvent | None]:
    """One attempt, its reply read and stored: a bad reply, or one that cannot be stored, fails it as a 502.
    With a ``pacer``, the attempt first waits until the pace allows it."""
    async with pacer.attempt() if pacer is not None else contextlib.nullcontext():
        attempt = await sender.send(url, event, timeout=delivery.timeout, structured=delivery.format == "json",
                                    headers=headers)
    if not attempt.ok or not replies:
        return attempt, None
    try:
        reply = _reply_of(attempt)
        if reply is not None and on_reply is not None:
            await on_reply(reply)
        return attempt, reply
    except (InvalidEvent, ReplyRejected) as error:
        # Knative answers 502 for a malformed reply; a reply we cannot store fails the delivery too.
        return Attempt(502, attempt.body, attempt.headers, f"reply not accepted: {error}"), None
    except Exception as error:  # a fault while handling the reply fails this attempt only
        return Attempt(502, attempt.body, attempt.headers, f"reply not handled: {type(error).__name__}: {error}"), None


def _reply_of(attempt: Attempt) -> CloudEvent | None:
    """The CloudEvent in a 2xx answer, None for a plain success; raises InvalidEvent for a bad claim."""
    if not claims_cloudevent(attempt.headers):
        return None
    if attempt.truncated:
        raise InvalidEvent(f"the reply is larger than {MAX_RESPONSE_BYTES} bytes")
    events = from_http(attempt.headers, attempt.body)
    if len(events) != 1:
        raise InvalidEvent("a reply must be a single CloudEvent, not a batch")
    reply = events[0]
    reply.headers = {}
    return reply


def dead_letter_event(event: CloudEvent, destination: str, last: Attempt) -> CloudEvent:
    dead = event.copy()
    dead.attributes["knativeerrordest"] = destination
    if last.status is not None:
        dead.attributes["knativeerrorcode"] = str(last.status)
    data = last.body[:ERROR_DATA_BYTES] if last.body else (last.error or "").encode()[:ERROR_DATA_BYTES]
    if data:
        dead.attributes["knativeerrordata"] = base64.b64encode(data).decode()
    return dead
