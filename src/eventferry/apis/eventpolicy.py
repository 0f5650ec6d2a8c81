"""EventPolicy: types, defaults and validation (as Knative's eventing/v1alpha1 eventpolicy_*.go).

An EventPolicy says who may send events to which resources of its namespace, and which events it lets
through. This module is the API only; how policies are enforced is described in docs/security.md.

What a policy means, as in Knative:

- ``spec.to`` picks the resources it applies to, in the policy's namespace: by name (``ref``) or by
  kind and labels (``selector``). Absent or empty: every resource of the namespace.
- ``spec.from`` lists the senders it allows: a resource (``ref``, whose OIDC identities the operator
  resolves) or an OIDC subject (``sub``), exact or a prefix ending in ``*``. Absent or empty: the
  policy allows no one. It still applies to its targets, so a target that no other policy opens to a
  sender refuses every request: a policy without ``from`` denies all.
- ``spec.filters`` (Subscriptions API filters, ANDed) must also pass for an allowed sender's event to be
  accepted. Absent: every event of an allowed sender passes.
- A resource to which several policies apply accepts a request that any one of them allows. A resource
  to which none applies falls back to the default authorization mode.
- ``status.from`` holds the subjects resolved from ``spec.from``: what enforcement compares to the
  sender's identity.

Validation, in Python here and as rules of the CRD (the API server reports the field): each entry of
``spec.to`` sets exactly one of ``ref`` or ``selector``; each entry of ``spec.from`` exactly one of
``ref`` or ``sub``; ``sub`` is not empty and has ``*`` only as its last character; every reference
names its apiVersion, kind and name, and every selector its apiVersion and kind; label selector
requirements take values for In and NotIn, none for Exists and DoesNotExist.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from eventferry.apis.meta import ApiModel, Resource, Status, cel
from eventferry.apis.trigger import MAX_FILTERS, SubscriptionsAPIFilter

# The API server refuses CRD rules whose worst-case cost is unbounded: the lists holding objects with
# rules, and the strings that rules read, get a maximum size (beyond Knative, which has none).
MAX_POLICY_ENTRIES = 256
"""Entries of spec.to, and of spec.from, at most (a longer list is split into several policies)."""
MAX_MATCH_EXPRESSIONS = 32
"""Requirements of a label selector's matchExpressions, at most."""
MAX_SUB_LENGTH = 1024
"""Characters of a spec.from[].sub, at most (a service account's subject has at most 339)."""

SUB_WILDCARD = "*"
SUB_PATTERN = "^[^*]*[*]?$"
"""A ``sub`` with ``*`` at most once, as its last character: the same regular expression in Python and CEL."""
_SUB = re.compile(SUB_PATTERN)
_SUB_MESSAGE = "spec.from[].sub: '*' is only allowed as the last character (a prefix wildcard)"

_TO_MESSAGE = "each entry of spec.to sets exactly one of ref or selector"
_FROM_MESSAGE = "each entry of spec.from sets exactly one of ref or sub"

LabelSelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
_VALUES_MESSAGE = ("spec.to[].selector.matchExpressions[].values: In and NotIn need values, "
                   "Exists and DoesNotExist take none")


def _one_of(first: object, second: object, names: tuple[str, str], message: str) -> None:
    if (first is None) == (second is None):
        got = "both" if first is not None else "neither"
        raise ValueError(f"{message} (got {got} of {names[0]} and {names[1]})")


class EventPolicyToReference(ApiModel):
    """A resource the policy applies to, by name, in the policy's namespace."""

    api_version: str = Field(min_length=1)
    """API version of the resource, e.g. eventferry.dev/v1alpha1 (only its group is compared)."""
    kind: str = Field(min_length=1)
    """Kind of the resource, e.g. Broker."""
    name: str = Field(min_length=1)
    """Name of the resource."""


class LabelSelectorRequirement(ApiModel):
    """One requirement of a label selector (Kubernetes' metav1.LabelSelectorRequirement)."""

    model_config = ConfigDict(json_schema_extra=cel(
        "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
        " : (!has(self.values) || size(self.values) == 0)",
        _VALUES_MESSAGE,
    ))

    key: str = Field(min_length=1)
    """The label key the requirement applies to."""
    operator: LabelSelectorOperator
    """How the label's value relates to values: In, NotIn, Exists or DoesNotExist."""
    values: list[str] | None = None
    """The values for In and NotIn (at least one); empty for Exists and DoesNotExist."""

    @model_validator(mode="after")
    def _values(self) -> LabelSelectorRequirement:
        if (self.operator in ("In", "NotIn")) != bool(self.values):
            raise ValueError(f"{_VALUES_MESSAGE} (operator {self.operator} with {len(self.values or [])} values)")
        return self


