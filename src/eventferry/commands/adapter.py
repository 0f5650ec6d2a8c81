"""``eventferry adapter kafka|rocketmq``: a source adapter process, configured by its environment.

The operator sets the environment of each adapter Deployment (docs/adapters.md): K_SINK,
K_SOURCE_SPEC, K_SOURCE_NAME, K_SOURCE_NAMESPACE, and optionally K_CE_OVERRIDES, K_DELIVERY,
K_SECRETS_DIR, K_METRICS_PORT. Exit codes: 0 stopped by SIGTERM/SIGINT, 1 a failure the adapter cannot
recover from (e.g. rejected credentials), 2 invalid configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "adapter", help="run a KafkaSource or RocketMQSource adapter, configured by environment variables",
        description="Reads the source's topic and sends each message as a CloudEvent to K_SINK, at least once. "
                    "Configuration comes from the environment (see docs/adapters.md).")
    parser.add_argument("kind", choices=["kafka", "rocketmq"])
    parser.add_argument("--log-level", default=os.environ.get("K_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    parser.add_argument("--log-format", default=os.environ.get("K_LOG_FORMAT", "json"), choices=["json", "text"])


def run(args: argparse.Namespace) -> int:
    from eventferry.adapters import logs
    from eventferry.adapters.config import ConfigError, parse_env, secrets_from_env

    logs.configure(args.log_level, json_lines=args.log_format == "json")
    try:
        config = parse_env(args.kind, os.environ, secrets_from_env(os.environ))
    except ConfigError as error:
        print(f"error: invalid adapter configuration: {error}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(config))
    except KeyboardInterrupt:
        return 130


async def _main(config: Any) -> int:
    import logging

    from eventferry.adapters import run_adapter
    from eventferry.adapters.core import AdapterError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_adapter(config, stop)
    except AdapterError as error:
        logging.getLogger("eventferry.adapters").error("adapter stopped: %s", error)
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        # e.g. the metrics port is taken
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
