"""Conditions as Knative writes them: one per type, Ready summarising the others.

Pure: the status builders decide each condition, ``merge`` turns them into the status list while
keeping ``lastTransitionTime`` of the conditions whose status did not change, so that writing the
same facts again writes the same status (and the API server stores nothing new).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]
READY = "Ready"


@dataclass(frozen=True)
class Cond:
    type: str
    status: ConditionStatus
    reason: str | None = None
    message: str | None = None

    @property
    def is_true(self) -> bool:
        return self.status == "True"


def true(type_: str, reason: str | None = None, message: str | None = None) -> Cond:
    return Cond(type_, "True", reason, message)


def false(type_: str, reason: str, message: str) -> Cond:
    return Cond(type_, "False", reason, message)


def unknown(type_: str, reason: str, message: str) -> Cond:
    return Cond(type_, "Unknown", reason, message)


def summarize(dependents: Sequence[Cond], blocker: tuple[str, str] | None = None) -> Cond:
    """The Ready condition: False when a dependent is False (its reason and message), else Unknown
    when one is Unknown, else False for ``blocker`` (a problem no dependent describes), else True."""
    for cond in dependents:
        if cond.status == "False":
            return Cond(READY, "False", cond.reason, cond.message)
    for cond in dependents:
        if cond.status == "Unknown":
            return Cond(READY, "Unknown", cond.reason, cond.message)
    if blocker is not None:
        return Cond(READY, "False", blocker[0], blocker[1])
    return Cond(READY, "True")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(previous: Iterable[Mapping[str, Any]] | None, conditions: Sequence[Cond], now: str) -> list[dict[str, Any]]:
    """The status ``conditions`` list: Ready first, then the others in the order given."""
    before = {str(c.get("type")): c for c in previous or ()}
    ordered = sorted(conditions, key=lambda c: c.type != READY)
    result = []
    for cond in ordered:
        old = before.get(cond.type)
        transition = old.get("lastTransitionTime") if old and old.get("status") == cond.status else None
        item: dict[str, Any] = {"type": cond.type, "status": cond.status,
                                "lastTransitionTime": transition or now}
        if cond.reason:
            item["reason"] = cond.reason
        if cond.message:
            item["message"] = cond.message
        result.append(item)
    return result


def ready_condition(status: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    for cond in (status or {}).get("conditions") or ():
        if cond.get("type") == READY:
            return dict(cond)
    return None


def is_ready(status: Mapping[str, Any] | None) -> bool:
    cond = ready_condition(status)
    return cond is not None and cond.get("status") == "True"
