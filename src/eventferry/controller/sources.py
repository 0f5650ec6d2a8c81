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

from eventferry.apis.autoscaling import BUILTIN, KEDA
from eventferry.apis.duck import SecretKeySelector
from eventferry.apis.kafkasource import KafkaSource
from eventferry.apis.meta import DEFAULT_NAMESPACE
from eventferry.apis.rocketmqsource import RocketMQSource
from eventferry.contract.compile import effective_delivery
from eventferry.contract.model import Delivery
from eventferry.contract.resolve import Unresolvable
from eventferry.controller.autoscaler import BuiltinAutoscaler
from eventferry.controller.backlog_endpoint import backlog_path
from eventferry.controller.contracts import resolve
from eventferry.controller.kube import ApiError, resource_path
from eventferry.controller.secret_refs import read_secret_refs
from eventferry.controller.status_writer import StatusWriter
from eventferry.controller.views import slim
from eventferry.kafka.connection import MappingSecrets, SecretLookup, security
from eventferry.resources.adapter import (
    Source,
    adapter_deployment,
    adapter_service_account,
    autoscaled,
    ce_attributes,
    deployment_name,
    secret_refs,
    selector,
)
from eventferry.resources.conditions import now_rfc3339, unknown
from eventferry.resources.scaling import (
    KEDA_API_VERSION,
    rocketmq_scaled_object,
    scaled_object,
    trigger_authentication,
)
from eventferry.resources.status import (
    DEPLOYED,
    Resolution,
    ScaleReport,
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
KEDA_PLURALS = {"TriggerAuthentication": "triggerauthentications", "ScaledObject": "scaledobjects"}


class SourceReconciler:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._locks: dict[str, asyncio.Lock] = {}
        self.statuses = StatusWriter(ctx)
        self.builtin = BuiltinAutoscaler(ctx, self._report_changed)

    def _report_changed(self, body: dict[str, Any]) -> None:
        """The built-in autoscaler decided something new: the status says so (from the latest body)."""
        metadata = body["metadata"]
        latest = self.ctx.views.source(str(body["kind"]), str(metadata.get("namespace")), str(metadata["name"]))
        if latest is not None and (latest.get("metadata") or {}).get("uid") == metadata.get("uid"):
            self.ctx.spawn(self.reconcile(latest), name=f"status of {body['kind']} {metadata['name']}")

    def forget(self, body: Mapping[str, Any]) -> None:
        self.builtin.stop(str(body["metadata"].get("uid")))
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
            where = ".".join(str(p) for p in first["loc"])  # empty for a rule of the whole object
            why = f"{where}: {first['msg']}" if where else str(first["msg"]).removeprefix("Value error, ")
            self.builtin.stop(str(metadata.get("uid")))
            facts = SourceFacts(Resolution.failed("InvalidSpec", why), unknown(DEPLOYED, "InvalidSpec", why),
                                StatusProblem("InvalidSpec", why))
            await self._write_status(body, facts)
            return
        resolver = self.ctx.views.resolver(broker_audiences=self.ctx.config.authentication == "required")
        sink = resolve(resolver, source.spec.sink, namespace)
        sink_audience = resolver.audience(source.spec.sink, namespace) if sink.uri is not None else None
        delivery: Delivery | None = None
        problem: StatusProblem | None = None
        if source.spec.delivery is not None:
            try:
                delivery = effective_delivery(source.spec.delivery, None, resolver, namespace)
            except Unresolvable as error:
                problem = StatusProblem(error.reason, f"spec.delivery.deadLetterSink: {error}")
        secrets = MappingSecrets()
        if problem is None:
            problem, secrets = await self._read_secrets(namespace, secret_refs(source))

        path = resource_path("apps/v1", "deployments", namespace, deployment_name(source))
        current = await self.ctx.api.get(path)
        if sink.uri is not None and problem is None:
            settings = self.ctx.config.adapter
            if sink_audience and not settings.service_account:
                await self._apply_service_account(source)
            desired = adapter_deployment(source, sink_uri=sink.uri, delivery=delivery, settings=settings,
                                         sink_audience=sink_audience,
                                         sink_ca_certs=resolver.ca_certs(source.spec.sink, namespace))
            current = await self._apply(path, current, desired)
        report = await self._autoscale(source, body, current, secrets)
        replicas = int(((current or {}).get("status") or {}).get("replicas") or 0)
        account = ((current or {}).get("spec") or {}).get("template", {}).get("spec", {}).get("serviceAccountName")
        facts = SourceFacts(sink, deployed(current), problem, consumers=replicas, selector=selector(source),
                            ce_attributes=ce_attributes(source), scaling=report, sink_audience=sink_audience,
                            service_account=account if sink_audience else None)
        await self._write_status(body, facts)

    async def _autoscale(self, source: Source, body: dict[str, Any], deployment: dict[str, Any] | None,
                         secrets: SecretLookup) -> ScaleReport | None:
        """Starts, changes or stops the source's autoscaling; what it is doing, for the status."""
        uid, scaling = str(source.metadata.uid), source.scaling
        previous_class = ((body.get("status") or {}).get("autoscaling") or {}).get("class")
        if scaling.scaling_class != BUILTIN:
            self.builtin.stop(uid)
        if scaling.scaling_class != KEDA and previous_class == KEDA:
            await self._delete_keda_objects(source)
        if not scaling.enabled:
            return None
        if not autoscaled(source):
            return ScaleReport(scaling.scaling_class, problem=StatusProblem(
                "AutoscalingNotSupported", "a RocketMQ consumer group's backlog is read from its name servers: "
                "set spec.nameServers to autoscale; until then spec.consumers replicas run"))
        if deployment is None:
            return ScaleReport(scaling.scaling_class, message="waiting for the adapter Deployment")
        if scaling.scaling_class == BUILTIN:
            problem = self.builtin.ensure(source, body, secrets)
            return ScaleReport(BUILTIN, problem=problem) if problem else self.builtin.report(uid)
        if isinstance(source, KafkaSource):
            try:  # the one check of the SASL mechanism, as the adapter and the built-in engine read it
                sasl, _ = security(source.spec.net, secrets)
            except ValueError as error:
                return ScaleReport(KEDA, problem=StatusProblem("InvalidCredentials", f"no KEDA trigger: {error}"))
            objects = [trigger_authentication(source),
                       scaled_object(source, scaling, sasl.mechanism if sasl else None)]
        elif self.ctx.config.backlog_url is None:
            return ScaleReport(KEDA, problem=StatusProblem(
                "BacklogEndpointNotConfigured", "KEDA reads a RocketMQ group's backlog from the operator's "
                "/backlog endpoint: run the operator with --backlog-url (the chart sets it)"))
        else:
            url = self.ctx.config.backlog_url.rstrip("/") + backlog_path(source.namespace, source.metadata.name)
            objects = [rocketmq_scaled_object(source, scaling, url)]
        return await self._apply_keda(source, deployment, [obj for obj in objects if obj is not None])

    async def _apply_keda(self, source: Source, deployment: dict[str, Any],
                          objects: list[dict[str, Any]]) -> ScaleReport:
        applied: dict[str, Any] = {}
        for obj in objects:
            path = resource_path(KEDA_API_VERSION, KEDA_PLURALS[obj["kind"]], source.namespace,
                                 obj["metadata"]["name"])
            try:
                # As for the Deployment: a pass that changes nothing writes nothing.
                current = await self.ctx.api.get(path)
                if current is None or not holds(current, obj):
                    current = await self.ctx.api.apply(path, obj)
                applied = current
            except ApiError as error:
                if error.status == 404:
                    return ScaleReport(KEDA, problem=StatusProblem(
                        "KEDANotInstalled", f"the API server does not know {obj['kind']} ({KEDA_API_VERSION}): "
                        "install KEDA, or set the annotation autoscaling.eventferry.dev/class to builtin"))
                return ScaleReport(KEDA, problem=StatusProblem("ScaledObjectNotApplied", f"{obj['kind']}: {error}"))
        conditions = {c.get("type"): c for c in (applied.get("status") or {}).get("conditions") or ()}
        said = ", ".join(f"{kind}={conditions[kind].get('status')}" for kind in ("Ready", "Active")
                         if kind in conditions)
        wanted = (deployment.get("spec") or {}).get("replicas")
        return ScaleReport(KEDA, desired=wanted, message=f"ScaledObject {applied['metadata']['name']}"
                           + (f": {said}" if said else ": not yet seen by KEDA"))

    async def _delete_keda_objects(self, source: Source) -> None:
        for kind, plural in KEDA_PLURALS.items():
            path = resource_path(KEDA_API_VERSION, plural, source.namespace, deployment_name(source))
            try:
                await self.ctx.api.request("DELETE", path)
                log.info("deleted %s %s/%s: %s is no longer autoscaled by KEDA", kind, source.namespace,
                         deployment_name(source), source.key)
            except ApiError as error:
                if error.status != 404:
                    raise

    async def _apply_service_account(self, source: Source) -> None:
        desired = adapter_service_account(source)
        path = resource_path("v1", "serviceaccounts", source.namespace, desired["metadata"]["name"])
        current = await self.ctx.api.get(path)
        if current is None or not holds(current, desired):
            await self.ctx.api.apply(path, desired)

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

    async def _read_secrets(self, namespace: str,
                            refs: list[SecretKeySelector]) -> tuple[StatusProblem | None, MappingSecrets]:
        problem, secrets = await read_secret_refs(self.ctx.api, namespace, refs)
        if problem is not None:
            problem = StatusProblem(problem.reason, f"{problem.message}: the adapter is deployed once it is there")
        return problem, secrets

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
