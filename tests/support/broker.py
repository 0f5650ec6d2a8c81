"""Starting the broker data plane in the test's event loop, from manifest text, as ``eventferry run`` does."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from eventferry.dataplane.dataplane import DataPlane, DataPlaneSettings
from eventferry.dataplane.server import Server
from eventferry.embedded.runtime import Embedded


@dataclass
class RunningBroker:
    dataplane: DataPlane
    server: Server
    embedded: Embedded
    manifest: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def url(self, namespace: str = "default", name: str = "default") -> str:
        return f"{self.base_url}/{namespace}/{name}"

    async def metrics_text(self) -> str:
        async with aiohttp.ClientSession() as session, session.get(f"{self.base_url}/metrics") as resp:
            assert resp.status == 200
            return await resp.text()

    async def reload(self, manifests: str) -> None:
        self.manifest.write_text(textwrap.dedent(manifests))
        await self.embedded.load()
        await self.embedded.apply_current()

    async def stop(self) -> None:
        await self.embedded.close()
        await self.server.stop(drain_timeout=2)


async def start_broker(tmp_path: Path, manifests: str, services: dict[tuple[str, str], str] | None = None,
                       settings: DataPlaneSettings | None = None) -> RunningBroker:
    manifest = tmp_path / "manifests.yaml"
    manifest.write_text(textwrap.dedent(manifests))
    dataplane = DataPlane(settings or DataPlaneSettings())
    server = Server(dataplane, "127.0.0.1", 0)
    await server.start()
    embedded = Embedded([manifest], server, services or {}, (settings.kafka_bootstrap_servers if settings else None))
    await embedded.load()
    await embedded.apply_current()
    return RunningBroker(dataplane, server, embedded, manifest)
