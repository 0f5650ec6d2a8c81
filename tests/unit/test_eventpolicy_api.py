"""The EventPolicy kind: Knative's manifests parse, each invalid one is refused with the field named, and
the generated CRD carries the same checks as CEL rules."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from pydantic import ValidationError

from eventferry.apis import (
    KINDS,
    EventPolicy,
    EventPolicyFromReference,
    EventPolicySpec,
    EventPolicySpecFrom,
    EventPolicySpecTo,
    EventPolicyToReference,
    SubscriptionsAPIFilter,
)
from eventferry.apis.eventpolicy import MAX_POLICY_ENTRIES, MAX_SUB_LENGTH, SUB_PATTERN
from eventferry.apis.meta import PLURALS
from tests.unit.test_crds_in_sync import FORBIDDEN, crd, schema, walk

pytestmark = pytest.mark.unit

API = "eventferry.dev/v1alpha1"
RULES = "x-kubernetes-validations"

# Knative's documented example (docs/eventing/features/authorization), with a sub of each form.
KNATIVE_EVENT_POLICY: dict[str, Any] = {
    "apiVersion": "eventing.knative.dev/v1alpha1",
    "kind": "EventPolicy",
    "metadata": {"name": "my-event-policy", "namespace": "default"},
    "spec": {
        "to": [
            {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "my-broker"}},
            {"selector": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                          "matchLabels": {"app": "special-app"},
                          "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold", "silver"]},
                                               {"key": "legacy", "operator": "DoesNotExist"}]}},
        ],
        "from": [
            {"ref": {"apiVersion": "sources.knative.dev/v1", "kind": "PingSource", "name": "my-source",
                     "namespace": "another-namespace"}},
            {"ref": {"apiVersion": "sources.knative.dev/v1", "kind": "PingSource", "name": "local-source"}},
            {"sub": "system:serviceaccount:default:trusted-app"},
            {"sub": "system:serviceaccount:default:other-*"},
        ],
        "filters": [
            {"cesql": "type IN ('order.created', 'order.updated', 'order.canceled')"},
            {"exact": {"type": "com.github.push"}},
        ],
    },
    "status": {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True"}],
        "from": ["system:serviceaccount:another-namespace:my-source-sa", "system:serviceaccount:default:trusted-app",
                 "system:serviceaccount:default:other-*"],
    },
}


def ported() -> dict[str, Any]:
    """A Knative manifest ported the documented way: only apiVersion changes."""
    manifest = copy.deepcopy(KNATIVE_EVENT_POLICY)
    manifest["apiVersion"] = API
    return manifest


def with_spec(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "EventPolicy", "metadata": {"name": "p", "namespace": "ns"}, "spec": spec}


def errors(manifest: dict[str, Any]) -> dict[str, str]:
    """Field path (dotted, aliases) -> message of every error pydantic reports."""
    with pytest.raises(ValidationError) as info:
        EventPolicy.model_validate(manifest)
    return {".".join(str(part) for part in e["loc"]): e["msg"] for e in info.value.errors()}


def knative_sub_is_valid(sub: str) -> bool:
    """Knative's validateSub (eventpolicy_validation.go), as the oracle for the pattern."""
    if len(sub) <= 1:
        return True
    index = sub.find("*")
    return not 0 <= index <= len(sub) - 2


REF = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b"}
SELECTOR = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "matchLabels": {"app": "a"}}
FROM_REF = {"apiVersion": "sources.knative.dev/v1", "kind": "PingSource", "name": "s"}


# --- valid policies ------------------------------------------------------------------------------


def test_knative_event_policy_round_trips_with_only_the_api_version_changed() -> None:
    manifest = ported()
    policy = EventPolicy.model_validate(manifest)
    assert policy.to_manifest() == manifest
    assert KINDS["EventPolicy"] is EventPolicy
    assert KINDS[manifest["kind"]].model_validate(manifest).to_manifest() == manifest
    to, from_ = policy.spec.to or [], policy.spec.from_ or []
    assert [t.ref is not None for t in to] == [True, False]
    selector = to[1].selector
    assert selector is not None and selector.match_labels == {"app": "special-app"}
    assert [e.operator for e in selector.match_expressions or []] == ["In", "DoesNotExist"]
    assert [f.sub for f in from_] == [None, None, "system:serviceaccount:default:trusted-app",
                                      "system:serviceaccount:default:other-*"]
    assert [f.is_prefix for f in from_] == [False, False, False, True]
    assert [policy.namespace_of(f.ref) for f in from_ if f.ref] == ["another-namespace", "default"]
    assert [f.dialect for f in policy.spec.filters or []] == ["cesql", "exact"]
    assert not policy.applies_to_all
    assert policy.status is not None and policy.status.is_ready
    assert policy.status.from_ == KNATIVE_EVENT_POLICY["status"]["from"]


