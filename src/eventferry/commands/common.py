"""Options shared by several subcommands."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Literal

from eventferry.apis.meta import DEFAULT_NAMESPACE

if TYPE_CHECKING:  # the data plane is imported only by the commands that run it
    from eventferry.dataplane.dataplane import DataPlaneSettings


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
        services[(namespace or DEFAULT_NAMESPACE, name)] = url
    return services


def add_ingress_limits(parser: argparse.ArgumentParser) -> None:
    """The ingress's limits on what clients send; defaults from DataPlaneSettings (their one home)."""
    from eventferry.dataplane.dataplane import DataPlaneSettings

    defaults = DataPlaneSettings()
    parser.add_argument("--max-event-bytes", type=int, default=defaults.max_event_bytes,
                        help="largest request body (bytes); larger ones get 413 (default %(default)s)")
    parser.add_argument("--body-timeout", type=float, default=defaults.body_timeout,
                        help="seconds a request body may take to arrive; slower ones get 408 (default %(default)s)")
    parser.add_argument("--idle-timeout", type=float, default=defaults.idle_timeout,
                        help="seconds before an idle or half-sent connection is closed (default %(default)s)")
    parser.add_argument("--max-event-types", type=int, default=defaults.max_event_types,
                        help="distinct event types with metric series of their own; later ones count as 'other' "
                             "(default %(default)s)")


def dataplane_settings(args: argparse.Namespace,
                       role: Literal["all", "ingress", "dispatcher"] = "all") -> DataPlaneSettings:
    """The data plane's settings from the options of ``run`` and ``broker`` (``add_ingress_limits``)."""
    from eventferry.dataplane.dataplane import DataPlaneSettings, replica_instance_id

    bootstrap = [s for s in (args.kafka_bootstrap_servers or "").split(",") if s] or None
    return DataPlaneSettings(max_event_bytes=args.max_event_bytes, kafka_bootstrap_servers=bootstrap,
                             body_timeout=args.body_timeout, idle_timeout=args.idle_timeout,
                             max_event_types=args.max_event_types, role=role,
                             instance_id=replica_instance_id(args.port))
