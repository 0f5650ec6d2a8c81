"""``eventferry broker``: the broker data plane as a component (the cluster's, or standalone)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from eventferry.commands.common import add_logging, configure_logging


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "broker", help="run the broker data plane, reading the routing contract from a file or a ConfigMap")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--contract-file", type=Path, help="contract JSON; re-read when it changes")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--kafka-bootstrap-servers", default=None,
                        help="bootstrap servers for Kafka brokers whose contract names none")
    parser.add_argument("--role", choices=["all", "ingress", "dispatcher"], default="all",
                        help="split a Kafka broker for scaling: ingress replicas write, dispatcher replicas deliver")
    parser.add_argument("--max-event-bytes", type=int, default=4 * 1024 * 1024)
    add_logging(parser)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130


async def _main(args: argparse.Namespace) -> int:
    from eventferry.dataplane.contract_file import ContractFile
    from eventferry.dataplane.dataplane import DataPlane, DataPlaneSettings
    from eventferry.dataplane.server import Server, stop_on_signals

    bootstrap = [s for s in (args.kafka_bootstrap_servers or "").split(",") if s] or None
    dataplane = DataPlane(DataPlaneSettings(max_event_bytes=args.max_event_bytes, kafka_bootstrap_servers=bootstrap,
                                            role=args.role))
    stop = asyncio.Event()
    stop_on_signals(stop)
    server = Server(dataplane, args.host, args.port)
    try:
        await server.start()
    except OSError as error:
        print(f"error: cannot listen on {args.host}:{args.port}: {error.strerror}; choose another --port",
              file=sys.stderr)
        return 1
    print(f"broker data plane listening on http://{args.host}:{server.port}", flush=True)
    try:
        follower = ContractFile(args.contract_file, dataplane)
        if not await follower.load():
            print(f"error: cannot load the contract from {args.contract_file}: see the log above", file=sys.stderr)
            return 1
        await follower.follow(stop)
    finally:
        await server.stop()
    return 0
