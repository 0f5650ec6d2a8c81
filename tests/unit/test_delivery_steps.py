"""The one delivery decision, without a network: what comes after each kind of attempt."""

from __future__ import annotations

import pytest

from eventferry.contract.model import Delivery
from eventferry.delivery.sender import Attempt
from eventferry.delivery.steps import KEPT_WAIT_MIN, DeadLetter, Delivered, Drop, Retry, kept_wait, next_step

pytestmark = pytest.mark.unit

POLICY = Delivery(retry=2, backoffPolicy="linear", backoffDelay=0.5)
WITH_DLS = Delivery(retry=2, backoffPolicy="linear", backoffDelay=0.5, deadLetterSink="http://dls.test/")


def test_a_2xx_is_delivered_in_its_stage() -> None:
    assert next_step(Attempt(202), 1, POLICY) == Delivered("subscriber")
    assert next_step(Attempt(200), 3, WITH_DLS, "dead-letter") == Delivered("dead-letter")


def test_retryable_answers_are_retried_until_the_policy_is_spent() -> None:
    assert next_step(Attempt(503), 1, POLICY) == Retry(0.5)
    assert next_step(Attempt(None, error="refused"), 2, POLICY) == Retry(1.0)
    assert next_step(Attempt(503), 3, POLICY) == Drop("retries_exhausted")


def test_retry_after_stretches_the_wait_on_429_and_503() -> None:
    assert next_step(Attempt(429, headers={"retry-after": "7"}), 1, POLICY) == Retry(7.0)
    assert next_step(Attempt(500, headers={"retry-after": "7"}), 1, POLICY) == Retry(0.5)


def test_a_non_retryable_answer_goes_to_the_dead_letter_sink_at_once() -> None:
    assert next_step(Attempt(400), 1, WITH_DLS) == DeadLetter()
    assert next_step(Attempt(400), 1, POLICY) == Drop("retries_exhausted")
    assert next_step(Attempt(503), 3, WITH_DLS) == DeadLetter()


def test_the_dead_letter_stage_has_the_same_policy_and_then_drops_or_keeps() -> None:
    assert next_step(Attempt(503), 1, WITH_DLS, "dead-letter") == Retry(0.5)
    assert next_step(Attempt(503), 3, WITH_DLS, "dead-letter") == Drop("retries_exhausted")
    kept = next_step(Attempt(503), 3, WITH_DLS, "dead-letter", exhausted="keep-dead-letters", kept_wait_max=60)
    assert kept == Retry(kept_wait(WITH_DLS, 3, 60)) == Retry(1.5)
    # keeping applies to failing dead-letter sinks only: without one, a spent event is dropped (Knative)
    assert next_step(Attempt(503), 3, POLICY, exhausted="keep-dead-letters") == Drop("retries_exhausted")


def test_kept_waits_are_bounded_below_and_above() -> None:
    quick = Delivery(retry=0, backoffDelay=0.001)
    assert kept_wait(quick, 1) == KEPT_WAIT_MIN
    assert kept_wait(POLICY, 1000, cap=60) == 60
    assert kept_wait(POLICY, 1, cap=0.2) == 0.2
