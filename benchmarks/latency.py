"""Latency at fixed rates: what the broker adds over calling the subscriber directly.

``python -m benchmarks.latency [--rates 500,2000,3000,4000] [--seconds 10] [--runs 3] [--no-kafka]``

An open-loop load generator (``benchmarks/load.py``, its own process) sends 1 KiB binary CloudEvents at a
fixed rate, each stamped with the time it was due; the subscriber (``benchmarks/sink.py``, its own
process) counts the latency from that due time to its arrival. Cases, at each rate, in one run:
- direct: the generator posts to the subscriber (the floor);
- relay: through a plain aiohttp relay (the baseline any broker is compared with);
- InMemory: through ``eventferry run`` (a Broker, one Trigger); and with 1,000 extra non-matching Triggers;
- Kafka: the Kafka class (a real single-node Kafka, started here; acks=all).
p50, p99 and max in milliseconds (medians of the runs), and the p99 each adds over direct. The generator
also says how far behind its own schedule it fell: a figure is only the receiver's if that stays small.
With several rates, the highest at which each case adds less than 10 ms of p99 (the generator on schedule).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from tests.env.ports import free_port

from benchmarks.broker import EVENTFERRY, PYTHON, manifests, process, wait_ready

Case = tuple[str, str]  # name, URL the generator posts to


async def measure(url: str, sink: str, rate: float, seconds: float) -> dict[str, float]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{sink}/reset"):
            pass
        load = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "benchmarks.load", "--url", url, "--rate", str(rate), "--seconds", str(seconds),
            stdout=subprocess.PIPE)
        output, _ = await load.communicate()
        sent = json.loads(output.decode().strip().splitlines()[-1])
        deadline = time.monotonic() + 60
        while True:
            async with session.get(f"{sink}/stats") as response:
                stats: dict[str, float] = await response.json()
            if stats["count"] >= sent["sent"] - sent["failed"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    return {**stats, **sent}


async def main_async(args: argparse.Namespace) -> None:
    from tests.env.servers import Kafka

    work = Path(tempfile.mkdtemp(prefix="eventferry-latency-"))
    kafka = None if args.no_kafka else Kafka.start(work / "kafka")
    try:
        sink_port, relay_port, broker_port = free_port(), free_port(), free_port()
        sink = f"http://127.0.0.1:{sink_port}"
        manifest = work / "bench.yaml"
        manifest.write_text(manifests(sink, kafka.bootstrap if kafka else None, 1000))
        with process([PYTHON, "-m", "benchmarks.sink", "--port", str(sink_port)], sink_port,
                     work / "sink.log"), \
                process([PYTHON, "-m", "benchmarks.relay", "--port", str(relay_port), "--target", f"{sink}/relay"],
                        relay_port, work / "relay.log"), \
                process([EVENTFERRY, "run", "-f", str(manifest), "--port", str(broker_port), "--log-level", "WARNING"],
                        broker_port, work / "broker.log"):
            broker = f"http://127.0.0.1:{broker_port}"
            await wait_ready(broker)
            cases: list[Case] = [("direct (the floor)", f"{sink}/direct"),
                                 ("aiohttp relay (baseline)", f"http://127.0.0.1:{relay_port}/relay"),
                                 ("InMemory, 1 Trigger", f"{broker}/default/memory"),
                                 ("InMemory, 1 + 1,000 Triggers", f"{broker}/default/crowded")]
            if kafka:
                cases.append(("Kafka class, 1 Trigger", f"{broker}/default/durable"))
            for _, url in cases:  # warm every path up (connections, the Kafka consumer's partitions)
                await measure(url, sink, 200, 1)
            table: list[tuple[float, str, dict[str, float]]] = []
            for rate in args.rates:
                runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in cases}
                for run in range(args.runs):
                    for name, url in cases:
                        result = await measure(url, sink, rate, args.seconds)
                        runs[name].append(result)
                        print(f"  {rate:.0f}/s run {run + 1}/{args.runs} {name}: p99 {result['p99']:.1f} ms "
                              f"({result['count']:.0f} received, sender behind {result['behind_ms']:.0f} ms)",
                              file=sys.stderr)
                for name, _ in cases:
                    table.append((rate, name, median_of(runs[name])))
        print_table(table, args)
    finally:
        if kafka:
            kafka.stop()


def median_of(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


ADDED_LIMIT = 10.0  # ms of p99 over direct
SENDER_SLACK = 10.0  # ms the generator may fall behind its schedule for a rate to count


def highest_rates(table: list[tuple[float, str, dict[str, Any]]]) -> dict[str, float | None]:
    """Per case, the highest rate measured at which it added less than ADDED_LIMIT of p99 over direct, counting
    only the rates at which the generator kept its schedule (else the figure is the generator's)."""
    floor = {rate: stats["p99"] for rate, name, stats in table if name.startswith("direct")}
    kept = {rate for rate, name, stats in table if name.startswith("direct") and stats["behind_ms"] <= SENDER_SLACK}
    best: dict[str, float | None] = {}
    for rate, name, stats in table:
        if name.startswith("direct"):
            continue
        best.setdefault(name, None)
        if rate in kept and stats["behind_ms"] <= SENDER_SLACK and stats["p99"] - floor[rate] < ADDED_LIMIT \
                and stats["count"] >= stats["sent"] - stats["failed"]:
            best[name] = max(best[name] or 0.0, rate)
    return best


def print_table(table: list[tuple[float, str, dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"\n1 KiB events, open loop, {args.seconds:.0f} s per case, medians of {args.runs} runs; ms")
    print(f"{'rate/s':>7} {'case':32} {'p50':>8} {'p99':>8} {'max':>8} {'p99 added':>10} {'received':>9} "
          f"{'sender behind':>14}")
    floor: dict[float, float] = {}
    for rate, name, stats in table:
        if name.startswith("direct"):
            floor[rate] = stats["p99"]
        added = stats["p99"] - floor.get(rate, 0.0)
        print(f"{rate:7.0f} {name:32} {stats['p50']:8.1f} {stats['p99']:8.1f} {stats['max']:8.1f} {added:10.1f} "
              f"{stats['count']:5.0f}/{stats['sent']:<5.0f} {stats['behind_ms']:12.0f}ms")
    if len({rate for rate, _, _ in table}) > 1:
        print(f"highest rate measured with < {ADDED_LIMIT:.0f} ms of p99 added (the generator on schedule):")
        for name, highest in highest_rates(table).items():
            print(f"  {name:32} {'none' if highest is None else f'{highest:.0f}/s'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=lambda text: [float(r) for r in text.split(",")],
                        default=[500.0, 2000.0, 3000.0, 4000.0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-kafka", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
