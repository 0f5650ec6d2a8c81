"""``eventferry demo``: the live-stream example working in one command (services, broker, traffic, live view).

The example services live in the ``eventferry_examples`` package, installed with the ``examples`` extra;
it is imported only here, when the command runs, so the rest of eventferry never needs its dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from eventferry.commands.common import add_logging, configure_logging

EXAMPLE = Path("examples") / "live-stream"
INSTALL_HINT = "pip install -e '.[examples]'"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="the live-stream example in one command: AI services, broker, traffic and a live view",
        description="Starts the example services (moderation, review, leaderboard, vision-inference, "
                    "frames-dead-letter) on loopback, the embedded broker on examples/live-stream with its Service "
                    "refs mapped to them (as 'eventferry run --service'), and traffic that plays a live stream "
                    "(comments, gifts, key frames, with a gift storm and a popular room). Shows per-Trigger figures "
                    "and what the services made of the events, then a summary. Needs the examples extra: "
                    f"{INSTALL_HINT}.")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of traffic (default %(default)s); Ctrl-C ends it early, with the summary")
    parser.add_argument("--rate", type=float, default=40.0,
                        help="events a second in calm moments; the bursts add to it (default %(default)s)")
    parser.add_argument("-f", "--filename", action="append", default=None, metavar="FILE_OR_DIR",
                        help=f"the example's manifests (default {EXAMPLE}, from the current directory or the "
                             "source tree eventferry runs from)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="the broker's port (0: any free one)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the traffic's randomness")
    parser.add_argument("--with-queues", action="store_true",
                        help="also start Kafka and RocketMQ from the test environment (needs a source checkout "
                             "whose test servers are installed: ./hack/test.sh or 'python -m tests.env provision' "
                             "does it) and the sources of examples/live-stream-sources; comments then go through "
                             "RocketMQ, key frames through Kafka, gifts straight to the broker")
    add_logging(parser)
    parser.set_defaults(log_level="WARNING")


def _example_manifests(given: list[str] | None) -> list[Path] | None:
    if given:
        return [Path(p) for p in given]
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (root / EXAMPLE).is_dir():
            return [root / EXAMPLE]
    return None


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    try:
        from eventferry_examples.demo.session import DemoOptions, run_demo
    except ImportError as error:
        print(f"error: the demo needs the examples extra ({error}): {INSTALL_HINT}", file=sys.stderr)
        return 2
    manifests = _example_manifests(args.filename)
    if manifests is None:
        print(f"error: no {EXAMPLE} here: run from the source tree or give -f", file=sys.stderr)
        return 2
    sources = manifests[0].parent / "live-stream-sources"
    options = DemoOptions(manifests, duration=args.duration, rate=args.rate, host=args.host, port=args.port,
                          seed=args.seed, sources=sources if sources.is_dir() else None, with_queues=args.with_queues)
    try:
        return asyncio.run(run_demo(options))
    except KeyboardInterrupt:
        return 130
