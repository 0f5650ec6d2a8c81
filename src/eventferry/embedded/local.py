"""One local broker from manifest files, started and stopped as a unit: what ``eventferry run`` serves,
and what ``eventferry demo`` runs its example services and traffic against."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from aiohttp import web

from eventferry.contract.senders import SenderAuthorization
from eventferry.dataplane.authentication import TokenVerifier, api_server_keys
from eventferry.dataplane.contract_configmap import ConfigMapClient
from eventferry.dataplane.dataplane import DataPlane, DataPlaneSettings
from eventferry.dataplane.server import Server
from eventferry.embedded.display import ROUTES as DISPLAY_ROUTES
from eventferry.embedded.runtime import Embedded
from eventferry.net.kubeconn import ApiConnection


class CannotListen(Exception):
    """The broker's address is taken or not ours; the message says which and what to do."""


class CannotVerifyTokens(Exception):
    """Senders' tokens were asked for, but no API server's keys can be read to verify them."""


@contextlib.asynccontextmanager
async def local_broker(paths: Sequence[Path], host: str, port: int, services: dict[tuple[str, str], str],
                       settings: DataPlaneSettings, display: bool = False,
                       senders: SenderAuthorization | None = None) -> AsyncIterator[Embedded]:
    """Loads the manifests (ManifestError when they do not load), serves the data plane on ``host:port``
    (CannotListen), applies the contract and yields; on exit, stops the sources and drains the broker.
    ``senders``: tokens are checked, with the keys of the API server of KUBECONFIG (CannotVerifyTokens)."""
    dataplane = DataPlane(settings)
    routes: Sequence[web.RouteDef] = DISPLAY_ROUTES if display else ()
    server = Server(dataplane, host, port, routes)
    embedded = Embedded(list(paths), server, services, settings.kafka_bootstrap_servers, display=display,
                        senders=senders)
    await embedded.load()
    # Kafka-class Brokers' credentials: from the Secret manifests among the files (read at each load).
    dataplane.read_secret = embedded.read_secret
    async with contextlib.AsyncExitStack() as stack:
        if senders is not None:
            dataplane.verifier = await stack.enter_async_context(_api_server_verifier())
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


@contextlib.asynccontextmanager
async def _api_server_verifier() -> AsyncIterator[TokenVerifier]:
    """A verifier with the service-account keys of the API server that KUBECONFIG names, kept fresh."""
    try:
        client = ConfigMapClient(ApiConnection.from_environment())
    except OSError as error:  # KubeConfigError among them
        raise CannotVerifyTokens(f"--authentication required needs an API server whose ServiceAccount tokens to "
                                 f"accept: set KUBECONFIG ({error})") from None
    verifier = TokenVerifier(api_server_keys(client.request))
    stop = asyncio.Event()
    try:
        await verifier.refresh()
        if not verifier.loaded:
            raise CannotVerifyTokens(f"cannot read the service-account keys of the API server at "
                                     f"{client.connection.server}: see the log above")
        keeping = asyncio.ensure_future(verifier.run(stop))
        try:
            yield verifier
        finally:
            stop.set()
            await keeping
    finally:
        await client.close()
