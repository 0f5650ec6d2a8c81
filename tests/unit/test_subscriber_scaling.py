"""Subscriber autoscaling, the pure parts: annotations, workload lookup, the replica decision, activation, the
data plane's gate and the formats the operator and the data plane exchange."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from eventferry.apis.autoscaling import BUILTIN, KEDA, SubscriberScaling, subscriber_scaling_of
from eventferry.apis.trigger import Trigger
from eventferry.contract.activation import (
    BacklogReport,
    SubscriberEndpoints,
    TriggerBacklog,
    backlogs,
    endpoints_data,
    endpoints_from_data,
)
from eventferry.contract.compile import autoscaled
from eventferry.contract.model import Autoscaled
from eventferry.contract.model import Trigger as ContractTrigger
from eventferry.dataplane.trigger_delivery import gate_of
from eventferry.delivery.pacing import Gate, Pacer
from eventferry.resources.scaling import Recommendations
from eventferry.resources.subscriber_scaling import (
    Demand,
    WorkloadProblem,
    activation,
    decide,
    ready_endpoints,
    replicas_metric,
    scaled_object,
    wanted_replicas,
    workload_for,
)

pytestmark = pytest.mark.unit

P = "autoscaling.eventferry.dev/"


# --- annotations --------------------------------------------------------------------------------------------

def test_the_defaults_and_every_annotation_are_read() -> None:
    assert subscriber_scaling_of({}) == SubscriberScaling()
    scaling = subscriber_scaling_of({P + "class": "builtin", P + "min-scale": "1", P + "max-scale": "8",
                                     P + "target": "4", P + "scale-down-delay": "60",
                                     P + "activation-timeout": "120", P + "workload": "StatefulSet/asr"})
    assert scaling == SubscriberScaling(BUILTIN, 1, 8, 4, 60, 120, 10, ("StatefulSet", "asr"))


@pytest.mark.parametrize(("annotations", "named"), [
    ({P + "class": "hpa"}, P + "class"),
    ({P + "target": "0"}, P + "target"),
    ({P + "activation-timeout": "soon"}, P + "activation-timeout"),
    ({P + "workload": "Pod/x"}, P + "workload"),
    ({P + "min-scale": "3", P + "max-scale": "2"}, P + "min-scale"),
])
def test_a_wrong_annotation_is_refused_by_name(annotations: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=f"metadata.annotations\\[{named}\\]"):
        subscriber_scaling_of(annotations)
    with pytest.raises(ValueError, match=named):
        Trigger.model_validate(_trigger(annotations))


def _trigger(annotations: dict[str, str], subscriber: dict[str, object] | None = None) -> dict[str, object]:
    return {"metadata": {"name": "asr", "namespace": "live", "annotations": annotations},
            "spec": {"broker": "default",
                     "subscriber": subscriber or {"ref": {"apiVersion": "v1", "kind": "Service", "name": "asr"}}}}


def test_only_a_service_subscriber_is_autoscaled_in_the_contract() -> None:
    on = {P + "class": "builtin", P + "target": "3"}
    assert autoscaled(Trigger.model_validate(_trigger(on))) == Autoscaled(target=3)
    assert autoscaled(Trigger.model_validate(_trigger({}))) is None
    assert autoscaled(Trigger.model_validate(_trigger(on, {"uri": "http://asr.example/"}))) is None


# --- the workload -------------------------------------------------------------------------------------------

def _deployment(name: str, labels: dict[str, str], kind: str = "Deployment") -> dict[str, object]:
    return {"kind": kind, "metadata": {"name": name}, "spec": {"template": {"metadata": {"labels": labels}}}}


def test_the_workload_is_the_one_the_service_selects_or_the_one_named() -> None:
    workloads = [_deployment("asr", {"app": "asr", "tier": "gpu"}), _deployment("web", {"app": "web"})]
    assert workload_for(SubscriberScaling(), {"app": "asr"}, "live/asr", workloads) == ("Deployment", "asr")
    named = SubscriberScaling(workload=("StatefulSet", "asr-0"))
    assert workload_for(named, None, "live/asr", []) == ("StatefulSet", "asr-0")


@pytest.mark.parametrize(("selector", "workloads", "reason"), [
    (None, [], "ServiceNotFound"),
    ({}, [], "WorkloadNotFound"),
    ({"app": "asr"}, [_deployment("web", {"app": "web"})], "WorkloadNotFound"),
    ({"app": "asr"}, [_deployment("a", {"app": "asr"}), _deployment("b", {"app": "asr"}, "StatefulSet")],
     "AmbiguousWorkload"),
])
def test_a_workload_that_cannot_be_told_is_a_named_problem(selector: dict[str, str] | None,
                                                          workloads: list[dict[str, object]], reason: str) -> None:
    with pytest.raises(WorkloadProblem) as raised:
        workload_for(SubscriberScaling(), selector, "live/asr", workloads)
    assert raised.value.reason == reason


def test_ready_endpoints_are_counted_over_slices() -> None:
    slices = [{"endpoints": [{"conditions": {"ready": True}}, {"conditions": {"ready": False}},
                             {"conditions": {}}, {"conditions": {"ready": True, "terminating": True}}]},
              {"endpoints": None}, {"endpoints": [{"addresses": ["10.0.0.1"]}]}]
    assert ready_endpoints(slices) == 3


# --- the decision -------------------------------------------------------------------------------------------

SCALING = SubscriberScaling(BUILTIN, min_scale=0, max_scale=6, target=4, scale_down_delay=30)


def _demand(waiting: int = 0, in_flight: int = 0, scaling: SubscriberScaling = SCALING) -> Demand:
    return Demand(TriggerBacklog(waiting=waiting, in_flight=in_flight), scaling)


def test_the_backlog_asks_for_one_replica_per_target_within_the_bounds() -> None:
    assert wanted_replicas([_demand()])[0] == 0
    assert wanted_replicas([_demand(waiting=1)])[0] == 1
    assert wanted_replicas([_demand(waiting=9, in_flight=4)])[0] == 4
    replicas, why = wanted_replicas([_demand(waiting=100)])
    assert replicas == 6 and "capped at 6 by max-scale" in why
    assert wanted_replicas([_demand(scaling=SubscriberScaling(BUILTIN, min_scale=2))])[0] == 2


def test_triggers_to_one_workload_add_up() -> None:
    other = SubscriberScaling(BUILTIN, max_scale=3, target=2)
    assert wanted_replicas([_demand(waiting=4), _demand(waiting=3, scaling=other)])[0] == 3  # 4/4 + 3/2 -> 3
    assert wanted_replicas([_demand(waiting=40), _demand(waiting=40, scaling=other)])[0] == 6  # the highest max


def test_up_at_once_down_after_the_delay_and_never_under_what_is_in_flight() -> None:
    history = Recommendations()
    assert decide([_demand(waiting=20)], 0, history, now=0).replicas == 5
    held = decide([_demand()], 5, history, now=10)
    assert held.replicas == 5 and held.wanted == 0 and "scale-down delay" in held.reason
    assert decide([_demand()], 5, history, now=41).replicas == 0
    busy = Recommendations()
    decide([_demand(waiting=20)], 0, busy, now=0)
    in_flight = decide([_demand(in_flight=6)], 5, busy, now=100)
    assert in_flight.wanted == 2 and in_flight.replicas == 2
    draining = decide([_demand(in_flight=1)], 2, busy, now=200)
    assert draining.replicas == 1


def test_activation_holds_until_the_timeout_then_releases_and_says_why() -> None:
    assert activation("Deployment/asr", ready=2, desired=2, unready_for=None, timeout=60).condition.is_true
    at_zero = activation("Deployment/asr", ready=0, desired=0, unready_for=None, timeout=60)
    assert at_zero.condition.reason == "ScaledToZero" and not at_zero.released
    waking = activation("Deployment/asr", ready=0, desired=1, unready_for=10, timeout=60)
    assert waking.condition.status == "Unknown" and waking.condition.reason == "Activating" and not waking.released
    late = activation("Deployment/asr", ready=0, desired=1, unready_for=61, timeout=60)
    assert late.released and late.condition.status == "False" and late.condition.reason == "ActivationTimeout"
    assert "60s" in late.condition.message


# --- the data plane's gate ----------------------------------------------------------------------------------

def test_the_gate_is_closed_until_the_operator_says_and_open_once_released() -> None:
    trigger = ContractTrigger(namespace="live", name="asr", subscriber="http://asr", autoscaled=Autoscaled(target=3))
    assert gate_of(trigger, None) == Gate(0, 3)
    assert gate_of(trigger, SubscriberEndpoints(ready=2)) == Gate(2, 3)
    assert gate_of(trigger, SubscriberEndpoints(released=True)) is None
    assert gate_of(trigger.model_copy(update={"autoscaled": None}), None) is None


async def test_a_closed_gate_holds_attempts_and_an_open_one_caps_them_per_endpoint() -> None:
    pacer = Pacer(None, Gate(0, 2))
    running = 0
    most = 0

    async def attempt() -> None:
        nonlocal running, most
        async with pacer.attempt():
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.02)
            running -= 1

    tasks = [asyncio.create_task(attempt()) for _ in range(8)]
    await asyncio.sleep(0.1)
    assert most == 0 and pacer.waiting == 8  # held: no attempt, no retry spent
    pacer.set_gate(Gate(2, 2))
    await asyncio.gather(*tasks)
    assert most == 4  # two endpoints, two each


# --- what the operator and the data plane exchange ----------------------------------------------------------

def test_endpoints_round_trip_and_a_bad_document_is_refused() -> None:
    endpoints = {"live/asr": SubscriberEndpoints(ready=2), "live/vision": SubscriberEndpoints(released=True)}
    assert endpoints_from_data(endpoints_data(endpoints)) == endpoints
    with pytest.raises(ValueError, match=r"endpoints\.json"):
        endpoints_from_data({"endpoints.json": "[1, 2]"})


def test_backlog_reports_add_up_over_fresh_replicas_only() -> None:
    now = datetime.now(UTC)
    one = BacklogReport(at=now, triggers={"live/asr": TriggerBacklog(waiting=3, in_flight=1, oldest=2.0)})
    two = BacklogReport(at=now, triggers={"live/asr": TriggerBacklog(waiting=2, parked=1, oldest=5.0)})
    stale = BacklogReport(at=now - timedelta(seconds=60), triggers={"live/asr": TriggerBacklog(waiting=100)})
    total = backlogs({"a": one.to_json(), "b": two.to_json(), "c": stale.to_json(), "d": "garbage"}, now, 30)
    assert total == {"live/asr": TriggerBacklog(waiting=5, parked=1, in_flight=1, oldest=5.0)}
    assert total["live/asr"].total == 7


# --- class keda ---------------------------------------------------------------------------------------------

def test_the_scaled_object_reads_the_sum_of_its_triggers_backlogs_from_the_operator() -> None:
    fast = SubscriberScaling(KEDA, min_scale=0, max_scale=4, target=2, scale_down_delay=20, polling_interval=5)
    slow = SubscriberScaling(KEDA, min_scale=1, max_scale=8, target=4, scale_down_delay=60)
    triggers = [({"name": "vision", "uid": "u2"}, slow), ({"name": "asr", "uid": "u1"}, fast)]
    obj = scaled_object(("live", "Deployment", "gpu"), triggers, "http://eventferry-operator.eventferry-system:9090/")
    assert obj["metadata"]["name"] == "eventferry-deployment-gpu"
    assert [o["name"] for o in obj["metadata"]["ownerReferences"]] == ["asr", "vision"]
    spec = obj["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gpu"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["cooldownPeriod"], spec["pollingInterval"]) == \
        (1, 8, 60, 5)
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == \
        {"stabilizationWindowSeconds": 60}
    metadata = spec["triggers"][0]["metadata"]
    assert metadata["url"] == ("http://eventferry-operator.eventferry-system:9090/backlog/triggers/live"
                               "?trigger=asr:2&trigger=vision:4")
    assert (metadata["valueLocation"], metadata["targetValue"]) == ("replicas", "1")
    backlog = {"live/asr": TriggerBacklog(waiting=3), "live/vision": TriggerBacklog(waiting=4, in_flight=2)}
    assert replicas_metric(backlog, [("live/asr", 2), ("live/vision", 4)]) == (3.0, 9)  # 3/2 + 6/4


async def test_only_autoscaled_triggers_wake_the_scaling_loop_and_are_read_by_a_pass() -> None:
    """With thousands of Triggers, each one created (or its status patched) woke a pass over all of them: the
    loop is woken by, and reads, only the Triggers that carry an autoscaling annotation."""
    from types import SimpleNamespace

    from eventferry.controller.subscribers import SubscriberScaler

    def body(name: str, annotations: dict[str, str] | None = None) -> dict[str, object]:
        return {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Trigger",
                "metadata": {"name": name, "namespace": "live", "annotations": annotations or {}},
                "spec": {"broker": "default", "subscriber": {"ref": {"apiVersion": "v1", "kind": "Service",
                                                                      "name": "moderation"}}}}

    bodies = {("live", "plain"): body("plain"),
              ("live", "scaled"): body("scaled", {"autoscaling.eventferry.dev/class": "builtin"})}
    views = SimpleNamespace(trigger=lambda namespace, name: bodies.get((namespace, name)),
                            triggers=lambda: list(bodies.values()))
    scaler = SubscriberScaler(SimpleNamespace(views=views))  # type: ignore[arg-type]

    scaler.observe_trigger(("live", "plain"), bodies[("live", "plain")])
    assert not scaler._wake.is_set()  # an ordinary Trigger costs the loop nothing
    scaler.observe_trigger(("live", "scaled"), bodies[("live", "scaled")])
    assert scaler._wake.is_set()
    assert [key for key, _, _ in scaler._autoscaled()] == [("live", "scaled")]

    scaler._wake.clear()
    bodies[("live", "scaled")] = body("scaled")  # its annotation removed: one more pass, then it is forgotten
    scaler.observe_trigger(("live", "scaled"), bodies[("live", "scaled")])
    assert scaler._wake.is_set() and scaler._autoscaled() == []
    scaler._wake.clear()
    scaler.observe_trigger(("live", "scaled"), None)
    assert not scaler._wake.is_set()
