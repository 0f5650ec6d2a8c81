"""KafkaSource and RocketMQSource: the adapter Deployment, and the source's status.

One reconcile does everything, from whichever event started it (the source changed, its Deployment
changed, or the retry timer of a source that is not Ready): resolve the sink, check the Secrets,
create or update the Deployment (server-side apply, only when it lacks something), then write the
status from the Deployment's own status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from eventferry.apis.duck import SecretKeySelector
from eventferry.apis.kafkasource import KafkaSource
from eventferry.apis.meta import DEFAULT_NAMESPACE
from eventferry.apis.rocketmqsource import RocketMQSource
from eventferry.contract.compile import effective_delivery
from eventferry.contract.model import Delivery
from eventferry.contract.resolve import Unresolvable
from eventferry.controller.contracts import resolve
from eventferry.controller.kube import resource_path
from eventferry.controller.status_writer import StatusWriter
from eventferry.controller.views import slim
from eventferry.resources.adapter import (
    adapter_deployment,
    ce_attributes,
    deployment_name,
    secret_refs,
    selector,
)
from eventferry.resources.conditions import now_rfc3339, unknown
from eventferry.resources.status import (
    DEPLOYED,
    Resolution,
    SourceFacts,
    StatusProblem,
    deployed,
    source_status,
)
from eventferry.resources.subset import holds

if TYPE_CHECKING:
    from eventferry.controller.context import Context

log = logging.getLogger(__name__)

MODELS: dict[str, type[KafkaSource] | type[RocketMQSource]] = {
    "KafkaSource": KafkaSource, "RocketMQSource": RocketMQSource}


class SourceReconciler:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._locks: dict[str, asyncio.Lock] = {}
        self.statuses = StatusWriter(ctx)

    def forget(self, body: Mapping[str, Any]) -> None:
        self._locks.pop(str(body["metadata"].get("uid")), None)
        self.statuses.forget(body["metadata"].get("uid"))
        self.ctx.events.recovered(body)

    async def reconcile(self, raw: Mapping[str, Any]) -> None:
        body = slim(raw)
        # Handlers of the source and of its Deployment may both start a reconcile: one at a time.
        lock = self._locks.setdefault(str(body["metadata"].get("uid")), asyncio.Lock())
        async with lock:
            with self.ctx.metrics.reconcile(str(body["kind"])):
                await self._reconcile(body)

    async def _reconcile(self, body: dict[str, Any]) -> None:
        kind, metadata = str(body["kind"]), body["metadata"]
        namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
        try:
            source = MODELS[kind].model_validate({k: v for k, v in body.items() if k != "status"})
        except ValidationError as error:
            first = error.errors()[0]
            why = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
            facts = SourceFacts(Resolution.failed("InvalidSpec", why), unknown(DEPLOYED, "InvalidSpec", why),
                                StatusProblem("InvalidSpec", why))
            await self._write_status(body, facts)
            return
        resolver = self.ctx.views.resolver()
        sink = resolve(resolver, source.spec.sink, namespace)
        delivery: Delivery | None = None
        problem: StatusProblem | None = None
        if source.spec.delivery is not None:
            try:
                delivery = effective_delivery(source.spec.delivery, None, resolver, namespace)
            except Unresolvable as error:
                problem = StatusProblem(error.reason, f"spec.delivery.deadLetterSink: {error}")
        problem = problem or await self._missing_secrets(namespace, secret_refs(source))

        path = resource_path("apps/v1", "deployments", namespace, deployment_name(source))
        current = await self.ctx.api.get(path)
        if sink.uri is not None and problem is None:
            desired = adapter_deployment(source, sink_uri=sink.uri, delivery=delivery, settings=self.ctx.config.adapter)
            current = await self._apply(path, current, desired)
        replicas = int(((current or {}).get("status") or {}).get("replicas") or 0)
        facts = SourceFacts(sink, deployed(current), problem, consumers=replicas, selector=selector(source),
                            ce_attributes=ce_attributes(source))
        await self._write_status(body, facts)

    async def _apply(self, path: str, current: dict[str, Any] | None,
                     desired: dict[str, Any]) -> dict[str, Any] | None:
        if current is not None and holds(current, desired):
            return current  # nothing to change: no write, the resourceVersion stays
        if current is not None and (current.get("spec") or {}).get("selector") != desired["spec"]["selector"]:
            # Left by a deleted source of the same name (no garbage collector ran): its selector is
            # immutable, so it is replaced rather than patched.
            await self.ctx.api.request("DELETE", path, params={"propagationPolicy": "Background"})
            log.info("replaced Deployment %s, which belonged to an earlier source of the same name", path)
        applied = await self.ctx.api.apply(path, desired)
        log.info("applied adapter Deployment %s/%s", desired["metadata"]["namespace"], desired["metadata"]["name"])
        return applied

    async def _missing_secrets(self, namespace: str, refs: list[SecretKeySelector]) -> StatusProblem | None:
        """Whether every Secret key the spec needs exists; the values are read only to see the keys."""
        found: dict[str, dict[str, Any] | None] = {}
        missing: list[str] = []
        for ref in refs:
            if ref.optional:
                continue
            if ref.name not in found:
                found[ref.name] = await self.ctx.api.get(resource_path("v1", "secrets", namespace, ref.name))
            secret = found[ref.name]
            if secret is None:
                missing.append(f"Secret {namespace}/{ref.name} does not exist")
            elif ref.key not in (secret.get("data") or {}):
                missing.append(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
        found.clear()
        if not missing:
            return None
        return StatusProblem("SecretNotFound", "; ".join(dict.fromkeys(missing)) +
                       ": the adapter is deployed once it is there")

    async def _write_status(self, body: dict[str, Any], facts: SourceFacts) -> None:
        metadata = body["metadata"]
        status = source_status(facts, body.get("status"), metadata.get("generation"), now_rfc3339())
        await self.statuses.write(body, status)


def owner_of(deployment: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the source that controls an adapter Deployment."""
    for ref in (deployment.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller") and ref.get("kind") in MODELS and str(ref.get("apiVersion", "")).startswith(
                "eventferry.dev/"):
            return str(ref["kind"]), str(ref["name"])
    return None
