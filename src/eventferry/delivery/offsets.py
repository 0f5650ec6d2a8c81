"""Commit points for at-least-once consumption: only the contiguous prefix of finished offsets."""

from __future__ import annotations

import collections


class OffsetTracker:
    """Offsets of one partition in the order they were read; out-of-order completion is allowed.

    ``advance()`` gives the next offset to commit (last finished of the contiguous prefix, plus one),
    so a crash replays every offset whose work had not ended and skips none.
    """

    def __init__(self) -> None:
        self._order: collections.deque[int] = collections.deque()
        self._done: set[int] = set()

    def add(self, offset: int) -> None:
        self._order.append(offset)

    def done(self, offset: int) -> None:
        self._done.add(offset)

    def advance(self) -> int | None:
        """Drops the finished prefix; returns the offset to commit, or None when the prefix did not move."""
        moved: int | None = None
        while self._order and self._order[0] in self._done:
            offset = self._order.popleft()
            self._done.discard(offset)
            moved = offset + 1
        return moved

    def __len__(self) -> int:
        return len(self._order)
