"""Component processes for tests: started in a process group of their own, stopped with no strays."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

EVENTFERRY = str(Path(sys.executable).parent / "eventferry")


def start_eventferry(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([EVENTFERRY, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL, timeout: float = 20) -> None:
    """Signals the whole process group and waits for the process (SIGKILL by default: a crash)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


async def wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    """Polls ``url`` (a /readyz) until it answers 200; fails early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert proc is None or proc.poll() is None, f"the process behind {url} exited before it was ready"
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} not ready within {timeout}s")
