"""Autoscaling from a backlog: a source's adapter (from its queue's lag) and a Trigger's subscriber workload
(from the Trigger's backlog in the broker): the annotations, their defaults and validation.

Knative's interface with our prefix (Knative: ``autoscaling.eventing.knative.dev/*``), so a manifest
ports by renaming the prefix; Knative's own prefix is read too, ours wins where both are set.

- ``class``: ``keda`` (a KEDA ScaledObject the operator owns; Knative's value
  ``keda.autoscaling.knative.dev`` means the same), ``builtin`` (the operator reads the lag and sets the
  replicas itself, for clusters without KEDA) or ``disabled`` (the default: ``spec.consumers`` replicas).
- ``min-scale`` (0), ``max-scale`` (50), ``lag-threshold`` (100 messages per replica),
  ``activation-lag-threshold`` (0: any lag wakes a source at zero), ``polling-interval`` (10 s),
  ``cooldown-period`` (30 s: how long the lag must stay low before replicas are removed).

A Trigger (``SubscriberScaling``): ``class`` (``builtin``, ``keda`` or ``disabled``), ``min-scale`` (0),
``max-scale`` (50), ``target`` (10 events in flight per ready replica), ``scale-down-delay`` (30 s),
``activation-timeout`` (600 s, Knative Serving's progress deadline), ``polling-interval`` (10 s, KEDA's) and
``workload``
(``Deployment/<name>`` or ``StatefulSet/<name>``; default: the one whose pods the subscriber Service selects).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

PREFIX = "autoscaling.eventferry.dev/"
KNATIVE_PREFIX = "autoscaling.eventing.knative.dev/"

ScalingClass = Literal["keda", "builtin", "disabled"]
KEDA: ScalingClass = "keda"
BUILTIN: ScalingClass = "builtin"
DISABLED: ScalingClass = "disabled"
CLASS_VALUES: dict[str, ScalingClass] = {
    "keda": KEDA, "keda.autoscaling.knative.dev": KEDA, "builtin": BUILTIN, "disabled": DISABLED}

# annotation (after the prefix) -> (field, default, lowest allowed value)
NUMBERS: dict[str, tuple[str, int, int]] = {
    "min-scale": ("min_scale", 0, 0),
    "max-scale": ("max_scale", 50, 1),
    "lag-threshold": ("lag_threshold", 100, 1),
    "activation-lag-threshold": ("activation_lag_threshold", 0, 0),
    "polling-interval": ("polling_interval", 10, 1),
    "cooldown-period": ("cooldown_period", 30, 0),
}
HIGHEST = 1_000_000_000
WHOLE_NUMBER = "^[0-9]{1,10}$"


@dataclass(frozen=True)
class SourceScaling:
    """The autoscaling a source asks for (``scaling_of`` reads it from the annotations)."""

    scaling_class: ScalingClass = DISABLED
    min_scale: int = NUMBERS["min-scale"][1]
    max_scale: int = NUMBERS["max-scale"][1]
    lag_threshold: int = NUMBERS["lag-threshold"][1]
    """Messages of lag per replica."""
    activation_lag_threshold: int = NUMBERS["activation-lag-threshold"][1]
    """A source at zero replicas wakes when its lag exceeds this."""
    polling_interval: int = NUMBERS["polling-interval"][1]
    """Seconds between two reads of the lag."""
    cooldown_period: int = NUMBERS["cooldown-period"][1]
    """Seconds the lag must stay low before replicas are removed (to zero, or down to what it needs)."""

    @property
    def enabled(self) -> bool:
        return self.scaling_class != DISABLED


def annotation(name: str) -> str:
    """The full name of one of the autoscaling annotations, e.g. ``annotation("max-scale")``."""
    return PREFIX + name


def _read(annotations: Mapping[str, str] | None, classes: Mapping[str, ScalingClass],
          numbers: Mapping[str, tuple[str, int, int]]) -> tuple[ScalingClass, dict[str, int], dict[str, str]]:
    """The class, the numbers by field and the other values by annotation name (after the prefix);
    ValueError naming the annotation when one is wrong. Ours wins over Knative's where both are set."""
    values = dict(annotations or {})

    def read(name: str) -> tuple[str, str] | None:
        for prefix in (PREFIX, KNATIVE_PREFIX):
            if prefix + name in values:
                return prefix + name, values[prefix + name]
        return None

    found = read("class")
    scaling_class = DISABLED
    if found is not None:
        key, value = found
        if value not in classes:
            raise ValueError(f"metadata.annotations[{key}] must be one of {_choices(classes)}, got {value!r}")
        scaling_class = classes[value]
    read_numbers: dict[str, int] = {}
    for name, (field, default, lowest) in numbers.items():
        found = read(name)
        if found is None:
            read_numbers[field] = default
            continue
        key, value = found
        if not re.fullmatch(WHOLE_NUMBER, value) or not lowest <= int(value) <= HIGHEST:
            raise ValueError(f"metadata.annotations[{key}] must be a whole number from {lowest} to {HIGHEST}, "
                             f"got {value!r}")
        read_numbers[field] = int(value)
    if read_numbers["min_scale"] > read_numbers["max_scale"]:
        key = (read("min-scale") or (annotation("min-scale"), ""))[0]
        raise ValueError(f"metadata.annotations[{key}] ({read_numbers['min_scale']}) must not exceed max-scale "
                         f"({read_numbers['max_scale']})")
    others = {name: found[1] for name in ("workload",) if (found := read(name)) is not None}
    return scaling_class, read_numbers, others


