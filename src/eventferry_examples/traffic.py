"""Plays a live stream's plan (``stream.py``) into a sink, open loop: each event leaves at its planned time,
whether or not earlier ones were answered, as viewers do not wait for the broker.

``python -m eventferry_examples.traffic --broker http://127.0.0.1:8080/live/live-stream --duration 60``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from eventferry_examples.stream import Mix, Planned, plan

DEFAULT_MAX_OUTSTANDING = 2000


class Sink(Protocol):
    async def send(self, event: Planned) -> bool:
        """True once the destination took the event (202 from the broker, acknowledged by the queue)."""
        ...

    async def close(self) -> None: ...


@dataclass
class Tally:
    """What was sent, by kind (``Planned.kind``): taken, refused (by the destination, or an error), and
    not sent because too many sends were outstanding (the sender's own limit)."""

    taken: collections.Counter[str] = field(default_factory=collections.Counter)
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    not_sent: collections.Counter[str] = field(default_factory=collections.Counter)
    late: float = 0.0  # the most any event left after its planned time, in seconds

    def total(self) -> int:
        return sum(self.taken.values())


async def play(events: Sequence[Planned], sink: Sink, stop: asyncio.Event | None = None,
               max_outstanding: int = DEFAULT_MAX_OUTSTANDING, tally: Tally | None = None,
               clock: Callable[[], float] = time.monotonic) -> Tally:
    """Sends each event at its planned time (seconds from now) until the plan ends or ``stop`` is set,
    then waits for the sends in flight."""
    tally = tally or Tally()
    stop = stop or asyncio.Event()
    outstanding: set[asyncio.Task[None]] = set()
    start = clock()

    async def send(event: Planned) -> None:
        try:
            taken = await sink.send(event)
        except Exception:  # a send that failed is counted, not raised: the stream goes on
            taken = False
        (tally.taken if taken else tally.refused)[event.kind] += 1

    for event in events:
        wait = start + event.at - clock()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
        if stop.is_set():
            break
        tally.late = max(tally.late, clock() - start - event.at)
        if len(outstanding) >= max_outstanding:
            tally.not_sent[event.kind] += 1
            continue
        task = asyncio.create_task(send(event))
        outstanding.add(task)
        task.add_done_callback(outstanding.discard)
    if outstanding:
        await asyncio.wait(outstanding)
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", required=True, help="the Broker's URL, e.g. http://127.0.0.1:8080/live/live-stream")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of stream (default %(default)s)")
    parser.add_argument("--rate", type=float, default=Mix.rate,
                        help="events a second in calm moments; bursts add to it (default %(default)s)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    from eventferry_examples.sinks import HttpSink

    async def run() -> Tally:
        sink = HttpSink(args.broker)
        try:
            return await play(plan(args.duration, Mix(rate=args.rate), seed=args.seed), sink)
        finally:
            await sink.close()

    tally = asyncio.run(run())
    print(f"taken {dict(tally.taken)}; refused {dict(tally.refused)}; not sent {dict(tally.not_sent)}")
    return 0 if not tally.refused and not tally.not_sent else 1


if __name__ == "__main__":
    sys.exit(main())
