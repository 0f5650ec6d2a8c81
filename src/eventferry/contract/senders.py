"""Which senders a Broker lets in: the EventPolicies that select it, else the default authorization mode.

Pure, for ``compile_contract`` and for the Broker's status (``status.policies``). Semantics as Knative's:
a policy applies to the resources its ``spec.to`` names or selects in its own namespace (all of them when
``to`` is empty); several policies add up; a Broker that no policy selects falls back to the default mode:
``allow-same-namespace`` (ServiceAccounts of the Broker's namespace), ``allow-all`` or ``deny-all``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from eventferry.apis.eventpolicy import EventPolicy, EventPolicySelector, LabelSelectorRequirement
from eventferry.contract import model

AuthorizationMode = Literal["allow-same-namespace", "allow-all", "deny-all"]
AUTHORIZATION_MODES: tuple[str, ...] = get_args(AuthorizationMode)
DEFAULT_AUTHORIZATION_MODE: AuthorizationMode = "allow-same-namespace"
SERVICE_ACCOUNT_SUBJECT = "system:serviceaccount:{namespace}:{name}"


def service_account_subject(namespace: str, name: str) -> str:
    """The subject of a ServiceAccount's tokens (the ``sub`` claim the API server issues)."""
    return SERVICE_ACCOUNT_SUBJECT.format(namespace=namespace, name=name)


@dataclass(frozen=True)
class ResolvedPolicy:
    """An EventPolicy with its ``spec.from`` resolved to subjects (its ``status.from``)."""

    policy: EventPolicy
    subjects: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.policy.namespace}/{self.policy.metadata.name}"


@dataclass(frozen=True)
class SenderAuthorization:
    """Brokers check senders: every EventPolicy (resolved), and the mode for Brokers none selects."""

    mode: AuthorizationMode = DEFAULT_AUTHORIZATION_MODE
    policies: Sequence[ResolvedPolicy] = ()


@dataclass(frozen=True)
class Target:
    """A resource an EventPolicy may apply to."""

    api_version: str
    kind: str
    namespace: str
    name: str
    labels: Mapping[str, str]


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def selects(policy: EventPolicy, target: Target) -> bool:
    if policy.namespace != target.namespace:
        return False
    if policy.applies_to_all:
        return True
    for entry in policy.spec.to or ():
        if entry.ref is not None:
            ref = entry.ref
            if (_group(ref.api_version), ref.kind, ref.name) == (_group(target.api_version), target.kind, target.name):
                return True
        elif entry.selector is not None and _selector_matches(entry.selector, target):
            return True
    return False


def _selector_matches(selector: EventPolicySelector, target: Target) -> bool:
    if (_group(selector.api_version), selector.kind) != (_group(target.api_version), target.kind):
        return False
    labels = target.labels
    if any(labels.get(key) != value for key, value in (selector.match_labels or {}).items()):
        return False
    return all(_requirement(requirement, labels) for requirement in selector.match_expressions or ())


def _requirement(requirement: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = requirement.key in labels
    values = requirement.values or []
    match requirement.operator:
        case "In":
            return present and labels[requirement.key] in values
        case "NotIn":
            return not present or labels[requirement.key] not in values
        case "Exists":
            return present
        case "DoesNotExist":
            return not present
    return False


def applying(target: Target, authorization: SenderAuthorization) -> list[ResolvedPolicy]:
    """The policies that apply to ``target``, by name."""
    return sorted((p for p in authorization.policies if selects(p.policy, target)), key=lambda p: p.key)


def sender_policies(target: Target, authorization: SenderAuthorization) -> list[model.SenderPolicy]:
    """What the data plane enforces for ``target``: its policies, else the default mode as one policy."""
    found = applying(target, authorization)
    if found:
        return [model.SenderPolicy(name=p.key, subjects=list(p.subjects), filters=list(p.policy.spec.filters or ()))
                for p in found]
    return default_policies(target.namespace, authorization.mode)


def default_policies(namespace: str, mode: AuthorizationMode) -> list[model.SenderPolicy]:
    name = f"default: {mode}"
    if mode == "allow-all":
        return [model.SenderPolicy(name=name, subjects=["*"])]
    if mode == "allow-same-namespace":
        return [model.SenderPolicy(name=name, subjects=[service_account_subject(namespace, "*")])]
    return []
