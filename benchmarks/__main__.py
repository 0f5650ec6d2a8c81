"""Every benchmark in one command: ``python -m benchmarks [--quick] [--only NAME,...]``.

Runs each benchmark as its own process, one after the other (they would disturb each other's figures on
a small machine), shows their progress as they go, and prints their tables together at the end. Each
table holds its own baseline, measured in the same run: the plain aiohttp relay for the broker, the
subscriber called directly for latency, the bare client for the adapters, the API server's own write cost
for the operator, ``json.loads`` for loading the contract, no authentication for the cost of checking tokens.
``--quick`` runs fewer and shorter runs (figures for a smoke check, not to quote).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

FULL: dict[str, list[str]] = {
    "latency": ["--rates", "500,2000,3000,4000", "--seconds", "10", "--runs", "3"],
    "broker": ["--events", "5000", "--runs", "3"],
    "adapters": ["--runs", "3"],
    "operator": ["--triggers", "5000"],
    "contract": ["--triggers", "1000,10000,30000", "--runs", "3"],
    "security": ["--events", "3000", "--runs", "3"],
}
QUICK: dict[str, list[str]] = {
    "latency": ["--rates", "500,2000", "--seconds", "3", "--runs", "1"],
    "broker": ["--events", "2000", "--runs", "1"],
    "adapters": ["--kafka-messages", "5000", "--rocketmq-messages", "1000", "--runs", "1"],
    "operator": ["--triggers", "1000"],
    "contract": ["--triggers", "1000,10000", "--runs", "1"],
    "security": ["--events", "1000", "--runs", "1"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument("--only", default=",".join(FULL), help=f"a comma-separated subset of {', '.join(FULL)}")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in FULL]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(FULL)}")
    plan = QUICK if args.quick else FULL
    tables: list[tuple[str, float, str]] = []
    failed = False
    for name in chosen:
        print(f"== {name}: python -m benchmarks.{name} {' '.join(plan[name])}", file=sys.stderr, flush=True)
        started = time.monotonic()
        # Progress goes to stderr as it comes; the table is the process's stdout.
        done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *plan[name]], stdout=subprocess.PIPE,
                              text=True)
        elapsed = time.monotonic() - started
        if done.returncode != 0:
            failed = True
            tables.append((name, elapsed, f"FAILED (exit {done.returncode}); its output:\n{done.stdout}"))
        else:
            tables.append((name, elapsed, done.stdout.strip()))
    for name, elapsed, table in tables:
        print(f"\n### {name} ({elapsed:.0f} s)\n{table}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
