"""The embedded mode behind ``eventferry run``: manifests -> contract -> local data plane (and sources).

Uses the same compile function as the operator; Brokers are addressed at
``http://HOST:PORT/<namespace>/<name>``, Service refs through the ``--service`` mapping. Edits to
the manifest files are picked up while running; an edit that does not load keeps the running
configuration and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path

from eventferry.contract.compile import Compiled, compile_contract
from eventferry.contract.resolve import Resolver
from eventferry.contract.senders import ResolvedPolicy, SenderAuthorization
from eventferry.dataplane.server import Server
from eventferry.embedded.display import display_url
from eventferry.embedded.manifests import ManifestError, Manifests, load_manifests, manifest_files
from eventferry.embedded.sources import EmbeddedSources
from eventferry.resources.eventpolicy import resolve_senders

log = logging.getLogger("eventferry.run")


class Embedded:
    def __init__(self, paths: list[Path], server: Server, services: dict[tuple[str, str], str],
                 kafka_bootstrap: list[str] | None, display: bool = False,
                 senders: SenderAuthorization | None = None) -> None:
        """``senders``: Brokers check senders' tokens and let in whom the manifests' EventPolicies (resolved
        into it at each load), else its mode, allow; None: anyone who reaches the address may send."""
        self.paths = paths
        self.senders = senders
        self.display = display  # unmapped Service refs go to the built-in event display
        self.server = server
        self.services = services
        self.kafka_bootstrap = kafka_bootstrap
        self.manifests = Manifests()
        self.compiled: Compiled | None = None
        self.generation = 0
        self._stamps: dict[Path, float] = {}
        self.sources = EmbeddedSources()

    def base_url(self) -> str:
        return f"http://{self.server.host}:{self.server.port}"

    async def load(self) -> None:
        self._stamps = self._file_stamps()
        self.manifests = load_manifests(self.paths)
        for item in self.manifests.ignored:
            log.warning("ignored (not an eventferry.dev manifest or a ConfigMap): %s", item)
        if self.senders is not None:
            if self.manifests.sources:
                raise ManifestError("sources run in this process and present no token: with --authentication "
                                    "required, run them in a cluster (or run without it)")
            self.senders = SenderAuthorization(self.senders.mode, tuple(
                ResolvedPolicy(policy, resolve_senders(policy).subjects) for policy in self.manifests.eventpolicies))
        elif self.manifests.eventpolicies:
            log.warning("%d EventPolicy manifest(s) not enforced: senders are not authenticated (run with "
                        "--authentication required)", len(self.manifests.eventpolicies))
        if self.manifests.cluster_workloads:
            log.info("%d Deployment and Service manifest(s) not run here (a cluster's workloads; Service refs map "
                     "to --service URLs)", len(self.manifests.cluster_workloads))

    async def read_secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """A Secret among the manifests (a Kafka-class Broker's credentials), as last loaded."""
        return self.manifests.secrets.get((namespace, name))

    def _file_stamps(self) -> dict[Path, float]:
        stamps = {}
        for path in manifest_files(self.paths):
            with contextlib.suppress(OSError):
                stamps[path] = path.stat().st_mtime
        return stamps

    def _resolver(self) -> Resolver:
        known = {(b.namespace, b.metadata.name) for b in self.manifests.brokers}

        def broker_url(namespace: str, name: str) -> str | None:
            return f"{self.base_url()}/{namespace}/{name}" if (namespace, name) in known else None

        def service_url(namespace: str, name: str) -> str | None:
            mapped = self.services.get((namespace, name))
            if mapped is None and self.display:
                return display_url(self.base_url(), namespace, name)
            return mapped

        return Resolver(broker_url=broker_url, service_url=service_url)

    async def apply_current(self) -> None:
        self.generation += 1
        compiled = compile_contract(self.manifests.brokers, self.manifests.triggers, self._resolver(),
                                    generation=self.generation, config_maps=self.manifests.config_maps,
                                    default_kafka_bootstrap=self.kafka_bootstrap, autoscaling=False,
                                    senders=self.senders)
        for problem in compiled.problems:
            hint = " (map it with --service NAME.NAMESPACE=URL)" if problem.reason == "ServiceNotFound" else ""
            log.warning("%s %s/%s not routed: %s: %s%s", problem.kind, problem.namespace, problem.name,
                        problem.reason, problem.message, hint)
        await self.server.dataplane.apply(compiled.contract)
        self.compiled = compiled
        await self.sources.apply(self.manifests, self._resolver())

    def addresses(self) -> list[str]:
        assert self.compiled is not None
        lines = []
        for broker in self.compiled.contract.brokers:
            checked = f", tokens for audience {broker.audience}" if broker.audience else ""
            lines.append(f"Broker {broker.key} ({broker.broker_class}): {self.base_url()}{broker.path} "
                         f"({len(broker.triggers)} trigger(s){checked})")
        return lines

    async def watch(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Re-applies the manifests whenever a file changes, until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            stamps = self._file_stamps()
            if stamps == self._stamps:
                continue
            try:
                await self.load()
                await self.apply_current()
                log.info("manifests changed: contract generation %d applied", self.generation)
            except (ManifestError, ValueError) as error:
                self._stamps = stamps
                log.error("manifests changed but do not load; still running the previous ones: %s", error)

    async def close(self) -> None:
        await self.sources.stop()
