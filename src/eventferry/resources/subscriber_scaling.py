"""Scaling a Trigger's subscriber workload with the Trigger's backlog in the broker. Pure: the clock is passed in.

- The workload is the one named by the ``workload`` annotation, else the only Deployment or StatefulSet
  of the namespace whose pod template the subscriber Service selects (``workload_for``).
- Several Triggers to one workload add up: it wants ``ceil(sum(backlog / target))`` replicas, between the
  highest ``min-scale`` and the highest ``max-scale`` of its Triggers, at least one while any event is held.
- Up at once; down only to the highest count wanted within the scale-down delay (``Recommendations``, as
  the sources' built-in engine), and never below what the events in flight need (``decide``).
- Class ``keda``: a ScaledObject per workload (``scaled_object``), owned by its Triggers, whose ``metrics-api``
  trigger reads ``sum(backlog / target)`` from the operator (``/backlog/triggers/...``) at a target of 1, so
  KEDA's HPA asks for the same replicas; the operator still wakes a workload at zero at once.
- A subscriber woken from zero that has no ready endpoint after its activation timeout is released: the
  broker stops holding its events, which then take the normal retry and dead-letter path
  (``activation``), and the Trigger's ``SubscriberScaled`` condition says why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventferry.apis.autoscaling import WORKLOAD_KINDS, SubscriberScaling
from eventferry.apis.meta import API_VERSION
from eventferry.contract.activation import TriggerBacklog
from eventferry.resources.conditions import Cond, false, true, unknown
from eventferry.resources.names import PART_OF
from eventferry.resources.scaling import KEDA_API_VERSION, Decision, Recommendations

SUBSCRIBER_SCALED = "SubscriberScaled"
WorkloadKey = tuple[str, str, str]  # namespace, kind, name
WORKLOAD_RESOURCES = {"Deployment": "deployments", "StatefulSet": "statefulsets"}


class WorkloadProblem(Exception):
    """Why a Trigger's subscriber workload cannot be scaled: ``reason`` goes to the condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def workload_for(scaling: SubscriberScaling, service: Mapping[str, str] | None, service_name: str,
                 workloads: Iterable[Mapping[str, Any]]) -> tuple[str, str]:
    """(kind, name) of the workload to scale. ``service``: the Service's selector (None: no such Service);
    ``workloads``: the Deployments and StatefulSets of the namespace (kind, metadata, spec)."""
    if scaling.workload is not None:
        return scaling.workload
    if service is None:
        raise WorkloadProblem("ServiceNotFound", f"Service {service_name} does not exist")
    if not service:
        raise WorkloadProblem("WorkloadNotFound", f"Service {service_name} has no selector: name the workload with "
                                                  "the annotation autoscaling.eventferry.dev/workload")
    found = []
    for workload in workloads:
        labels = ((((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {})
        if all(labels.get(key) == value for key, value in service.items()):
            found.append((str(workload.get("kind")), str(workload["metadata"]["name"])))
    found = sorted(item for item in found if item[0] in WORKLOAD_KINDS)
    if len(found) == 1:
        return found[0]
    selector = ",".join(f"{k}={v}" for k, v in sorted(service.items()))
    if not found:
        raise WorkloadProblem("WorkloadNotFound", f"no Deployment or StatefulSet has pods that Service "
                                                  f"{service_name} selects ({selector})")
    names = ", ".join(f"{kind}/{name}" for kind, name in found)
    raise WorkloadProblem("AmbiguousWorkload", f"Service {service_name} selects the pods of {names}: name the one "
                                               "to scale with the annotation autoscaling.eventferry.dev/workload")


@dataclass(frozen=True)
class Demand:
    """One Trigger's share of a workload: its backlog (from every data plane replica) and its settings."""

    backlog: TriggerBacklog
    scaling: SubscriberScaling


def bounds(demands: Sequence[Demand]) -> tuple[int, int, int]:
    """(min-scale, max-scale, scale-down delay) of a workload: the highest of its Triggers'."""
    return (max(d.scaling.min_scale for d in demands), max(d.scaling.max_scale for d in demands),
            max(d.scaling.scale_down_delay for d in demands))


def wanted_replicas(demands: Sequence[Demand]) -> tuple[int, str]:
    """What the backlogs ask for now, and why (the words go to the status and the Events)."""
    low, high, _ = bounds(demands)
    total = sum(d.backlog.total for d in demands)
    if total == 0:
        return low, f"no backlog: min-scale {low}"
    need = math.ceil(sum(d.backlog.total / d.scaling.target for d in demands))
    targets = "/".join(sorted({str(d.scaling.target) for d in demands}))
    why = f"backlog {total} at {targets} in flight per replica: {need}"
    replicas = max(min(need, high), low, 1)
    if replicas < need:
        why += f", capped at {replicas} by max-scale"
    elif replicas > need:
        why += f", raised to {replicas} by min-scale"
    return replicas, why


def decide(demands: Sequence[Demand], current: int, history: Recommendations, now: float) -> Decision:
    """The replicas to run now: up at once, down only to the highest that the scale-down delay asked for,
    and never below what holds the events in flight (none is taken from a replica still answering)."""
    wanted, why = wanted_replicas(demands)
    _, _, delay = bounds(demands)
    held = history.add(now, wanted, delay)
    if wanted >= current:
        return Decision(wanted, wanted, why)
    replicas = min(current, held)
    if replicas > wanted:
        why += f"; held at {replicas} until the backlog has stayed lower for the scale-down delay ({delay}s)"
    in_flight = math.ceil(sum(d.backlog.in_flight / d.scaling.target for d in demands))
    if replicas < in_flight:
        replicas = min(current, in_flight)
        why += f"; held at {replicas} while events are in flight"
    return Decision(replicas, wanted, why)


def scaled_object_name(kind: str, name: str) -> str:
    return f"eventferry-{kind.lower()}-{name}"[:253]


def backlog_query(triggers: Iterable[tuple[str, int]]) -> str:
    """The query naming each Trigger and its target, read by the operator's ``/backlog/triggers/<ns>``."""
    return "&".join(f"trigger={name}:{target}" for name, target in sorted(triggers))


def scaled_object(workload: WorkloadKey, triggers: Sequence[tuple[Mapping[str, Any], SubscriberScaling]],
                  backlog_url: str) -> dict[str, Any]:
    """The ScaledObject of class ``keda``: KEDA scales ``workload`` to ``ceil(sum(backlog / target))`` replicas of its
    Triggers (``triggers``: each one's metadata and scaling), which own it (it goes with the last of them)."""
    namespace, kind, name = workload
    low, high, delay = bounds([Demand(TriggerBacklog(), scaling) for _, scaling in triggers])
    polling = min(scaling.polling_interval for _, scaling in triggers)
    query = backlog_query((str(meta["name"]), scaling.target) for meta, scaling in triggers)
    owners = [{"apiVersion": API_VERSION, "kind": "Trigger", "name": meta["name"], "uid": meta["uid"]}
              for meta, _ in sorted(triggers, key=lambda item: str(item[0]["name"]))]
    return {
        "apiVersion": KEDA_API_VERSION, "kind": "ScaledObject",
        "metadata": {"name": scaled_object_name(kind, name), "namespace": namespace,
                     "labels": {**PART_OF, "eventferry.dev/workload": f"{kind}.{name}"[:63]},
                     "ownerReferences": owners},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": name},
            "minReplicaCount": low, "maxReplicaCount": high, "pollingInterval": polling, "cooldownPeriod": delay,
            # A ScaledObject that never saw its Triggers active would otherwise scale a workload the operator
            # just woke back to zero at KEDA's first poll.
            "initialCooldownPeriod": delay,
            # The HPA's scale-down follows the delay too (its own default would wait 5 minutes).
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleDown": {"stabilizationWindowSeconds": delay}}}},
            "triggers": [{"type": "metrics-api", "name": "backlog", "metadata": {
                "url": f"{backlog_url.rstrip('/')}/backlog/triggers/{namespace}?{query}", "format": "json",
                "valueLocation": "replicas", "targetValue": "1", "activationTargetValue": "0"}}],
        },
    }


def replicas_metric(backlog: Mapping[str, TriggerBacklog], triggers: Iterable[tuple[str, int]]) -> tuple[float, int]:
    """(sum(backlog / target), backlog): what ``/backlog/triggers/<ns>`` answers KEDA for ``triggers`` (key, target)."""
    value, total = 0.0, 0
    for key, target in triggers:
        held = backlog.get(key, TriggerBacklog()).total
        value += held / target
        total += held
    return round(value, 3), total


@dataclass(frozen=True)
class Activation:
    released: bool
    """True: the broker no longer holds the Trigger's events (the subscriber missed its activation timeout)."""
    condition: Cond


def activation(workload: str, ready: int, desired: int, unready_for: float | None, timeout: int) -> Activation:
    """The subscriber's state for the Trigger: ``unready_for`` is how long the workload has had replicas wanted
    but no ready endpoint (None: it has one, or none is wanted)."""
    if ready > 0:
        return Activation(False, true(SUBSCRIBER_SCALED, "SubscriberReady",
                                      f"{ready} ready endpoint(s) of {workload}, {desired} replica(s) wanted"))
    if desired == 0 or unready_for is None:
        return Activation(False, true(SUBSCRIBER_SCALED, "ScaledToZero", f"{workload} is at zero: no backlog"))
    if unready_for <= timeout:
        return Activation(False, unknown(SUBSCRIBER_SCALED, "Activating",
                                         f"{workload} scaled to {desired}, waiting for a ready endpoint (activation "
                                         f"timeout {timeout}s); the broker holds the Trigger's events"))
    return Activation(True, false(SUBSCRIBER_SCALED, "ActivationTimeout",
                                  f"{workload} has had no ready endpoint for longer than its activation timeout "
                                  f"({timeout}s): the broker no longer holds the Trigger's events, they take the "
                                  "retry and dead-letter path; check the workload's pods (kubectl describe) and "
                                  "their readiness probe"))


def ready_endpoints(slices: Iterable[Mapping[str, Any]]) -> int:
    """Ready endpoints in the EndpointSlices of a Service (a ready condition that is unset counts as ready,
    as the EndpointSlice API says consumers should read it)."""
    count = 0
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or ():
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready", True) is not False and not conditions.get("terminating", False):
                count += 1
    return count
