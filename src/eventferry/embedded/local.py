"""One local broker from manifest files, started and stopped as a unit: what ``eventferry run`` serves,
and what ``eventferry demo`` runs its example services and traffic against."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from aiohttp import web

from eventferry.dataplane.dataplane import DataPlane, DataPlaneSettings
from eventferry.dataplane.server import Server
from eventferry.embedded.display import ROUTES as DISPLAY_ROUTES
from eventferry.embedded.runtime import Embedded


class CannotListen(Exception):
    """The broker's address is taken or not ours; the message says which and what to do."""


@contextlib.asynccontextmanager
async def local_broker(paths: Sequence[Path], host: str, port: int, services: dict[tuple[str, str], str],
                       settings: DataPlaneSettings, display: bool = False) -> AsyncIterator[Embedded]:
    """Loads the manifests (ManifestError when they do not load), serves the data plane on ``host:port``
    (CannotListen), applies the contract and yields; on exit, stops the sources and drains the broker."""
    dataplane = DataPlane(settings)
    routes: Sequence[web.RouteDef] = DISPLAY_ROUTES if display else ()
    server = Server(dataplane, host, port, routes)
    embedded = Embedded(list(paths), server, services, settings.kafka_bootstrap_servers, display=display)
    await embedded.load()
    try:
        await server.start()
    except OSError as error:
        raise CannotListen(f"cannot listen on {host}:{port}: {error.strerror}; choose another --port") from None
    try:
        await embedded.apply_current()
        yield embedded
    finally:
        await embedded.close()
        await server.stop()
