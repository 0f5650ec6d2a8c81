"""The live-stream traffic: what the plan holds, and that it is played open loop (a slow broker does not
slow the senders down); the demo's latency quantile from histogram buckets."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest

from eventferry_examples.demo.figures import quantile
from eventferry_examples.stream import COMMENT, FRAME, TOXIC, Mix, Planned, bursts, plan
from eventferry_examples.traffic import play

pytestmark = pytest.mark.unit


def test_the_plan_mixes_comments_gifts_and_frames_at_the_asked_rate() -> None:
    events = plan(60, Mix(rate=40), seed=1, with_bursts=False)
    kinds = collections.Counter(event.kind for event in events)
    assert 0.9 * 2400 < len(events) < 1.1 * 2400
    assert 0.9 * 1200 < kinds["comment"] < 1.1 * 1200
    assert 0.85 * 480 < kinds["gift"] < 1.15 * 480
    assert kinds["keyframe"] > 0 and kinds["frame"] > 0
    assert [event.at for event in events] == sorted(event.at for event in events)
    toxic = sum(event.data["text"] in TOXIC for event in events if event.type == COMMENT)
    assert 0.06 < toxic / kinds["comment"] < 0.2
    frame = next(event for event in events if event.type == FRAME)
    assert len(frame.data["pixels"]) == 64 and frame.extensions["keyframe"] in ("true", "false")


def test_keyframe_is_what_the_cesql_filter_of_frames_to_vision_selects() -> None:
    def frame(keyframe: str, priority: str) -> Planned:
        return Planned(0, FRAME, "/r", {}, {"keyframe": keyframe, "priority": priority})

    assert frame("true", "5").kind == "keyframe"
    assert frame("true", "4").kind == "frame"
    assert frame("false", "9").kind == "frame"


def test_the_bursts_are_a_gift_storm_then_a_popular_room() -> None:
    events = plan(60, seed=3)
    storm, popular = bursts(60)
    calm = [e for e in events if e.kind == "gift" and e.at < storm.start]
    in_storm = [e for e in events if e.kind == "gift" and storm.start <= e.at < storm.start + storm.length]
    assert len(in_storm) / storm.length > 4 * len(calm) / storm.start  # a storm: many times the calm rate
    keyframes = [e for e in events if e.kind == "keyframe" and popular.start <= e.at < popular.start + popular.length]
    assert collections.Counter(e.data["room"] for e in keyframes).most_common(1)[0][0] == popular.room


class SlowSink:
    """Takes every event, each after ``delay``; notes when each send started."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.started: list[float] = []

    async def send(self, event: Planned) -> bool:
        self.started.append(time.monotonic())
        await asyncio.sleep(self.delay)
        return True

    async def close(self) -> None:
        pass


async def test_events_leave_on_schedule_however_slow_the_destination_answers() -> None:
    events = [Planned(n * 0.05, COMMENT, "/r", {"text": "hi"}) for n in range(20)]  # 20 a second for 1 s
    sink = SlowSink(delay=0.5)  # ten times slower than the spacing: a closed loop would take 10 s
    began = time.monotonic()
    tally = await play(events, sink)
    offsets = [at - began for at in sink.started]
    assert all(abs(offset - event.at) < 0.1 for offset, event in zip(offsets, events, strict=True)), offsets
    assert tally.taken["comment"] == 20 and tally.late < 0.1
    assert time.monotonic() - began < 2.0


async def test_past_the_outstanding_limit_events_are_counted_as_not_sent_and_stop_ends_the_play() -> None:
    events = [Planned(n * 0.01, COMMENT, "/r", {}) for n in range(10)] + [Planned(5.0, COMMENT, "/r", {})]
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    tally = await play(events, SlowSink(delay=1.0), stop=stop, max_outstanding=4)
    assert tally.taken["comment"] == 4 and tally.not_sent["comment"] == 6  # the one at 5 s never left


def test_the_p99_is_the_bucket_that_holds_it_over_the_window() -> None:
    then = {0.01: 10.0, 0.1: 10.0, 1.0: 10.0, float("inf"): 10.0}
    now = {0.01: 108.0, 0.1: 109.0, 1.0: 110.0, float("inf"): 110.0}  # 100 more: 98 fast, 1 at 0.1 s, 1 at 1 s
    assert quantile(now, then, 0.99) == 0.1
    assert quantile(now, then, 0.5) == 0.01
    assert quantile(then, then) is None
