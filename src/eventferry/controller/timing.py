"""Waiting without spawning tasks.

``asyncio.wait_for(event.wait(), t)`` runs the wait in a task of its own; kopf counts every task
created after it started as one of its own, and at exit waits up to 5 seconds for such "hung"
tasks. ``asyncio.timeout`` waits in the caller's task, so nothing is left behind.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` was set within ``seconds``."""
    try:
        async with asyncio.timeout(max(seconds, 0)):
            await event.wait()
    except TimeoutError:
        return False
    return True
