"""The sources of ``eventferry run``: one adapter per KafkaSource / RocketMQSource manifest, in-process.

Sinks and dead-letter sinks resolve as for Triggers (a Broker ref points at the local broker);
Secret keys come from ``v1 Secret`` manifests given with the others. A change to the source
manifests restarts their adapters (each stops cleanly: in-flight deliveries end, offsets commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from pydantic import ValidationError

from eventferry.adapters import ConfigError, config_from_manifest, run_adapter
from eventferry.apis import KafkaSource, RocketMQSource
from eventferry.apis.meta import DEFAULT_NAMESPACE
from eventferry.contract.compile import effective_delivery
from eventferry.contract.resolve import Resolver, Unresolvable
from eventferry.embedded.manifests import Manifests
from eventferry.kafka.connection import MappingSecrets

log = logging.getLogger("eventferry.run")


class EmbeddedSources:
    def __init__(self) -> None:
        self._running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
        self._applied = ""

    async def apply(self, manifests: Manifests, resolver: Resolver) -> None:
        wanted = json.dumps([manifests.sources, sorted(manifests.secrets.items())], sort_keys=True, default=str)
        if wanted == self._applied:
            return
        await self.stop()
        self._applied = wanted
        for document in manifests.sources:
            self._start(document, manifests, resolver)

    def _start(self, document: dict[str, Any], manifests: Manifests, resolver: Resolver) -> None:
        kind = document.get("kind")
        namespace = document["metadata"].get("namespace") or DEFAULT_NAMESPACE
        label = f"{kind} {namespace}/{document['metadata'].get('name')}"
        try:
            source = (KafkaSource if kind == "KafkaSource" else RocketMQSource).model_validate(document)
            sink = resolver.resolve(source.spec.sink, namespace)
            delivery = (effective_delivery(source.spec.delivery, None, resolver, namespace)
                        if source.spec.delivery else None)
            secrets = MappingSecrets({(name, key): value for (ns, name), data in manifests.secrets.items()
                                      if ns == namespace for key, value in data.items()})
            config = config_from_manifest(document, sink, secrets=secrets, delivery=delivery)
        except (ValidationError, Unresolvable, ConfigError) as error:
            log.error("%s not started: %s", label, error)
            return
        stop = asyncio.Event()
        task = asyncio.create_task(run_adapter(config, stop), name=label)
        task.add_done_callback(lambda done: _report(label, done))
        self._running.append((stop, task))
        log.info("%s started: sending to %s", label, sink)

    async def stop(self) -> None:
        for stop, _ in self._running:
            stop.set()
        for _, task in self._running:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
        self._running.clear()
        self._applied = ""


def _report(label: str, task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("%s stopped: %s", label, error)
