"""RocketMQSource: types, defaults and validation (RocketMQ 5, through the gRPC proxy)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from eventferry.apis.delivery import DeliverySpec
from eventferry.apis.duck import CloudEventOverrides, Destination, SecretValueFromSource
from eventferry.apis.meta import ApiModel, cel
from eventferry.apis.source import UNORDERED, Ordering, SourceResource, SourceStatus

FilterType = Literal["tag", "sql92"]


def split_endpoints(endpoints: str) -> list[str]:
    """``host1:port;host2:port`` -> ``["host1:port", "host2:port"]``; ValueError when one is not host:port."""
    parts = [part.strip() for part in endpoints.split(";")]
    for part in parts:
        host, colon, port = part.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"endpoint {part!r} of {endpoints!r} is not host:port (endpoints are separated by ';')")
    return parts


class RocketMQSourceSpec(ApiModel):
    """The desired state of a RocketMQSource."""

    endpoints: str = Field(min_length=1)
    """gRPC endpoint(s) of the RocketMQ 5 proxy: host:port, or host1:port;host2:port."""
    topic: str = Field(min_length=1)
    consumer_group: str = Field(
        min_length=1, json_schema_extra=cel("self == oldSelf", "spec.consumerGroup is immutable")
    )
    """Consumer group; immutable."""
    filter_expression: str = Field(default="*", min_length=1)
    """Tag expression (e.g. "live || gift"), or a SQL92 expression when filterType is sql92."""
    filter_type: FilterType = "tag"
    namespace: str | None = None
    """RocketMQ namespace of the topic and group."""
    name_servers: str | None = Field(default=None, min_length=1)
    """Name server(s), host:port or host1:port;host2:port: where the operator reads the consumer group's
    backlog (RocketMQ's remoting protocol) to autoscale the adapter. Needed only for autoscaling."""
    access_key: SecretValueFromSource | None = None
    """Access key of the credentials; requires secretKey."""
    secret_key: SecretValueFromSource | None = None
    """Secret key of the credentials; requires accessKey."""
    consumers: int = Field(default=1, ge=1)
    """Number of consumers (adapter replicas) in the consumer group; the scale subresource sets it."""
    ordering: Ordering = UNORDERED
    """ordered: one event in flight per message queue (FIFO groups); unordered: several, bounded."""
    delivery: DeliverySpec | None = None
    """Delivery to the sink."""
    sink: Destination
    """Where the events go: a Broker, a Service or a URL."""
    ce_overrides: CloudEventOverrides | None = None
    """Extension attributes added to every event."""

    @field_validator("endpoints", "name_servers")
    @classmethod
    def _endpoints(cls, endpoints: str | None) -> str | None:
        if endpoints is not None:
            split_endpoints(endpoints)
        return endpoints

    @model_validator(mode="after")
    def _credentials(self) -> RocketMQSourceSpec:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("accessKey and secretKey must be set together")
        return self


class RocketMQSource(SourceResource):
    """A RocketMQSource reads a RocketMQ topic and sends each message as a CloudEvent to its sink."""

    api_version: Literal["eventferry.dev/v1alpha1"] = "eventferry.dev/v1alpha1"
    kind: Literal["RocketMQSource"] = "RocketMQSource"
    spec: RocketMQSourceSpec
    status: SourceStatus | None = None