class EventPolicySelector(ApiModel):
    """The resources of one kind, in the policy's namespace, whose labels match (Knative's TypeMeta and
    metav1.LabelSelector, inline). No matchLabels and no matchExpressions: every resource of the kind."""

    api_version: str = Field(min_length=1)
    """API version of the resources, e.g. eventferry.dev/v1alpha1 (required here; Knative's matches nothing without)."""
    kind: str = Field(min_length=1)
    """Kind of the resources, e.g. Broker (required here; Knative's selector matches nothing without)."""
    match_labels: dict[str, str] | None = None
    """Labels a resource must have, with these values."""
    match_expressions: list[LabelSelectorRequirement] | None = Field(default=None, max_length=MAX_MATCH_EXPRESSIONS)
    """Requirements on a resource's labels, ANDed with matchLabels."""


class EventPolicySpecTo(ApiModel):
    """A target of the policy: exactly one of ref or selector."""

    model_config = ConfigDict(json_schema_extra=cel("has(self.ref) != has(self.selector)", _TO_MESSAGE))

    ref: EventPolicyToReference | None = None
    """One resource, by name."""
    selector: EventPolicySelector | None = None
    """The resources of a kind whose labels match."""

    @model_validator(mode="after")
    def _ref_or_selector(self) -> EventPolicySpecTo:
        _one_of(self.ref, self.selector, ("ref", "selector"), _TO_MESSAGE)
        return self


class EventPolicyFromReference(ApiModel):
    """A resource allowed to send: the operator resolves it to the OIDC subjects of its service accounts."""

    api_version: str = Field(min_length=1)
    """API version of the resource, e.g. sources.knative.dev/v1."""
    kind: str = Field(min_length=1)
    """Kind of the resource, e.g. PingSource."""
    name: str = Field(min_length=1)
    """Name of the resource."""
    namespace: str | None = None
    """Namespace of the resource; absent or empty: the policy's."""


class EventPolicySpecFrom(ApiModel):
    """A sender the policy allows: exactly one of ref or sub."""

    model_config = ConfigDict(json_schema_extra=cel("has(self.ref) != has(self.sub)", _FROM_MESSAGE))

    ref: EventPolicyFromReference | None = None
    """A resource, whose OIDC subjects are allowed."""
    sub: str | None = Field(default=None, min_length=1, max_length=MAX_SUB_LENGTH,
                            json_schema_extra=cel(f"self.matches('{SUB_PATTERN}')", _SUB_MESSAGE))
    """An OIDC subject (system:serviceaccount:NS:NAME), or a prefix of subjects ending in * (* alone: anyone)."""

    @field_validator("sub")
    @classmethod
    def _wildcard_last(cls, sub: str | None) -> str | None:
        if sub is not None and not _SUB.match(sub):
            raise ValueError(f"{_SUB_MESSAGE}, got {sub!r}")
        return sub

    @model_validator(mode="after")
    def _ref_or_sub(self) -> EventPolicySpecFrom:
        _one_of(self.ref, self.sub, ("ref", "sub"), _FROM_MESSAGE)
        return self

    @property
    def is_prefix(self) -> bool:
        """Whether sub is a prefix pattern (ends in ``*``)."""
        return self.sub is not None and self.sub.endswith(SUB_WILDCARD)


class EventPolicySpec(ApiModel):
    """The desired state of an EventPolicy."""

    to: list[EventPolicySpecTo] | None = Field(default=None, max_length=MAX_POLICY_ENTRIES)
    """The resources, in the policy's namespace, the policy applies to; absent or empty: all of them."""
    from_: list[EventPolicySpecFrom] | None = Field(default=None, alias="from", max_length=MAX_POLICY_ENTRIES)
    """The senders allowed to send events to the targets; absent or empty: no one."""
    filters: list[SubscriptionsAPIFilter] | None = Field(default=None, max_length=MAX_FILTERS)
    """Subscriptions API filters, ANDed, that an allowed sender's event must pass; absent: all pass."""


class EventPolicyStatus(Status):
    """Observed state: the conditions (Knative's: Ready, AuthenticationEnabled, SubjectsResolved) and the subjects."""

    from_: list[str] | None = Field(default=None, alias="from")
    """The OIDC subjects resolved from spec.from: each sub as written, each ref's service accounts' subjects."""


class EventPolicy(Resource):
    """An EventPolicy allows senders to send events to resources of its namespace, and filters their events."""

    api_version: Literal["eventferry.dev/v1alpha1"] = "eventferry.dev/v1alpha1"
    kind: Literal["EventPolicy"] = "EventPolicy"
    spec: EventPolicySpec = Field(default_factory=EventPolicySpec)
    status: EventPolicyStatus | None = None

    @property
    def applies_to_all(self) -> bool:
        """Whether the policy applies to every resource of its namespace (spec.to absent or empty)."""
        return not self.spec.to

    def namespace_of(self, ref: EventPolicyFromReference) -> str:
        """The namespace of a spec.from reference: its own, else the policy's (Knative's default)."""
        return ref.namespace or self.namespace
