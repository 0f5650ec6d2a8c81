"""An EventPolicy's senders resolved to subjects, and its status: pure, as the other builders.

``spec.from[].sub`` is taken as written; a ``ref`` becomes the subject of the ServiceAccount that the
referred resource sends with: a ServiceAccount itself, or a source's adapter ServiceAccount (one per
source, made by the operator while Brokers check senders). Other kinds cannot be resolved: the policy says
so in its SubjectsResolved condition and allows the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eventferry.apis.eventpolicy import EventPolicy, EventPolicyFromReference
from eventferry.contract.senders import service_account_subject
from eventferry.resources.adapter import adapter_name
from eventferry.resources.conditions import Cond, false, merge, summarize, true

AUTHENTICATION_ENABLED = "AuthenticationEnabled"
SUBJECTS_RESOLVED = "SubjectsResolved"
SOURCE_KINDS = ("KafkaSource", "RocketMQSource")
SOURCE_GROUPS = ("eventferry.dev", "sources.knative.dev")


@dataclass(frozen=True)
class ResolvedSenders:
    subjects: tuple[str, ...]
    unresolved: tuple[str, ...]
    """Why each ref that could not be resolved was not (ready to be a condition message)."""


def resolve_senders(policy: EventPolicy, adapter_service_account: str | None = None) -> ResolvedSenders:
    """``adapter_service_account``: the one ServiceAccount every adapter runs as, when the operator is told
    so; else each source has its own, named as its Deployment."""
    subjects: list[str] = []
    unresolved: list[str] = []
    for entry in policy.spec.from_ or ():
        if entry.sub is not None:
            subjects.append(entry.sub)
            continue
        assert entry.ref is not None  # the model requires one of the two
        subject = _ref_subject(entry.ref, policy.namespace_of(entry.ref), adapter_service_account)
        if subject is None:
            unresolved.append(f"cannot resolve {entry.ref.kind} {entry.ref.api_version} "
                              f"{policy.namespace_of(entry.ref)}/{entry.ref.name}: refer to a ServiceAccount, "
                              "a KafkaSource or a RocketMQSource, or give its token's subject as sub")
        else:
            subjects.append(subject)
    return ResolvedSenders(tuple(dict.fromkeys(subjects)), tuple(unresolved))


def _ref_subject(ref: EventPolicyFromReference, namespace: str, adapter_service_account: str | None) -> str | None:
    group = ref.api_version.split("/")[0] if "/" in ref.api_version else ""
    if ref.kind == "ServiceAccount" and group == "":
        return service_account_subject(namespace, ref.name)
    if ref.kind in SOURCE_KINDS and group in SOURCE_GROUPS:
        return service_account_subject(namespace, adapter_service_account or adapter_name(ref.kind, ref.name))
    return None


def eventpolicy_status(resolved: ResolvedSenders, authentication: bool, previous: Mapping[str, Any] | None,
                       generation: int | None, now: str) -> dict[str, Any]:
    if authentication:
        enabled = true(AUTHENTICATION_ENABLED)
    else:
        enabled = false(AUTHENTICATION_ENABLED, "AuthenticationDisabled",
                        "senders are not authenticated, so no EventPolicy is enforced: run the operator with "
                        "--authentication=required (chart value security.authentication)")
    if resolved.unresolved:
        subjects: Cond = false(SUBJECTS_RESOLVED, "UnsupportedReference", "; ".join(resolved.unresolved))
    else:
        subjects = true(SUBJECTS_RESOLVED)
    dependents = [enabled, subjects]
    conditions = merge((previous or {}).get("conditions"), [summarize(dependents), *dependents], now)
    return {"observedGeneration": generation, "conditions": conditions, "from": list(resolved.subjects) or None}
