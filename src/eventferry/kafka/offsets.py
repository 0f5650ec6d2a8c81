"""Commit points for at-least-once consumption, per partition: only the contiguous finished prefix.

Pure bookkeeping, no I/O. A record is *started* when it is read and *finished* when its delivery
ended (sink or dead-letter sink accepted it). ``commits()`` gives, per partition, the offset to
commit: one past the last record of the finished prefix. A record finished out of order waits for
the ones before it, so a crash replays every record whose delivery had not ended and skips none.
Also counts what is in flight (for flow control) and knows the lowest unfinished offset (for lag).
"""

from __future__ import annotations

import collections
from collections.abc import Hashable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class _Partition:
    __slots__ = ("committed", "done", "order")

    def __init__(self) -> None:
        self.order: collections.deque[int] = collections.deque()
        self.done: set[int] = set()
        self.committed: int | None = None  # last position handed out by commits()


class CommitTracker(Generic[P]):
    def __init__(self) -> None:
        self._partitions: dict[P, _Partition] = {}
        self._in_flight = 0

    def started(self, partition: P, offset: int) -> None:
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = _Partition()
        if state.order and offset <= state.order[-1]:
            raise ValueError(f"offset {offset} of {partition!r} started after {state.order[-1]}: offsets must grow")
        state.order.append(offset)
        self._in_flight += 1

    def finished(self, partition: P, offset: int) -> None:
        state = self._partitions.get(partition)
        if state is None or offset in state.done or not state.order or not state.order[0] <= offset <= state.order[-1]:
            return  # forgotten (partition revoked) or already finished: nothing to count
        state.done.add(offset)
        self._in_flight -= 1

    def in_flight(self, partition: P) -> int:
        """Records of the partition started and not finished."""
        state = self._partitions.get(partition)
        return 0 if state is None else len(state.order) - len(state.done)

    @property
    def total_in_flight(self) -> int:
        return self._in_flight

    def lowest_unfinished(self, partition: P) -> int | None:
        state = self._partitions.get(partition)
        if state is None:
            return None
        for offset in state.order:
            if offset not in state.done:
                return offset
        return None

    def commits(self) -> dict[P, int]:
        """Drops each finished prefix; returns {partition: offset to commit} for the partitions that moved."""
        moved: dict[P, int] = {}
        for partition, state in self._partitions.items():
            position: int | None = None
            while state.order and state.order[0] in state.done:
                offset = state.order.popleft()
                state.done.discard(offset)
                position = offset + 1
            if position is not None:
                state.committed = position
                moved[partition] = position
        return moved

    def committed(self, partition: P) -> int | None:
        state = self._partitions.get(partition)
        return None if state is None else state.committed

    def forget(self, partition: P) -> None:
        """The partition was revoked: its unfinished records are no longer ours to commit."""
        state = self._partitions.pop(partition, None)
        if state is not None:
            self._in_flight -= len(state.order) - len(state.done)

    def partitions(self) -> list[P]:
        return list(self._partitions)
