"""The scaler of Trigger subscribers: a Trigger of autoscaling class ``builtin`` (or ``keda``) scales the workload
behind its subscriber Service with its backlog in the broker, from zero, and the broker holds its events
while that workload has no ready endpoint (``docs/autoscaling.md``).

One loop, woken at once by what changes the answer (a data plane's backlog report, an EndpointSlice, a
Trigger) and every second for what time changes (the scale-down delay, the activation timeout). Each pass:
1. groups the autoscaled Triggers by workload (``resources/subscriber_scaling.workload_for``);
2. adds up their backlogs from every data plane replica's report (``contract.activation.backlogs``) and
   decides the replicas (``decide``), set through the workload's ``scale`` subresource, with a ``Scaled``
   Event on each of its Triggers and a counted decision; class keda: applies the workload's ScaledObject
   (KEDA reads the same sum from ``/backlog/triggers/...``) and only wakes a workload at zero itself;
3. counts the ready endpoints of each subscriber Service (EndpointSlices) and writes them, or a release
   after the activation timeout, into the endpoints ConfigMap that every data plane replica follows;
4. keeps a report per Trigger, which the contract reconciler writes into the Trigger's status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from eventferry.apis.autoscaling import KEDA, PREFIX
from eventferry.apis.trigger import Trigger
from eventferry.contract.activation import (
    ENDPOINTS_CONFIGMAP,
    SubscriberEndpoints,
    TriggerBacklog,
    backlogs,
    endpoints_data,
)
from eventferry.controller.kube import ApiError, resource_path
from eventferry.controller.timing import wait_event
from eventferry.controller.views import Key, deleting
from eventferry.resources.conditions import false
from eventferry.resources.names import PART_OF, WATCHED
from eventferry.resources.scaling import KEDA_API_VERSION, Recommendations
from eventferry.resources.status import SubscriberScaleReport
from eventferry.resources.subscriber_scaling import (
    SUBSCRIBER_SCALED,
    WORKLOAD_RESOURCES,
    Demand,
    WorkloadKey,
    WorkloadProblem,
    activation,
    bounds,
    decide,
    scaled_object,
    scaled_object_name,
    workload_for,
)
from eventferry.resources.subset import holds

if TYPE_CHECKING:
    from eventferry.controller.context import Context

log = logging.getLogger(__name__)

TICK = 1.0
RESOLVE_EVERY = 30.0
"""Seconds before a Trigger's workload is looked up again (a Deployment created or relabelled later)."""
HELD_REFRESH = 5.0
"""Seconds between status refreshes while only the held count changes."""


@dataclass
class _Workload:
    history: Recommendations = field(default_factory=Recommendations)
    replicas: int | None = None
    """As last read or set through the scale subresource."""
    unready_since: float | None = None
    """Since when replicas are wanted and no endpoint is ready."""
    seen: bool = False


@dataclass
class _Resolved:
    fingerprint: tuple[Any, ...]
    at: float
    workload: tuple[str, str] | None = None
    problem: WorkloadProblem | None = None


