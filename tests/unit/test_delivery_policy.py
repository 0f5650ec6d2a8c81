"""Retry policy: which answers are retried and how long to wait (design section 6)."""

from __future__ import annotations

import email.utils

import pytest

from eventferry.contract.model import Delivery
from eventferry.delivery.policy import backoff_seconds, is_retryable, next_wait, retry_after_seconds
from eventferry.kafka.offsets import CommitTracker

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("status", [None, 404, 408, 409, 429, 500, 502, 503, 504])
def test_retryable(status: int | None) -> None:
    assert is_retryable(status)


@pytest.mark.parametrize("status", [200, 302, 400, 401, 403, 410, 413, 422])
def test_not_retryable(status: int) -> None:
    assert not is_retryable(status)


def test_linear_and_exponential_backoff() -> None:
    linear = Delivery(backoffPolicy="linear", backoffDelay=0.2)
    exponential = Delivery(backoffPolicy="exponential", backoffDelay=0.2)
    assert [backoff_seconds(linear, n) for n in (1, 2, 3)] == pytest.approx([0.2, 0.4, 0.6])
    assert [backoff_seconds(exponential, n) for n in (1, 2, 3)] == pytest.approx([0.4, 0.8, 1.6])


def test_backoff_max_caps_a_single_wait() -> None:
    delivery = Delivery(backoffPolicy="exponential", backoffDelay=1, backoffMax=5)
    assert backoff_seconds(delivery, 10) == 5


def test_retry_after_stretches_the_wait_on_429_and_503_only() -> None:
    delivery = Delivery(backoffDelay=0.1, backoffPolicy="linear")
    assert next_wait(delivery, 1, 429, "3") == 3
    assert next_wait(delivery, 1, 503, "3") == 3
    assert next_wait(delivery, 1, 500, "3") == pytest.approx(0.1)
    capped = Delivery(backoffDelay=0.1, backoffPolicy="linear", retryAfterMax=1.5)
    assert next_wait(capped, 1, 429, "30") == 1.5


def test_retry_after_as_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 7, usegmt=True)
    assert retry_after_seconds(header, now=now) == pytest.approx(7, abs=1)
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_offsets_commit_only_the_contiguous_finished_prefix() -> None:
    tracker: CommitTracker[int] = CommitTracker()  # the broker's and the adapter's one tracker
    for offset in (10, 11, 12, 13):
        tracker.started(0, offset)
    tracker.finished(0, 12)
    assert tracker.commits() == {}  # 10 and 11 still running
    tracker.finished(0, 10)
    assert tracker.commits() == {0: 11}
    tracker.finished(0, 11)
    assert tracker.commits() == {0: 13}  # 12 had finished already
    assert tracker.in_flight(0) == 1
