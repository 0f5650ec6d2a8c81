"""What every kind shares: the model base, object metadata, conditions and the status duck type."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "eventferry.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
DEFAULT_NAMESPACE = "default"


def object_key(namespace: str, name: str) -> str:
    """``namespace/name``, the one spelling of an object's key."""
    return f"{namespace}/{name}"

# The resource name of each kind in the API (CRDs, RBAC, watches, status writes).
PLURALS = {"Broker": "brokers", "Trigger": "triggers", "KafkaSource": "kafkasources",
           "RocketMQSource": "rocketmqsources", "EventPolicy": "eventpolicies"}


def cel(rule: str, message: str) -> dict[str, Any]:
    """A CEL rule for the CRD schema (``x-kubernetes-validations``), kept next to the Python check."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message}]}


class ApiModel(BaseModel):
    """Base of every API type: snake_case in Python, Knative's camelCase in manifests.

    Unknown fields are refused, as kubectl's default strict field validation refuses them, so that
    ``eventferry run`` and the cluster agree on what a manifest means.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_attribute_docstrings=True
    )


class ObjectMeta(ApiModel):
    """Kubernetes object metadata; fields not named here (managedFields, ...) are kept as they are."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    finalizers: list[str] | None = None
    owner_references: list[dict[str, Any]] | None = None


class Condition(ApiModel):
    """One observation of an aspect of the resource's state (Knative's apis.Condition)."""

    type: str = Field(min_length=1)
    """Condition type, e.g. Ready, BrokerReady, SinkProvided."""
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    """One-word CamelCase reason for the last transition."""
    message: str | None = None
    """Human-readable detail of the last transition."""
    last_transition_time: str | None = None
    """RFC 3339 time of the last status change."""
    severity: Literal["Error", "Warning", "Info"] | None = None
    """Empty (an error) for the Ready condition; Warning or Info for the others that do not block Ready."""


class Status(ApiModel):
    """Knative's duck Status: conditions, observedGeneration and free annotations.

    Fields that a newer operator writes and this model does not name are kept, not refused.
    """

    model_config = ConfigDict(extra="allow")

    observed_generation: int | None = None
    """The metadata.generation that the conditions describe."""
    conditions: list[Condition] | None = Field(
        default=None,
        # One condition per type: the API server refuses duplicates and server-side apply merges by type.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    annotations: dict[str, str] | None = None
    """Extra status information the operator records."""

    def get_condition(self, condition_type: str) -> Condition | None:
        return next((c for c in self.conditions or () if c.type == condition_type), None)

    @property
    def is_ready(self) -> bool:
        ready = self.get_condition("Ready")
        return ready is not None and ready.status == "True"


class Resource(ApiModel):
    """A whole manifest: ``model_validate(manifest)`` reads one, ``to_manifest()`` writes it back."""

    # Each kind narrows these two to its own Literal; declared here so that they come first in dumps.
    api_version: str = API_VERSION
    kind: str
    metadata: ObjectMeta

    def to_manifest(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @property
    def namespace(self) -> str:
        """The namespace, ``default`` when the manifest names none (as kubectl applies it)."""
        return self.metadata.namespace or DEFAULT_NAMESPACE

    @property
    def key(self) -> str:
        """``namespace/name``: how the contract, logs and metrics name the object."""
        return object_key(self.namespace, self.metadata.name)

    def annotation(self, *names: str) -> str | None:
        """The value of the first of the annotations ``names`` that is set."""
        return _first(self.metadata.annotations, names)

    def label(self, *names: str) -> str | None:
        """The value of the first of the labels ``names`` that is set."""
        return _first(self.metadata.labels, names)


def _first(values: dict[str, str] | None, names: tuple[str, ...]) -> str | None:
    for name in names:
        if values and name in values:
            return values[name]
    return None