def _choices(classes: Mapping[str, ScalingClass]) -> str:
    names = list(dict.fromkeys(classes.values()))
    return ", ".join(names[:-1]) + " or " + names[-1]


def scaling_of(annotations: Mapping[str, str] | None) -> SourceScaling:
    """The autoscaling a source's annotations ask for; ValueError naming the annotation when one is wrong."""
    scaling_class, numbers, _ = _read(annotations, CLASS_VALUES, NUMBERS)
    return SourceScaling(scaling_class=scaling_class, **numbers)


# --- a Trigger's subscriber (beyond Knative: its workload scales with the Trigger's backlog) ------------------

SUBSCRIBER_CLASS_VALUES: dict[str, ScalingClass] = {"keda": KEDA, "builtin": BUILTIN, "disabled": DISABLED}
SUBSCRIBER_NUMBERS: dict[str, tuple[str, int, int]] = {
    "min-scale": ("min_scale", 0, 0),
    "max-scale": ("max_scale", 50, 1),
    "target": ("target", 10, 1),
    "scale-down-delay": ("scale_down_delay", 30, 0),
    "activation-timeout": ("activation_timeout", 600, 1),
    "polling-interval": ("polling_interval", 10, 1),
}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
WORKLOAD_PATTERN = "^(Deployment|StatefulSet)/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"


@dataclass(frozen=True)
class SubscriberScaling:
    """How a Trigger's subscriber workload scales with the Trigger's backlog (``subscriber_scaling_of``)."""

    scaling_class: ScalingClass = DISABLED
    min_scale: int = SUBSCRIBER_NUMBERS["min-scale"][1]
    max_scale: int = SUBSCRIBER_NUMBERS["max-scale"][1]
    target: int = SUBSCRIBER_NUMBERS["target"][1]
    """Events in flight per ready replica: the broker sends no more, and the backlog asks for replicas by it."""
    scale_down_delay: int = SUBSCRIBER_NUMBERS["scale-down-delay"][1]
    """Seconds the backlog must stay lower before replicas are removed (to zero, or to what it needs)."""
    activation_timeout: int = SUBSCRIBER_NUMBERS["activation-timeout"][1]
    """Seconds a subscriber woken from zero may take to have a ready endpoint; past it the broker stops
    holding its events (they take the normal retry and dead-letter path) and the Trigger says why."""
    polling_interval: int = SUBSCRIBER_NUMBERS["polling-interval"][1]
    """Class keda: seconds between KEDA's reads of the backlog (a subscriber at zero is woken at once anyway)."""
    workload: tuple[str, str] | None = None
    """(kind, name) named by the ``workload`` annotation; None: the workload whose pods the Service selects."""

    @property
    def enabled(self) -> bool:
        return self.scaling_class != DISABLED