@pytest.mark.parametrize("spec", [None, {}, {"to": []}, {"to": [], "from": [], "filters": []}])
def test_policy_without_to_applies_to_the_whole_namespace_and_without_from_allows_no_one(
        spec: dict[str, Any] | None) -> None:
    manifest = with_spec(spec or {})
    if spec is None:
        del manifest["spec"]
    policy = EventPolicy.model_validate(manifest)
    assert policy.applies_to_all
    assert not policy.spec.from_
    assert not policy.spec.filters


@pytest.mark.parametrize("sub", ["x", "*", "system:serviceaccount:ns:*", "system:serviceaccount:ns:app",
                                 "https://issuer.example/ sub with spaces*"])
def test_sub_is_exact_or_a_prefix_ending_in_a_star(sub: str) -> None:
    policy = EventPolicy.model_validate(with_spec({"from": [{"sub": sub}]}))
    assert (policy.spec.from_ or [])[0].is_prefix == sub.endswith("*")


@pytest.mark.parametrize("to", [
    {"ref": REF},
    {"selector": SELECTOR},
    {"selector": {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker"}},  # every Broker of the namespace
    {"selector": {**SELECTOR, "matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["b"]},
                                                    {"key": "c", "operator": "Exists", "values": []}]}},
])
def test_each_form_of_target_parses(to: dict[str, Any]) -> None:
    manifest = with_spec({"to": [to]})
    assert EventPolicy.model_validate(manifest).to_manifest() == manifest


def test_models_are_built_with_python_names() -> None:
    policy = EventPolicy(
        metadata={"name": "p"},
        spec=EventPolicySpec(
            to=[EventPolicySpecTo(ref=EventPolicyToReference(api_version="eventferry.dev/v1alpha1", kind="Broker",
                                                             name="b"))],
            from_=[EventPolicySpecFrom(sub="system:serviceaccount:default:*"),
                   EventPolicySpecFrom(ref=EventPolicyFromReference(api_version="v1", kind="K", name="n"))],
            filters=[SubscriptionsAPIFilter(not_=SubscriptionsAPIFilter(cesql="true"))],
        ),
    )
    spec = policy.to_manifest()["spec"]
    assert spec["from"] == [{"sub": "system:serviceaccount:default:*"},
                            {"ref": {"apiVersion": "v1", "kind": "K", "name": "n"}}]
    assert spec["to"] == [{"ref": {"apiVersion": "eventferry.dev/v1alpha1", "kind": "Broker", "name": "b"}}]
    assert spec["filters"] == [{"not": {"cesql": "true"}}]
    ref = (policy.spec.from_ or [])[1].ref
    assert ref is not None and policy.namespace_of(ref) == "default"


# --- invalid policies: refused, with the field named ---------------------------------------------


@pytest.mark.parametrize(("spec", "path", "text"), [
    ({"to": [{}]}, "spec.to.0", "exactly one of ref or selector (got neither"),
    ({"to": [{"ref": REF, "selector": SELECTOR}]}, "spec.to.0", "exactly one of ref or selector (got both"),
    ({"from": [{}]}, "spec.from.0", "exactly one of ref or sub (got neither"),
    ({"from": [{"ref": FROM_REF, "sub": "x"}]}, "spec.from.0", "exactly one of ref or sub (got both"),
    ({"from": [{"sub": ""}]}, "spec.from.0.sub", "at least 1 character"),
    ({"from": [{"sub": "a*b"}]}, "spec.from.0.sub", "'*' is only allowed as the last character"),
    ({"from": [{"sub": "*a"}]}, "spec.from.0.sub", "'*' is only allowed as the last character"),
    ({"from": [{"sub": "a**"}]}, "spec.from.0.sub", "'*' is only allowed as the last character"),
    ({"from": [{"sub": "x" * (MAX_SUB_LENGTH + 1)}]}, "spec.from.0.sub", f"at most {MAX_SUB_LENGTH}"),
    ({"to": [{"ref": {**REF, "kind": ""}}]}, "spec.to.0.ref.kind", "at least 1 character"),
    ({"to": [{"ref": {"apiVersion": "v1", "name": "b"}}]}, "spec.to.0.ref.kind", "Field required"),
    ({"to": [{"ref": {**REF, "name": ""}}]}, "spec.to.0.ref.name", "at least 1 character"),
    ({"to": [{"ref": {"kind": "Broker", "name": "b"}}]}, "spec.to.0.ref.apiVersion", "Field required"),
    ({"to": [{"ref": {**REF, "namespace": "elsewhere"}}]}, "spec.to.0.ref.namespace", "Extra inputs"),
    ({"to": [{"selector": {"matchLabels": {"a": "b"}, "apiVersion": "v1"}}]}, "spec.to.0.selector.kind",
     "Field required"),
    ({"to": [{"selector": {**SELECTOR, "kind": ""}}]}, "spec.to.0.selector.kind", "at least 1 character"),
    ({"to": [{"selector": {**SELECTOR, "matchExpressions": [{"key": "a", "operator": "In"}]}}]},
     "spec.to.0.selector.matchExpressions.0", "In and NotIn need values"),
    ({"to": [{"selector": {**SELECTOR, "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}}]},
     "spec.to.0.selector.matchExpressions.0", "Exists and DoesNotExist take none"),
    ({"to": [{"selector": {**SELECTOR, "matchExpressions": [{"key": "a", "operator": "Has"}]}}]},
     "spec.to.0.selector.matchExpressions.0.operator", "'In', 'NotIn', 'Exists' or 'DoesNotExist'"),
    ({"from": [{"ref": {**FROM_REF, "kind": ""}}]}, "spec.from.0.ref.kind", "at least 1 character"),
    ({"from": [{"ref": {"apiVersion": "v1", "name": "s"}}]}, "spec.from.0.ref.kind", "Field required"),
    ({"from": [{"ref": {"kind": "PingSource", "name": "s"}}]}, "spec.from.0.ref.apiVersion", "Field required"),
    ({"from": [{"ref": {**FROM_REF, "name": ""}}]}, "spec.from.0.ref.name", "at least 1 character"),
    ({"filters": [{"exact": {"type": "a"}, "prefix": {"type": "b"}}]}, "spec.filters.0", "got exact, prefix"),
    ({"filters": [{"exact": {"Type": "a"}}]}, "spec.filters.0.exact", "'Type'"),
    ({"filters": [{"exact": {"type": str(i)}} for i in range(33)]}, "spec.filters", "at most 32"),
    ({"from": [{"sub": "x"}] * (MAX_POLICY_ENTRIES + 1)}, "spec.from", f"at most {MAX_POLICY_ENTRIES}"),
    ({"to": [{"ref": REF}] * (MAX_POLICY_ENTRIES + 1)}, "spec.to", f"at most {MAX_POLICY_ENTRIES}"),
    ({"form": [{"sub": "x"}]}, "spec.form", "Extra inputs"),
])
def test_invalid_policy_is_refused_with_the_field_named(spec: dict[str, Any], path: str, text: str) -> None:
    found = errors(with_spec(spec))
    assert path in found, found
    assert text in found[path], found[path]


def test_the_entry_rules_name_their_list_in_the_message() -> None:
    assert "spec.to" in errors(with_spec({"to": [{}]}))["spec.to.0"]
    assert "spec.from" in errors(with_spec({"from": [{}]}))["spec.from.0"]
    assert "sub" in errors(with_spec({"from": [{"sub": "*x"}]}))["spec.from.0.sub"]


def test_kind_and_api_version_are_checked() -> None:
    found = errors({**with_spec({}), "kind": "Trigger", "apiVersion": "eventing.knative.dev/v1alpha1"})
    assert set(found) == {"kind", "apiVersion"}


@pytest.mark.parametrize("sub", ["", "*", "a", "ab", "a*", "*a", "a*b", "**", "a**", "ab*", "a*b*", "x" * 20 + "*"])
def test_the_sub_pattern_is_knatives_check(sub: str) -> None:
    assert bool(re.match(SUB_PATTERN, sub)) == knative_sub_is_valid(sub)


# --- the generated CRD ---------------------------------------------------------------------------


def spec_node(*path: str) -> dict[str, Any]:
    """The schema node at ``path`` below spec, ``[]`` stepping into a list's items."""
    node: dict[str, Any] = schema("EventPolicy")["properties"]["spec"]
    for step in path:
        node = node["items"] if step == "[]" else node["properties"][step]
    return node


def rules(node: dict[str, Any]) -> dict[str, str]:
    return {rule["rule"]: rule["message"] for rule in node.get(RULES, [])}


def test_crd_is_registered_as_a_kind_of_the_group() -> None:
    definition = crd("EventPolicy")
    assert PLURALS["EventPolicy"] == "eventpolicies"
    assert definition["metadata"]["name"] == "eventpolicies.eventferry.dev"
    names = definition["spec"]["names"]
    assert names == {"kind": "EventPolicy", "listKind": "EventPolicyList", "plural": "eventpolicies",
                     "singular": "eventpolicy", "shortNames": ["efeventpolicy"], "categories": ["all", "eventing"]}
    version = definition["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Age", "Ready", "Reason"]


def test_crd_schema_is_structural_with_typed_status() -> None:
    root = schema("EventPolicy")
    for path, node in walk(root):
        assert not FORBIDDEN & set(node), (path, FORBIDDEN & set(node))
        assert "type" in node, path
        assert node.get("additionalProperties") is not False, path
    status = root["properties"]["status"]
    assert status["properties"]["from"] == {"description": status["properties"]["from"]["description"],
                                            "type": "array", "items": {"type": "string"}}
    assert status["properties"]["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert "required" not in root  # spec is optional, as in Knative


def test_crd_holds_the_one_of_rules_with_the_field_named() -> None:
    assert rules(spec_node("to", "[]")) == {
        "has(self.ref) != has(self.selector)": "each entry of spec.to sets exactly one of ref or selector"}
    assert rules(spec_node("from", "[]")) == {
        "has(self.ref) != has(self.sub)": "each entry of spec.from sets exactly one of ref or sub"}


def test_crd_holds_the_sub_rule_with_the_pattern_python_checks() -> None:
    sub = spec_node("from", "[]", "sub")
    message = "spec.from[].sub: '*' is only allowed as the last character (a prefix wildcard)"
    assert rules(sub) == {f"self.matches('{SUB_PATTERN}')": message}
    assert (sub["minLength"], sub["maxLength"]) == (1, MAX_SUB_LENGTH)


def test_crd_requires_api_version_kind_and_name_of_every_reference() -> None:
    for path, required in ((("to", "[]", "ref"), ["apiVersion", "kind", "name"]),
                           (("from", "[]", "ref"), ["apiVersion", "kind", "name"]),
                           (("to", "[]", "selector"), ["apiVersion", "kind"])):
        node = spec_node(*path)
        assert node["required"] == required, path
        for name in required:
            assert node["properties"][name]["minLength"] == 1, (path, name)
    assert "namespace" in spec_node("from", "[]", "ref")["properties"]
    assert "namespace" not in spec_node("to", "[]", "ref")["properties"]


def test_crd_checks_label_selector_requirements() -> None:
    expressions = spec_node("to", "[]", "selector", "matchExpressions")
    requirement = expressions["items"]
    assert requirement["properties"]["operator"]["enum"] == ["In", "NotIn", "Exists", "DoesNotExist"]
    ((rule, message),) = rules(requirement).items()
    assert "self.operator in ['In', 'NotIn']" in rule and "size(self.values) > 0" in rule
    assert message.startswith("spec.to[].selector.matchExpressions[].values:")


def test_crd_bounds_every_list_that_holds_rules() -> None:
    """The API server refuses rules whose worst-case cost is unbounded."""
    assert spec_node("to")["maxItems"] == MAX_POLICY_ENTRIES
    assert spec_node("from")["maxItems"] == MAX_POLICY_ENTRIES
    assert spec_node("filters")["maxItems"] == 32
    assert spec_node("to", "[]", "selector", "matchExpressions")["maxItems"] == 32


def test_crd_filters_are_the_triggers() -> None:
    trigger = schema("Trigger")["properties"]["spec"]["properties"]["filters"]
    assert spec_node("filters")["items"] == trigger["items"]
    assert spec_node("filters")["maxItems"] == trigger["maxItems"]
