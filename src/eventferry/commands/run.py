"""``eventferry run -f FILE_OR_DIR ...``: the embedded mode, the same manifests in one local process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from eventferry.commands.common import (
    add_ingress_limits,
    add_logging,
    configure_logging,
    dataplane_settings,
    parse_services,
)
from eventferry.contract.senders import AUTHORIZATION_MODES, DEFAULT_AUTHORIZATION_MODE

log = logging.getLogger("eventferry.run")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run", help="run Brokers, Triggers and sources from manifests in one local process (no cluster)",
        description="Loads Broker, Trigger, ConfigMap, KafkaSource and RocketMQSource manifests (apiVersion "
                    "eventferry.dev/v1alpha1; no namespace means 'default') and serves every Broker at "
                    "http://HOST:PORT/<namespace>/<name>. Edits to the files are applied while running.")
    parser.add_argument("-f", "--filename", action="append", required=True, metavar="FILE_OR_DIR",
                        help="manifest file or directory (repeatable)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--service", action="append", default=[], metavar="NAME[.NAMESPACE]=URL",
                        help="where a subscriber 'ref' to a Service points (repeatable)")
    parser.add_argument("--display", action="store_true",
                        help="send events for Service refs without a --service mapping to a built-in event display "
                             "that prints them (for trying manifests out)")
    parser.add_argument("--kafka-bootstrap-servers", default=None,
                        help="bootstrap servers for Kafka brokers whose config names none (comma-separated)")
    parser.add_argument("--authentication", choices=["disabled", "required"], default="disabled",
                        help="required: senders present a ServiceAccount token for the Broker's audience, verified "
                             "with the keys of the API server of KUBECONFIG; EventPolicy manifests say who may send "
                             "(default disabled: open to whoever reaches --host, 127.0.0.1 unless changed)")
    parser.add_argument("--default-authorization-mode", choices=list(AUTHORIZATION_MODES),
                        default=DEFAULT_AUTHORIZATION_MODE,
                        help="with --authentication required: who may send to a Broker no EventPolicy selects")
    add_ingress_limits(parser)
    add_logging(parser)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130


async def _main(args: argparse.Namespace) -> int:
    from eventferry.contract.senders import SenderAuthorization
    from eventferry.dataplane.server import stop_on_signals
    from eventferry.embedded.local import CannotListen, CannotVerifyTokens, local_broker
    from eventferry.embedded.manifests import ManifestError

    try:
        services = parse_services(args.service)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    stop_on_signals(stop)
    senders = SenderAuthorization(args.default_authorization_mode) if args.authentication == "required" else None
    try:
        async with local_broker([Path(p) for p in args.filename], args.host, args.port, services,
                                dataplane_settings(args), display=args.display, senders=senders) as embedded:
            for line in embedded.addresses():
                print(line, flush=True)
            print(f"ready: http://{args.host}:{embedded.server.port}/readyz (Ctrl-C to stop)", flush=True)
            await embedded.watch(stop)
    except ManifestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (CannotListen, CannotVerifyTokens) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
