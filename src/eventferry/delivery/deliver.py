"""Delivery of one event to one destination, with Knative's retry, dead-letter and reply semantics."""

from __future__ import annotations

import asyncio
import base64
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from eventferry.contract.model import Delivery
from eventferry.delivery.policy import is_retryable, next_wait
from eventferry.delivery.sender import MAX_RESPONSE_BYTES, Attempt, Sender
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


async def deliver(sender: Sender, event: CloudEvent, url: str, delivery: Delivery, *,
                  headers: dict[str, str] | None = None, on_reply: ReplyHandler | None = None,
                  on_retry: RetryObserver | None = None, replies: bool = True) -> Result:
    """Sends ``event`` to ``url``; on failure retries, then tries the dead-letter sink with the same policy.

    ``replies=False`` reads no reply from a 2xx answer (any 2xx is a success), as Knative's source
    adapters do: they send events, they do not request them.
    """
    result = await _attempts(sender, event, url, delivery, headers, on_reply, on_retry, replies)
    if result.outcome is Outcome.DELIVERED or delivery.dead_letter_sink is None:
        return result
    dead = dead_letter_event(event, url, result.last)
    dls = await _attempts(sender, dead, delivery.dead_letter_sink, delivery, headers, None, on_retry, replies)
    if dls.outcome is Outcome.DELIVERED:
        return Result(Outcome.DEAD_LETTERED, result.attempts + dls.attempts, result.last)
    return Result(Outcome.FAILED, result.attempts + dls.attempts, dls.last)


async def _attempts(sender: Sender, event: CloudEvent, url: str, delivery: Delivery,
                    headers: dict[str, str] | None, on_reply: ReplyHandler | None,
                    on_retry: RetryObserver | None, replies: bool = True) -> Result:
    structured = delivery.format == "json"
    attempts = 0
    while True:
        attempts += 1
        attempt = await sender.send(url, event, timeout=delivery.timeout, structured=structured, headers=headers)
        reply: CloudEvent | None = None
        if attempt.ok and not replies:
            return Result(Outcome.DELIVERED, attempts, attempt)
        if attempt.ok:
            try:
                reply = _reply_of(attempt)
                if reply is not None and on_reply is not None:
                    await on_reply(reply)
                return Result(Outcome.DELIVERED, attempts, attempt, reply)
            except (InvalidEvent, ReplyRejected) as error:
                # Knative answers 502 for a malformed reply; a reply we cannot store fails the delivery too.
                attempt = Attempt(502, attempt.body, attempt.headers, f"reply not accepted: {error}")
            except Exception as error:  # a fault while handling the reply fails this attempt only
                attempt = Attempt(502, attempt.body, attempt.headers,
                                  f"reply not handled: {type(error).__name__}: {error}")
        if not is_retryable(attempt.status) or attempts > delivery.retry:
            return Result(Outcome.FAILED, attempts, attempt)
        wait = next_wait(delivery, attempts, attempt.status, attempt.headers.get("retry-after"))
        if on_retry is not None:
            on_retry(attempt, attempts, wait)
        await asyncio.sleep(wait)


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
