"""An open-loop load generator: ``python -m benchmarks.load --url U --rate R --seconds S [--size BYTES]``.

The i-th event is due at ``start + i / rate`` whatever the answers (open loop: a slow receiver does not slow
the sender down, so its queueing shows as latency, not as a lower rate). Binary CloudEvents of ``--size``
bytes, each carrying its due time (``ce-scheduledat``). Prints one JSON line: events sent, answers that were
not 2xx, and how far behind its schedule the sender itself fell at most (it must stay small for the figures
to describe the receiver, not the sender).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


async def run(url: str, rate: float, seconds: float, size: int) -> dict[str, float]:
    body = b"x" * size
    total = int(rate * seconds)
    failed = 0
    behind = 0.0
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(i: int, due: float) -> None:
            nonlocal failed
            headers = {"ce-specversion": "1.0", "ce-id": f"e{i}", "ce-source": "/bench", "ce-type": "com.example.bench",
                       "ce-scheduledat": f"{due:.6f}", "content-type": "application/octet-stream"}
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status >= 300:
                        failed += 1
            except aiohttp.ClientError:
                failed += 1

        start = time.time() + 0.2
        for i in range(total):
            due = start + i / rate
            wait = due - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                behind = max(behind, -wait)
            task = asyncio.create_task(send(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return {"sent": total, "failed": failed, "behind_ms": behind * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.rate, args.seconds, args.size))), flush=True)


if __name__ == "__main__":
    main()
