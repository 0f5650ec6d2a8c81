"""What KafkaSource and RocketMQSource share (as Knative's duck/v1 SourceSpec and SourceStatus)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eventferry.apis.meta import ApiModel, Status

Ordering = Literal["ordered", "unordered"]
"""ordered: one event in flight per partition or message queue; unordered: several, bounded."""

ORDERED: Ordering = "ordered"
UNORDERED: Ordering = "unordered"


class CloudEventAttributes(ApiModel):
    """The type and source of the events a source emits, published for discovery."""

    type: str | None = None
    source: str | None = None


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
