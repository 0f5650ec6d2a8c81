"""The ``eventferry`` command: one entry point, a subcommand per component.

Each subcommand lives in ``eventferry.commands.<name>`` with ``register(subparsers)`` and
``run(args) -> int``; its module is imported only when the command runs or its help is built, so a
command's heavy imports (kopf, aiokafka, rocketmq) never slow down the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from eventferry import __version__

# Subcommand name -> module under eventferry.commands. One line per command.
COMMANDS: dict[str, str] = {
    "run": "run",
    "demo": "demo",
    "send": "send",
    "broker": "broker",
    "crds": "crds",
    "operator": "operator",
    "adapter": "adapter",
}


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"eventferry.commands.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventferry", description="Knative-style eventing for Kubernetes.")
    parser.add_argument("--version", action="version", version=f"eventferry {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        _load(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    result: int = _load(args.command).run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
