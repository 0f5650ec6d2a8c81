"""Commit points: only the contiguous prefix of settled records, per partition; trace context per event."""

from __future__ import annotations

import pytest

from eventferry.adapters import tracing
from eventferry.kafka.offsets import CommitTracker

pytestmark = pytest.mark.unit


def test_commit_only_the_contiguous_finished_prefix() -> None:
    tracker: CommitTracker[str] = CommitTracker()
    for offset in (10, 11, 12, 13):
        tracker.started("p0", offset)
    assert tracker.commits() == {}
    tracker.finished("p0", 11)
    tracker.finished("p0", 13)
    assert tracker.commits() == {}  # 10 has not settled: nothing may be committed
    assert tracker.lowest_unfinished("p0") == 10
    tracker.finished("p0", 10)
    assert tracker.commits() == {"p0": 12}  # 10 and 11; 12 still open
    assert tracker.commits() == {}  # nothing moved since
    tracker.finished("p0", 12)
    assert tracker.commits() == {"p0": 14}
    assert tracker.committed("p0") == 14
    assert tracker.lowest_unfinished("p0") is None


def test_partitions_are_independent_and_counted() -> None:
    tracker: CommitTracker[tuple[str, int]] = CommitTracker()
    a, b = ("t", 0), ("t", 1)
    for offset in range(5):
        tracker.started(a, offset)
    tracker.started(b, 100)
    assert (tracker.in_flight(a), tracker.in_flight(b), tracker.total_in_flight) == (5, 1, 6)
    tracker.finished(b, 100)
    tracker.finished(a, 1)
    assert (tracker.in_flight(a), tracker.in_flight(b), tracker.total_in_flight) == (4, 0, 4)
    assert tracker.commits() == {b: 101}


def test_finishing_twice_or_unknown_offsets_changes_nothing() -> None:
    tracker: CommitTracker[str] = CommitTracker()
    tracker.started("p", 1)
    tracker.finished("p", 1)
    tracker.finished("p", 1)
    tracker.finished("p", 7)
    tracker.finished("other", 1)
    assert tracker.total_in_flight == 0
    assert tracker.commits() == {"p": 2}
    tracker.finished("p", 1)  # already committed
    assert tracker.total_in_flight == 0


def test_forget_drops_a_revoked_partition() -> None:
    tracker: CommitTracker[str] = CommitTracker()
    tracker.started("p", 1)
    tracker.started("p", 2)
    tracker.finished("p", 2)
    tracker.forget("p")
    assert tracker.total_in_flight == 0
    assert tracker.commits() == {}
    tracker.finished("p", 1)  # a late delivery of the revoked partition
    assert tracker.total_in_flight == 0 and tracker.commits() == {}


def test_offsets_must_grow() -> None:
    tracker: CommitTracker[str] = CommitTracker()
    tracker.started("p", 5)
    with pytest.raises(ValueError):
        tracker.started("p", 5)


def test_gaps_in_offsets_are_fine() -> None:
    tracker: CommitTracker[str] = CommitTracker()
    for offset in (3, 7, 9):  # compacted topic or transaction markers
        tracker.started("p", offset)
    tracker.finished("p", 3)
    tracker.finished("p", 7)
    assert tracker.commits() == {"p": 8}


def test_traceparent_continues_a_valid_trace_or_starts_one() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    child = tracing.outgoing(parent)
    assert tracing.parse(child) is not None
    assert child.startswith("00-0af7651916cd43dd8448eb211c80319c-") and child.endswith("-01")
    assert child.split("-")[2] != "b7ad6b7169203331"  # a new span
    for bad in (None, "", "garbage", "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"):
        fresh = tracing.outgoing(bad)
        parsed = tracing.parse(fresh)
        assert parsed is not None and parsed[0] != "0af7651916cd43dd8448eb211c80319c"
    assert tracing.outgoing(None) != tracing.outgoing(None)
