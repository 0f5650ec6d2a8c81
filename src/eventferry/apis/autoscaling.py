"""Autoscaling of a source's adapter from its backlog: the annotations, their defaults and validation.

Knative's interface with our prefix (Knative: ``autoscaling.eventing.knative.dev/*``), so a manifest
ports by renaming the prefix; Knative's own prefix is read too, ours wins where both are set.

- ``class``: ``keda`` (a KEDA ScaledObject the operator owns; Knative's value
  ``keda.autoscaling.knative.dev`` means the same), ``builtin`` (the operator reads the lag and sets the
  replicas itself, for clusters without KEDA) or ``disabled`` (the default: ``spec.consumers`` replicas).
- ``min-scale`` (0), ``max-scale`` (50), ``lag-threshold`` (100 messages per replica),
  ``activation-lag-threshold`` (0: any lag wakes a source at zero), ``polling-interval`` (10 s),
  ``cooldown-period`` (30 s: how long the lag must stay low before replicas are removed).
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


def scaling_of(annotations: Mapping[str, str] | None) -> SourceScaling:
    """The autoscaling the annotations ask for; ValueError naming the annotation when one is wrong."""
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
        if value not in CLASS_VALUES:
            raise ValueError(f"metadata.annotations[{key}] must be one of keda, builtin or disabled, got {value!r}")
        scaling_class = CLASS_VALUES[value]
    numbers: dict[str, int] = {}
    for name, (field, default, lowest) in NUMBERS.items():
        found = read(name)
        if found is None:
            numbers[field] = default
            continue
        key, value = found
        if not re.fullmatch(WHOLE_NUMBER, value) or not lowest <= int(value) <= HIGHEST:
            raise ValueError(f"metadata.annotations[{key}] must be a whole number from {lowest} to {HIGHEST}, "
                             f"got {value!r}")
        numbers[field] = int(value)
    if numbers["min_scale"] > numbers["max_scale"]:
        key = (read("min-scale") or (annotation("min-scale"), ""))[0]
        raise ValueError(f"metadata.annotations[{key}] ({numbers['min_scale']}) must not exceed max-scale "
                         f"({numbers['max_scale']})")
    return SourceScaling(scaling_class=scaling_class, **numbers)


# --- the same rules for the API server (a ValidatingAdmissionPolicy: CRD rules cannot read annotations) -------

def _variable(name: str) -> str:
    head, *rest = name.split("-")
    return head + "".join(part.title() for part in rest)


def admission_rules() -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """(variables, validations) of a ValidatingAdmissionPolicy that refuses what ``scaling_of`` refuses,
    naming the annotation; the value read as ``scaling_of`` reads it (ours, else Knative's, else the default)."""
    variables = [{"name": "annotations", "expression": "object.metadata.?annotations.orValue({})"}]

    def value(name: str, default: str) -> str:
        return (f"variables.annotations[?'{PREFIX}{name}']"
                f".orValue(variables.annotations[?'{KNATIVE_PREFIX}{name}'].orValue('{default}'))")

    variables.append({"name": "scalingClass", "expression": value("class", DISABLED)})
    validations: list[dict[str, Any]] = [{
        "expression": f"variables.scalingClass in {sorted(CLASS_VALUES)!r}".replace('"', "'"),
        "messageExpression": f"'metadata.annotations[{PREFIX}class] must be one of keda, builtin or disabled, "
                             "got ' + variables.scalingClass",
        "reason": "Invalid"}]
    for name, (_, default, lowest) in NUMBERS.items():
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
    return variables, validations
