"""Retry policy as Knative's: which answers are retried, and how long to wait before the next try."""

from __future__ import annotations

import email.utils
import time

from eventferry.contract.model import Delivery

# Knative retries these 4xx; every 5xx; and a missing answer (transport error, timeout).
RETRYABLE_4XX = frozenset({404, 408, 409, 429})


def is_retryable(status: int | None) -> bool:
    if status is None:
        return True
    return status in RETRYABLE_4XX or 500 <= status <= 599


def backoff_seconds(delivery: Delivery, retry_number: int) -> float:
    """Wait before retry ``retry_number`` (1 for the first retry): linear delay×n, exponential delay×2^n."""
    if delivery.backoff_policy == "linear":
        wait = delivery.backoff_delay * retry_number
    else:
        wait = delivery.backoff_delay * (2 ** retry_number)
    if delivery.backoff_max is not None:
        wait = min(wait, delivery.backoff_max)
    return wait


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """The Retry-After header (delta seconds or an HTTP date) in seconds, or None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def next_wait(delivery: Delivery, retry_number: int, status: int | None, retry_after: str | None) -> float:
    """The backoff, stretched to honour Retry-After on 429 and 503 (capped by retryAfterMax when set)."""
    wait = backoff_seconds(delivery, retry_number)
    if status in (429, 503):
        asked = retry_after_seconds(retry_after)
        if asked is not None:
            if delivery.retry_after_max is not None:
                asked = min(asked, delivery.retry_after_max)
            wait = max(wait, asked)
    return wait
