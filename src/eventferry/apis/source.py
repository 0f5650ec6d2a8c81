"""What KafkaSource and RocketMQSource share (as Knative's duck/v1 SourceSpec and SourceStatus)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from eventferry.apis.autoscaling import SourceScaling, scaling_of
from eventferry.apis.meta import ApiModel, Resource, Status

Ordering = Literal["ordered", "unordered"]
"""ordered: one event in flight per partition or message queue; unordered: several, bounded."""

ORDERED: Ordering = "ordered"
UNORDERED: Ordering = "unordered"


class CloudEventAttributes(ApiModel):
    """The type and source of the events a source emits, published for discovery."""

    type: str | None = None
    source: str | None = None


class SourceAutoscalingStatus(ApiModel):
    """What the autoscaling of the adapter is doing (set while an autoscaling class is)."""

    scaling_class: str | None = Field(default=None, alias="class")
    """keda or builtin."""
    desired_replicas: int | None = None
    """Adapter replicas wanted."""
    lag: int | None = None
    """The consumer group's lag behind that decision (builtin)."""
    message: str | None = None
    """Why: the lag against the thresholds, or what KEDA reports."""


class AuthStatus(ApiModel):
    """Who the adapter sends as (Knative's AuthStatus)."""

    service_account_name: str | None = None
    """The ServiceAccount whose tokens the adapter presents to its sink."""


class SourceStatus(Status):
    """Status of a source: the resolved sink and the running consumers (read by the scale subresource)."""

    sink_uri: str | None = None
    """The URL the adapter sends events to, resolved from spec.sink."""
    sink_ca_certs: str | None = Field(default=None, alias="sinkCACerts")
    sink_audience: str | None = None
    ce_attributes: list[CloudEventAttributes] | None = None
    consumers: int | None = None
    """Consumers actually running (the scale subresource's status replicas)."""
    selector: str | None = None
    """Label selector of the adapter pods (the scale subresource's label selector)."""
    autoscaling: SourceAutoscalingStatus | None = None
    auth: AuthStatus | None = None


class SourceResource(Resource):
    """What both source kinds share as whole manifests: the autoscaling annotations, checked on load."""

    @model_validator(mode="after")
    def _autoscaling(self) -> SourceResource:
        scaling_of(self.metadata.annotations)
        return self

    @property
    def scaling(self) -> SourceScaling:
        """The autoscaling of the adapter that the annotations ask for (disabled by default)."""
        return scaling_of(self.metadata.annotations)
