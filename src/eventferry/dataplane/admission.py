"""What the broker admits: the TTL and arrival stamps of Knative's broker, and the refusals that a broker
class raises when it cannot store an event now (answered 429 or 503 with Retry-After by the ingress)."""

from __future__ import annotations

from datetime import UTC, datetime

from eventferry.events import CloudEvent
from eventferry.events.event import attribute_text

TTL_ATTRIBUTE = "knativebrokerttl"
ARRIVAL_ATTRIBUTE = "knativearrivaltime"
DEFAULT_TTL = 255


class Overloaded(Exception):
    """The broker cannot take more now; the ingress answers 429 with Retry-After."""

    def __init__(self, reason: str, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Unavailable(Exception):
    """The broker's storage is not reachable; the ingress answers 503 with Retry-After."""

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def ttl_of(event: CloudEvent) -> int | None:
    value = event.attributes.get(TTL_ATTRIBUTE)
    if value is None:
        return None
    try:
        return int(attribute_text(value))
    except ValueError:
        return None


def arrival_time() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def stamp_arrival(event: CloudEvent, ttl: int | None, arrived: str | None = None) -> None:
    """What the broker adds to an event it takes in: the arrival time (``arrived``: the request's, the same for
    every event of a batch) and ``ttl`` (None keeps the TTL the event came with)."""
    event.attributes[ARRIVAL_ATTRIBUTE] = arrived or arrival_time()
    if ttl is not None:
        event.attributes[TTL_ATTRIBUTE] = ttl
