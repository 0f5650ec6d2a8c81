"""What the fault tests share: an at-least-once sender at a fixed rate, and delivery bookkeeping."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp


@dataclass
class SenderReport:
    accepted: dict[str, float] = field(default_factory=dict)  # event id -> when it was answered 202
    answers: collections.Counter[str] = field(default_factory=collections.Counter)  # status (or error) -> count

    def summary(self) -> str:
        return ", ".join(f"{code}: {count}" for code, count in sorted(self.answers.items()))


async def send_at_least_once(url: str, keys: int, per_key: int, rate: float, report: SenderReport,
                             headers_for: Callable[[str, int], dict[str, str]] | None = None,
                             give_up_after: float = 120.0) -> None:
    """Sends ``keys * per_key`` events at about ``rate`` per second overall; each key's events in order,
    the next only after the previous was answered 202 (resent until it is, as an at-least-once sender does)."""
    interval = keys / rate

    async def one_key(session: aiohttp.ClientSession, key: int) -> None:
        start = time.monotonic() + key * (1 / rate)
        for seq in range(per_key):
            due = start + seq * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            event_id = f"k{key:02d}-{seq:05d}"
            headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/faults", "ce-type": "com.faults",
                       "ce-partitionkey": f"k{key:02d}", "content-type": "application/json"}
            if headers_for is not None:
                headers.update(headers_for(event_id, key))
            deadline = time.monotonic() + give_up_after
            while True:
                assert time.monotonic() < deadline, f"{event_id} not accepted within {give_up_after}s"
                try:
                    async with session.post(url, headers=headers, data=b'{"n":1}',
                                            timeout=aiohttp.ClientTimeout(total=10)) as response:
                        code = str(response.status)
                except (aiohttp.ClientError, TimeoutError) as error:
                    code = type(error).__name__
                report.answers[code] += 1
                if code == "202":
                    report.accepted[event_id] = time.monotonic()
                    break
                await asyncio.sleep(0.1)

    connector = aiohttp.TCPConnector(limit=keys * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one_key(session, key) for key in range(keys)))


def first_deliveries_in_order(ids: list[str]) -> list[str]:
    """Keys whose events, duplicates removed, did not arrive in the order they were sent."""
    seen: set[str] = set()
    last: dict[str, str] = {}
    broken = []
    for event_id in ids:
        if event_id in seen:
            continue
        seen.add(event_id)
        key = event_id.split("-")[0]
        if key in last and event_id < last[key]:
            broken.append(f"{event_id} after {last[key]}")
        last[key] = event_id
    return broken


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")