class SubscriberScaler:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.backlog_data: Mapping[str, str] = {}
        """The data plane's backlog ConfigMap, as last seen (key: replica)."""
        self._wake = asyncio.Event()
        self._workloads: dict[WorkloadKey, _Workload] = {}
        self._resolved: dict[Key, _Resolved] = {}
        self._reports: dict[Key, SubscriberScaleReport] = {}
        self._reported_at: dict[Key, float] = {}
        self._written: dict[str, SubscriberEndpoints] | None = None
        self._autoscaling: set[Key] = set()
        """Triggers with an autoscaling annotation (``observe_trigger``): all a pass looks at."""
        self._scaled_objects: set[WorkloadKey] = set()
        """Workloads whose ScaledObject this operator applied (class keda)."""

    def poke(self) -> None:
        self._wake.set()

    def observe_trigger(self, key: Key, body: Mapping[str, Any] | None) -> None:
        """A Trigger changed (None: it is gone). Only Triggers with an autoscaling annotation are read by a pass,
        and only their changes wake the loop: with thousands of Triggers, each created or status-patched one
        woke a pass over all of them (half the operator's time while 5,000 were created)."""
        annotations = ((body or {}).get("metadata") or {}).get("annotations") or {}
        wanted = body is not None and not deleting(body) and any(k.startswith(PREFIX) for k in annotations)
        if wanted:
            self._autoscaling.add(key)
        elif key in self._autoscaling:
            self._autoscaling.discard(key)
        else:
            return
        self.poke()

    def on_backlog(self, data: Mapping[str, str]) -> None:
        self.backlog_data = dict(data)
        self.poke()

    def report(self, namespace: str, name: str) -> SubscriberScaleReport | None:
        return self._reports.get((namespace, name))

    async def run(self) -> None:
        await self.ctx.contracts.indexed.wait()
        while True:
            await wait_event(self._wake, TICK)
            self._wake.clear()
            try:
                with self.ctx.metrics.reconcile("SubscriberScale"):
                    await self.reconcile()
            except Exception:
                log.exception("subscriber scaling pass failed; trying again in %.0fs", TICK)

    # --- one pass ---------------------------------------------------------------------------------------

    async def reconcile(self) -> None:
        now = time.monotonic()
        triggers = self._autoscaled()
        backlog = backlogs(self.backlog_data, datetime.now(UTC), self.ctx.config.report_stale_after)
        groups: dict[WorkloadKey, list[tuple[Key, dict[str, Any], Trigger]]] = {}
        reports: dict[Key, SubscriberScaleReport] = {}
        endpoints: dict[str, SubscriberEndpoints] = {}
        for key, body, trigger in triggers:
            ref = trigger.spec.subscriber.ref
            if ref is None or ref.kind != "Service" or ref.api_version != "v1":
                message = ("the subscriber autoscaling class needs spec.subscriber.ref to be a Service (v1), whose "
                           "endpoints say when the subscriber is ready; this Trigger's events are delivered as usual")
                reports[key] = SubscriberScaleReport(false(SUBSCRIBER_SCALED, "SubscriberNotAService", message),
                                                     message=message)
                continue
            try:
                kind, name = await self._workload(key, trigger, now)
            except WorkloadProblem as problem:
                reports[key] = SubscriberScaleReport(false(SUBSCRIBER_SCALED, problem.reason, str(problem)),
                                                     message=str(problem))
                endpoints[trigger.key] = SubscriberEndpoints(released=True)  # nothing to wait for: deliver
                continue
            groups.setdefault((key[0], kind, name), []).append((key, body, trigger))
        for workload_key, members in groups.items():
            await self._scale(workload_key, members, backlog, now, reports, endpoints)
        for workload_key in [k for k in self._workloads if k not in groups]:
            del self._workloads[workload_key]
            self.ctx.metrics.forget_subscriber(*workload_key)
            await self._forget_scaled_object(workload_key, None)
        await self._write_endpoints(endpoints)
        self._publish(reports, now)

    def _autoscaled(self) -> list[tuple[Key, dict[str, Any], Trigger]]:
        found = []
        for key in sorted(self._autoscaling):
            body = self.ctx.views.trigger(*key)
            if body is None or deleting(body):
                continue
            try:
                trigger = Trigger.model_validate({k: v for k, v in body.items() if k != "status"})
            except ValidationError:
                continue  # the contract reconciler reports it as InvalidSpec
            if trigger.scaling.enabled:
                found.append((key, body, trigger))
        return found

    async def _workload(self, key: Key, trigger: Trigger, now: float) -> tuple[str, str]:
        """The Trigger's workload, looked up again when its Service's selector or its annotation changed, or
        every ``RESOLVE_EVERY`` seconds."""
        ref = trigger.spec.subscriber.ref
        assert ref is not None
        service = self.ctx.views.service_selector(ref.namespace or key[0], ref.name)
        fingerprint = (trigger.scaling.workload, ref.name, tuple(sorted((service or {}).items())), service is None)
        resolved = self._resolved.get(key)
        if resolved is None or resolved.fingerprint != fingerprint or now - resolved.at >= RESOLVE_EVERY:
            resolved = _Resolved(fingerprint, now)
            try:
                workloads = [] if trigger.scaling.workload or not service else await self._list_workloads(key[0])
                resolved.workload = workload_for(trigger.scaling, service, f"{key[0]}/{ref.name}", workloads)
            except WorkloadProblem as problem:
                resolved.problem = problem
            self._resolved[key] = resolved
        if resolved.problem is not None:
            raise resolved.problem
        assert resolved.workload is not None
        return resolved.workload

    async def _list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        found = []
        for kind, plural in WORKLOAD_RESOURCES.items():
            listed = await self.ctx.api.get(resource_path("apps/v1", plural, namespace)) or {}
            found += [{**item, "kind": kind} for item in listed.get("items") or ()]
        return found

    async def _scale(self, workload_key: WorkloadKey, members: list[tuple[Key, dict[str, Any], Trigger]],
                     backlog: Mapping[str, TriggerBacklog], now: float, reports: dict[Key, SubscriberScaleReport],
                     endpoints: dict[str, SubscriberEndpoints]) -> None:
        namespace, kind, name = workload_key
        label = f"{kind}/{name}"
        state = self._workloads.setdefault(workload_key, _Workload())
        demands = [Demand(backlog.get(trigger.key, TriggerBacklog()), trigger.scaling) for _, _, trigger in members]

        def unscalable(reason: str, message: str) -> None:
            for key, _, trigger in members:
                reports[key] = SubscriberScaleReport(false(SUBSCRIBER_SCALED, reason, message), workload=label,
                                                     message=message)
                endpoints[trigger.key] = SubscriberEndpoints(released=True)  # nothing to wait for: deliver

        classes = sorted({trigger.scaling.scaling_class for _, _, trigger in members})
        if len(classes) > 1:
            names = ", ".join(t.metadata.name for _, _, t in members)
            unscalable("MixedAutoscalingClasses", f"the Triggers {names} scale {label} with different autoscaling "
                                                  f"classes ({', '.join(classes)}): give them one")
            return
        scale_path = resource_path("apps/v1", WORKLOAD_RESOURCES[kind], namespace, name, "scale")
        scale = await self.ctx.api.get(scale_path)
        if scale is None:
            unscalable("WorkloadNotFound", f"{label} does not exist in namespace {namespace}")
            self._resolved.pop(members[0][0], None)
            return
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        if classes == [KEDA]:
            problem = await self._apply_scaled_object(workload_key, members)
            if problem is not None:
                unscalable(*problem)
                return
            replicas, reason = current, f"ScaledObject {scaled_object_name(kind, name)} (KEDA) sets the replicas"
            if current == 0 and any(d.backlog.total for d in demands):
                # KEDA would wake it at its next poll; a held event should not wait for that.
                replicas, reason = max(1, bounds(demands)[0]), "woken from zero by a held event; KEDA takes over"
        else:
            await self._forget_scaled_object(workload_key, state)
            if not state.seen:
                # What runs counts as just wanted: a restarted operator does not scale a busy workload down early.
                state.history.add(now, current, bounds(demands)[2])
            decision = decide(demands, current, state.history, now)
            replicas, reason = decision.replicas, decision.reason
        state.seen = True
        if replicas != current:
            await self._set_replicas(scale_path, label, current, replicas, reason, members)
        state.replicas = replicas
        self._observe(workload_key, state, members, demands, replicas, reason, now, reports, endpoints)

    async def _set_replicas(self, scale_path: str, label: str, current: int, replicas: int, reason: str,
                            members: list[tuple[Key, dict[str, Any], Trigger]]) -> None:
        await self.ctx.api.merge_patch(scale_path, {"spec": {"replicas": replicas}})
        direction = "up" if replicas > current else "down"
        self.ctx.metrics.scaling_decisions.labels("Subscriber", direction).inc()
        message = f"{label} scaled from {current} to {replicas}: {reason}"
        log.info("Trigger(s) %s: %s", ", ".join(t.key for _, _, t in members), message)
        for _, body, _ in members:
            await self.ctx.events.post(body, "Normal", "Scaled", message)

    def _observe(self, workload_key: WorkloadKey, state: _Workload, members: list[tuple[Key, dict[str, Any], Trigger]],
                 demands: list[Demand], replicas: int, reason: str, now: float,
                 reports: dict[Key, SubscriberScaleReport], endpoints: dict[str, SubscriberEndpoints]) -> None:
        """The subscriber's ready endpoints, the activation state of each Trigger, and their reports."""
        namespace, kind, name = workload_key
        label = f"{kind}/{name}"
        services = {t.spec.subscriber.ref.name for _, _, t in members if t.spec.subscriber.ref is not None}
        ready = sum(self.ctx.views.ready_endpoints(namespace, service) for service in services)
        if ready > 0 or replicas == 0:
            state.unready_since = None
        elif state.unready_since is None:
            state.unready_since = now
        unready_for = None if state.unready_since is None else now - state.unready_since
        self.ctx.metrics.subscriber_scaling(namespace, label, replicas, ready)
        for (key, _, trigger), demand in zip(members, demands, strict=True):
            held = demand.backlog.waiting + demand.backlog.parked
            state_of = activation(label, ready, replicas, unready_for, trigger.scaling.activation_timeout)
            endpoints[trigger.key] = SubscriberEndpoints(ready=ready, released=state_of.released)
            reports[key] = SubscriberScaleReport(state_of.condition, workload=label, desired=replicas,
                                                 ready=ready, held=held, message=reason)

    async def _apply_scaled_object(self, workload_key: WorkloadKey,
                                   members: list[tuple[Key, dict[str, Any], Trigger]]) -> tuple[str, str] | None:
        """Applies the workload's ScaledObject when the stored one lacks what it should hold; a problem else."""
        if self.ctx.config.backlog_url is None:
            return ("BacklogEndpointNotConfigured", "KEDA reads the Triggers' backlog from the operator's /backlog "
                    "endpoint: run the operator with --backlog-url (the chart sets it)")
        wanted = scaled_object(workload_key, [(body["metadata"], t.scaling) for _, body, t in members],
                               self.ctx.config.backlog_url)
        path = resource_path(KEDA_API_VERSION, "scaledobjects", workload_key[0], wanted["metadata"]["name"])
        try:
            current = await self.ctx.api.get(path)
            if current is None or not holds(current, wanted):
                await self.ctx.api.apply(path, wanted)
        except ApiError as error:
            if error.status == 404:
                return ("KEDANotInstalled", f"the API server does not know ScaledObject ({KEDA_API_VERSION}): "
                        "install KEDA, or set the annotation autoscaling.eventferry.dev/class to builtin")
            return ("ScaledObjectNotApplied", f"ScaledObject {wanted['metadata']['name']}: {error}")
        self._scaled_objects.add(workload_key)
        return None

    async def _forget_scaled_object(self, workload_key: WorkloadKey, state: _Workload | None) -> None:
        """Deletes the workload's ScaledObject once its Triggers no longer use KEDA (on the first pass after a
        restart too, when the operator cannot know whether one was left)."""
        if workload_key not in self._scaled_objects and (state is None or state.seen):
            return
        namespace, kind, name = workload_key
        path = resource_path(KEDA_API_VERSION, "scaledobjects", namespace, scaled_object_name(kind, name))
        try:
            await self.ctx.api.request("DELETE", path)
            log.info("deleted ScaledObject %s/%s: %s/%s is no longer scaled by KEDA", namespace,
                     scaled_object_name(kind, name), kind, name)
        except ApiError as error:
            if error.status != 404:
                log.warning("deleting ScaledObject %s/%s failed: %s", namespace, scaled_object_name(kind, name),
                            error)
                return
        self._scaled_objects.discard(workload_key)

    async def _write_endpoints(self, endpoints: dict[str, SubscriberEndpoints]) -> None:
        if endpoints == self._written:
            return
        namespace = self.ctx.config.system_namespace
        body = {"apiVersion": "v1", "kind": "ConfigMap", "data": endpoints_data(endpoints),
                "metadata": {"name": ENDPOINTS_CONFIGMAP, "namespace": namespace, "labels": {**PART_OF, **WATCHED}}}
        try:
            await self.ctx.api.apply(resource_path("v1", "configmaps", namespace, ENDPOINTS_CONFIGMAP), body)
        except ApiError as error:
            log.warning("writing ConfigMap %s/%s failed (tried again next pass): %s", namespace,
                        ENDPOINTS_CONFIGMAP, error)
            return
        self._written = endpoints

    def _publish(self, reports: dict[Key, SubscriberScaleReport], now: float) -> None:
        """Pokes the contract reconciler (which writes the Triggers' status) when a report changed: at once for
        the condition and the replicas, every ``HELD_REFRESH`` seconds for the held count alone."""
        changed = False
        for key, report in reports.items():
            previous = self._reports.get(key)
            moved = previous is None or (previous.condition, previous.desired, previous.ready, previous.workload) != \
                (report.condition, report.desired, report.ready, report.workload)
            if moved or (previous is not None and previous.held != report.held
                         and now - self._reported_at.get(key, 0.0) >= HELD_REFRESH):
                changed = True
                self._reported_at[key] = now
            elif previous is not None:
                reports[key] = previous  # the held count the status shows stays until its refresh is due
        if set(self._reports) != set(reports):
            changed = True
        self._reports = reports
        for key in [k for k in self._reported_at if k not in reports]:
            del self._reported_at[key]
        if changed:
            self.ctx.contracts.poke()

