"""Options shared by several subcommands."""

from __future__ import annotations

import argparse
import logging


def add_logging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, getattr(logging, level)))


def parse_services(items: list[str]) -> dict[tuple[str, str], str]:
    """``NAME[.NAMESPACE]=URL`` options -> {(namespace, name): url}."""
    services: dict[tuple[str, str], str] = {}
    for item in items:
        target, sep, url = item.partition("=")
        if not sep or not target or not url.startswith(("http://", "https://")):
            raise ValueError(f"--service {item!r}: expected NAME[.NAMESPACE]=http://HOST:PORT[/PATH]")
        name, _, namespace = target.partition(".")
        services[(namespace or "default", name)] = url
    return services
