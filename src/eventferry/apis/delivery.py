"""DeliverySpec: retries, backoff, timeout and dead-letter sink (as Knative's duck/v1 DeliverySpec)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from eventferry.apis.duck import Destination
from eventferry.apis.duration import DURATION_PATTERN, parse_duration
from eventferry.apis.meta import ApiModel

BackoffPolicy = Literal["linear", "exponential"]
DeliveryFormat = Literal["json", "binary"]

# Used when neither a Trigger nor its Broker sets delivery (design brief, section 6).
DEFAULT_RETRY = 10
DEFAULT_BACKOFF_POLICY: BackoffPolicy = "exponential"
DEFAULT_BACKOFF_DELAY = "PT0.2S"
DEFAULT_TIMEOUT = "PT30S"  # per attempt, when a delivery sets none


def _valid_duration(value: str) -> str:
    parse_duration(value)
    return value


def _positive_duration(value: str) -> str:
    if parse_duration(value) <= 0:
        raise ValueError(f"duration {value!r} must be greater than zero")
    return value


Duration = Annotated[str, AfterValidator(_valid_duration), Field(json_schema_extra={"pattern": DURATION_PATTERN})]
"""An ISO 8601 duration kept as written (``PT0.2S``); read it with ``parse_duration``."""
PositiveDuration = Annotated[Duration, AfterValidator(_positive_duration)]


class DeliverySpec(ApiModel):
    """How events are delivered: retries with backoff, per-request timeout, dead-letter sink."""

    dead_letter_sink: Destination | None = None
    """Receives the events whose delivery failed after every retry."""
    retry: int | None = Field(default=None, ge=0)
    """Number of retries after the first attempt before the event goes to the dead-letter sink."""
    backoff_policy: BackoffPolicy | None = None
    """linear: backoffDelay * attempt; exponential: backoffDelay * 2^attempt."""
    backoff_delay: Duration | None = None
    """Base delay between retries, ISO 8601 (e.g. PT0.2S)."""
    backoff_max: Duration | None = None
    """Beyond Knative: the longest single wait between retries, ISO 8601 (e.g. PT30S)."""
    timeout: PositiveDuration | None = None
    """Timeout of each request, ISO 8601, greater than zero."""
    retry_after_max: Duration | None = None
    """Upper bound on the Retry-After of 429 and 503 answers, ISO 8601; PT0S ignores Retry-After."""
    format: DeliveryFormat | None = None
    """CloudEvents HTTP mode of the requests: json (structured) or binary."""


def default_delivery() -> DeliverySpec:
    """The delivery of a Trigger when neither it nor its Broker sets one."""
    return DeliverySpec(retry=DEFAULT_RETRY, backoff_policy=DEFAULT_BACKOFF_POLICY, backoff_delay=DEFAULT_BACKOFF_DELAY)
