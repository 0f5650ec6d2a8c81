"""Waiting, in tests that run no event loop, until a probe gives something true."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2,
               details: Callable[[], str] = lambda: "") -> T:
    """The probe's first true answer; fails naming ``what``, the last answer and ``details()`` otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    extra = details()
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"
                         + (f"\n{extra}" if extra else ""))