def subscriber_scaling_of(annotations: Mapping[str, str] | None) -> SubscriberScaling:
    """What a Trigger's annotations ask of its subscriber's scale; ValueError naming the annotation when wrong."""
    scaling_class, numbers, others = _read(annotations, SUBSCRIBER_CLASS_VALUES, SUBSCRIBER_NUMBERS)
    workload = None
    if "workload" in others:
        value = others["workload"]
        if not re.fullmatch(WORKLOAD_PATTERN, value):
            raise ValueError(f"metadata.annotations[{PREFIX}workload] must be Deployment/<name> or "
                             f"StatefulSet/<name>, got {value!r}")
        kind, name = value.split("/", 1)
        workload = (kind, name)
    return SubscriberScaling(scaling_class=scaling_class, workload=workload, **numbers)


# --- the same rules for the API server (a ValidatingAdmissionPolicy: CRD rules cannot read annotations) -------

def _variable(name: str) -> str:
    head, *rest = name.split("-")
    return head + "".join(part.title() for part in rest)


def admission_rules(kind: str = "source") -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """(variables, validations) of a ValidatingAdmissionPolicy that refuses what ``scaling_of`` (``kind``
    "source") or ``subscriber_scaling_of`` ("trigger") refuses, naming the annotation; the value read as they
    read it (ours, else Knative's, else the default)."""
    classes, numbers = (CLASS_VALUES, NUMBERS) if kind == "source" else (SUBSCRIBER_CLASS_VALUES, SUBSCRIBER_NUMBERS)
    variables = [{"name": "annotations", "expression": "object.metadata.?annotations.orValue({})"}]

    def value(name: str, default: str) -> str:
        return (f"variables.annotations[?'{PREFIX}{name}']"
                f".orValue(variables.annotations[?'{KNATIVE_PREFIX}{name}'].orValue('{default}'))")

    variables.append({"name": "scalingClass", "expression": value("class", DISABLED)})
    validations: list[dict[str, Any]] = [{
        "expression": f"variables.scalingClass in {sorted(classes)!r}".replace('"', "'"),
        "messageExpression": f"'metadata.annotations[{PREFIX}class] must be one of {_choices(classes)}, "
                             "got ' + variables.scalingClass",
        "reason": "Invalid"}]
    for name, (_, default, lowest) in numbers.items():
        variable = f"variables.{_variable(name)}"
        variables.append({"name": _variable(name), "expression": value(name, str(default))})
        validations.append({
            "expression": f"{variable}.matches('{WHOLE_NUMBER}') && int({variable}) >= {lowest} "
                          f"&& int({variable}) <= {HIGHEST}",
            "messageExpression": f"'metadata.annotations[{PREFIX}{name}] must be a whole number from {lowest} "
                                 f"to {HIGHEST}, got ' + {variable}",
            "reason": "Invalid"})
    low, high = "variables.minScale", "variables.maxScale"
    validations.append({
        "expression": f"!({low}.matches('{WHOLE_NUMBER}') && {high}.matches('{WHOLE_NUMBER}')) "
                      f"|| int({low}) <= int({high})",
        "messageExpression": f"'metadata.annotations[{PREFIX}min-scale] (' + {low} + ') must not exceed "
                             f"max-scale (' + {high} + ')'",
        "reason": "Invalid"})
    if kind == "trigger":
        variables.append({"name": "workload", "expression": value("workload", "Deployment/unset")})
        validations.append({
            "expression": f"variables.workload.matches('{WORKLOAD_PATTERN}')",
            "messageExpression": f"'metadata.annotations[{PREFIX}workload] must be Deployment/<name> or "
                                 "StatefulSet/<name>, got ' + variables.workload",
            "reason": "Invalid"})
    return variables, validations
