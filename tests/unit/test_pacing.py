"""Pacing: the pure decision, the pacer's waits measured on the loop's clock, and the API's validation."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from eventferry.apis.trigger import Trigger
from eventferry.contract.compile import effective_pacing
from eventferry.contract.model import Pacing
from eventferry.delivery.pacing import Pacer, TokenBucket, decide
from eventferry.delivery.steps import Hold

pytestmark = pytest.mark.unit


def test_over_the_concurrency_cap_the_decision_is_to_hold_until_one_ends() -> None:
    pacing = Pacing(max_concurrency=2)
    assert decide(pacing, 1, None, 0.0) is None
    assert decide(pacing, 2, None, 0.0) == Hold(None)


def test_the_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    pacing = Pacing(rate=10, burst=3)
    for _ in range(3):
        assert decide(pacing, 0, bucket, 0.0) is None
        bucket.tokens -= 1
    hold = decide(pacing, 0, bucket, 0.0)
    assert isinstance(hold, Hold) and hold.wait == pytest.approx(0.1)
    assert decide(pacing, 0, bucket, 0.1) is None  # one token earned in 0.1 s
    bucket.tokens -= 1
    bucket.refill(100.0)
    assert bucket.tokens == 3  # never more than the burst after a quiet spell


async def test_the_pacer_keeps_rate_and_concurrency() -> None:
    pacer = Pacer(Pacing(max_concurrency=2, rate=20, burst=1))
    running = peak = 0
    starts: list[float] = []

    async def one() -> None:
        nonlocal running, peak
        async with pacer.attempt():
            starts.append(time.monotonic())
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.03)
            running -= 1

    await asyncio.gather(*(one() for _ in range(11)))
    assert peak <= 2
    rate = (len(starts) - 1) / (starts[-1] - starts[0])
    assert 15 < rate <= 21  # 20 a second, never more
    assert pacer.waiting == 0 and pacer.in_flight == 0


async def test_waiting_events_are_counted_with_their_age_and_a_new_pace_applies_to_them() -> None:
    pacer = Pacer(Pacing(max_concurrency=1))
    gate = asyncio.Event()

    async def hold_the_slot() -> None:
        async with pacer.attempt():
            await gate.wait()

    async def wait_for_a_slot() -> None:
        async with pacer.attempt():
            pass

    first = asyncio.create_task(hold_the_slot())
    await asyncio.sleep(0.01)
    second = asyncio.create_task(wait_for_a_slot())
    await asyncio.sleep(0.1)
    assert pacer.waiting == 1 and pacer.in_flight == 1
    assert pacer.oldest_wait() >= 0.09
    pacer.update(Pacing(max_concurrency=2))  # raised: the waiting event goes at once
    await asyncio.wait_for(second, 1)
    gate.set()
    await first
    assert pacer.waiting == 0 and pacer.in_flight == 0


async def test_without_pacing_nothing_waits() -> None:
    pacer = Pacer(None)
    async with pacer.attempt():
        assert pacer.waiting == 0


def trigger(pacing: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Trigger", "metadata": {"name": "t"},
            "spec": {"broker": "default", "subscriber": {"uri": "http://s"}, "pacing": pacing}}


@pytest.mark.parametrize(("pacing", "field"), [
    ({"maxConcurrency": 0}, "maxConcurrency"),
    ({"rate": 0}, "rate"),
    ({"rate": -1}, "rate"),
    ({"rate": "fast"}, "rate"),
    ({"rate": 5, "burst": 0}, "burst"),
    ({"burst": 5}, "pacing.burst needs pacing.rate"),
    ({}, "pacing must set maxConcurrency, rate, or both"),
    ({"rate": 5, "perSecond": 1}, "perSecond"),
])
def test_bad_pacing_is_refused_with_the_field_named(pacing: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        Trigger.model_validate(trigger(pacing))
    assert field in str(error.value)


def test_the_burst_defaults_to_a_second_of_the_rate() -> None:
    spec = Trigger.model_validate(trigger({"rate": 2.5})).spec.pacing
    assert effective_pacing(spec) == Pacing(rate=2.5, burst=3)
    spec = Trigger.model_validate(trigger({"maxConcurrency": 4})).spec.pacing
    assert effective_pacing(spec) == Pacing(max_concurrency=4, burst=1)
