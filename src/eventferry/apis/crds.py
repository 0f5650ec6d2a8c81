"""The CustomResourceDefinitions of the kinds, generated from the models (``eventferry crds``).

Schemas come from the pydantic models (``structural.py``), CEL rules from the ``cel(...)`` extras
the models carry next to their Python checks. The one rule a CRD cannot hold (the broker class is an
annotation, and CRD rules cannot read annotations) is a ValidatingAdmissionPolicy instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventferry.apis.autoscaling import admission_rules
from eventferry.apis.broker import BROKER_CLASS_ANNOTATION, Broker, broker_class_cel
from eventferry.apis.eventpolicy import EventPolicy
from eventferry.apis.kafkasource import KafkaSource
from eventferry.apis.meta import GROUP, PLURALS, VERSION, Resource
from eventferry.apis.rocketmqsource import RocketMQSource
from eventferry.apis.structural import structural_schema
from eventferry.apis.trigger import Trigger

LABELS = {"app.kubernetes.io/part-of": "eventferry"}
_READY = '.status.conditions[?(@.type=="Ready")]'
_READY_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": f"{_READY}.status"},
    {"name": "Reason", "type": "string", "jsonPath": f"{_READY}.reason"},
]
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_SINK = {"name": "Sink", "type": "string", "jsonPath": ".status.sinkUri"}
# ``kubectl get kafkasources -o wide``: adapters running, and what the autoscaler wants and why.
_SCALE_COLUMNS = [
    {"name": "Consumers", "type": "integer", "jsonPath": ".status.consumers", "priority": 1},
    {"name": "Wanted", "type": "integer", "jsonPath": ".status.autoscaling.desiredReplicas", "priority": 1},
    {"name": "Lag", "type": "integer", "jsonPath": ".status.autoscaling.lag", "priority": 1},
]


@dataclass(frozen=True)
class _Kind:
    model: type[Resource]
    plural: str
    short_names: list[str]
    columns: list[dict[str, Any]]
    categories: list[str] = field(default_factory=lambda: ["all", "eventing"])
    scalable: bool = False

    @property
    def kind(self) -> str:
        return self.model.__name__

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"


KINDS = (
    _Kind(Broker, PLURALS["Broker"], ["efbroker"], [
        {"name": "URL", "type": "string", "jsonPath": ".status.address.url"}, _AGE, *_READY_COLUMNS]),
    _Kind(Trigger, PLURALS["Trigger"], ["eftrigger"], [
        {"name": "Broker", "type": "string", "jsonPath": ".spec.broker"},
        {"name": "Subscriber_URI", "type": "string", "jsonPath": ".status.subscriberUri"},
        # -o wide: the subscriber's scale, while the Trigger scales it
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.subscriberScale.readyReplicas", "priority": 1},
        {"name": "Wanted", "type": "integer", "jsonPath": ".status.subscriberScale.desiredReplicas", "priority": 1},
        {"name": "Held", "type": "integer", "jsonPath": ".status.subscriberScale.heldEvents", "priority": 1},
        _AGE, *_READY_COLUMNS]),
    _Kind(KafkaSource, PLURALS["KafkaSource"], ["efkafkasource"], [
        {"name": "Topics", "type": "string", "jsonPath": ".spec.topics", "priority": 1},
        _SINK, *_SCALE_COLUMNS, _AGE, *_READY_COLUMNS], categories=["all", "eventing", "sources"], scalable=True),
    _Kind(RocketMQSource, PLURALS["RocketMQSource"], ["efrocketmqsource"], [
        {"name": "Topic", "type": "string", "jsonPath": ".spec.topic", "priority": 1},
        _SINK, *_SCALE_COLUMNS, _AGE, *_READY_COLUMNS], categories=["all", "eventing", "sources"], scalable=True),
    _Kind(EventPolicy, PLURALS["EventPolicy"], ["efeventpolicy"], [_AGE, *_READY_COLUMNS]),
)


def custom_resource_definitions() -> list[dict[str, Any]]:
    """The CRDs of Broker, Trigger, KafkaSource, RocketMQSource and EventPolicy (apiextensions.k8s.io/v1)."""
    return [_crd(kind) for kind in KINDS]


def admission_policies() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicies (and their bindings) for what CRD rules cannot see, annotations:
    a Broker's class stays as it was, and the autoscaling annotations of sources and Triggers are valid."""
    broker_class = _policy(
        f"broker-class-immutable.{GROUP}", ["UPDATE"], [PLURALS["Broker"]],
        variables=[
            {"name": "newAnnotations", "expression": "object.metadata.?annotations.orValue({})"},
            {"name": "oldAnnotations", "expression": "oldObject.metadata.?annotations.orValue({})"},
            {"name": "newClass", "expression": broker_class_cel("variables.newAnnotations")},
            {"name": "oldClass", "expression": broker_class_cel("variables.oldAnnotations")},
        ],
        validations=[{
            "expression": "variables.newClass == variables.oldClass",
            "messageExpression": (
                f"'the broker class is immutable (annotation {BROKER_CLASS_ANNOTATION}): it was '"
                " + variables.oldClass + ', the update makes it ' + variables.newClass"
            ),
            "reason": "Invalid",
        }])
    variables, validations = admission_rules()
    source_autoscaling = _policy(f"source-autoscaling.{GROUP}", ["CREATE", "UPDATE"],
                                 [PLURALS["KafkaSource"], PLURALS["RocketMQSource"]], variables, validations)
    variables, validations = admission_rules("trigger")
    subscriber_autoscaling = _policy(f"trigger-autoscaling.{GROUP}", ["CREATE", "UPDATE"], [PLURALS["Trigger"]],
                                     variables, validations)
    return [*broker_class, *source_autoscaling, *subscriber_autoscaling]


def _policy(name: str, operations: list[str], resources: list[str], variables: list[dict[str, str]],
            validations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy on our kinds and its binding, which denies what it refuses."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": LABELS},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [GROUP], "apiVersions": ["*"], "operations": operations, "resources": resources,
            }]},
            "variables": variables,
            "validations": validations,
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": LABELS},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }
    return [policy, binding]


def _crd(kind: _Kind) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": _root_schema(kind.model)},
        "subresources": {"status": {}},
        "additionalPrinterColumns": kind.columns,
    }
    if kind.scalable:
        version["subresources"]["scale"] = {
            "specReplicasPath": ".spec.consumers",
            "statusReplicasPath": ".status.consumers",
            "labelSelectorPath": ".status.selector",
        }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.name, "labels": LABELS},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": kind.short_names,
                "categories": kind.categories,
            },
            "versions": [version],
        },
    }


def _root_schema(model: type[Resource]) -> dict[str, Any]:
    schema = structural_schema(model)
    # The API server owns apiVersion, kind and metadata: a CRD may only say they are there.
    schema["properties"].update({
        "apiVersion": {"type": "string", "description": "eventferry.dev/v1alpha1"},
        "kind": {"type": "string", "description": model.__name__},
        "metadata": {"type": "object"},
    })
    required = [name for name in schema.get("required", []) if name not in ("apiVersion", "kind", "metadata")]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    return schema
