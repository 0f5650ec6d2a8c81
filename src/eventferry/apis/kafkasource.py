"""KafkaSource: types, defaults and validation (as Knative's sources/v1beta1 KafkaSource)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from eventferry.apis.delivery import DeliverySpec
from eventferry.apis.duck import CloudEventOverrides, Destination, SecretValueFromSource
from eventferry.apis.meta import ApiModel, cel
from eventferry.apis.source import UNORDERED, Ordering, SourceResource, SourceStatus

KEY_TYPE_LABEL = "eventferry.dev/key-type"
KNATIVE_KEY_TYPE_LABEL = "kafkasources.sources.knative.dev/key-type"
KEY_TYPES = ("string", "int", "float", "byte-array")
DEFAULT_KEY_TYPE = "string"
# Knative's prefix; Knative appends a random UUID at admission, we append the object's uid so that
# the group is stable without a webhook writing it into the spec.
CONSUMER_GROUP_PREFIX = "knative-kafka-source-"

InitialOffset = Literal["earliest", "latest"]
NonEmpty = Annotated[str, Field(min_length=1)]


class KafkaSASLSpec(ApiModel):
    """SASL authentication, its values read from Secret keys."""

    enable: bool = False
    user: SecretValueFromSource | None = None
    password: SecretValueFromSource | None = None
    type: SecretValueFromSource | None = None
    """The SASL mechanism: PLAIN (default), SCRAM-SHA-256 or SCRAM-SHA-512."""

    @model_validator(mode="after")
    def _credentials(self) -> KafkaSASLSpec:
        if self.enable and (self.user is None or self.password is None):
            raise ValueError("sasl.user and sasl.password are required when sasl.enable is true")
        return self


class KafkaTLSSpec(ApiModel):
    """TLS to the brokers, certificates read from Secret keys."""

    enable: bool = False
    cert: SecretValueFromSource | None = None
    """Client certificate (PEM) for mutual TLS; requires key."""
    key: SecretValueFromSource | None = None
    """Client private key (PEM) for mutual TLS; requires cert."""
    ca_cert: SecretValueFromSource | None = Field(default=None, alias="caCert")
    """CA certificates (PEM) that sign the brokers' certificates."""

    @model_validator(mode="after")
    def _key_pair(self) -> KafkaTLSSpec:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key must be set together")
        return self


class KafkaNetSpec(ApiModel):
    """How to connect to the Kafka brokers."""

    sasl: KafkaSASLSpec | None = None
    tls: KafkaTLSSpec | None = None


class KafkaSourceSpec(ApiModel):
    """The desired state of a KafkaSource."""

    model_config = ConfigDict(
        # On spec rather than on the field, so that adding or removing consumerGroup is refused too.
        json_schema_extra=cel(
            "has(self.consumerGroup) == has(oldSelf.consumerGroup)"
            " && (!has(self.consumerGroup) || self.consumerGroup == oldSelf.consumerGroup)",
            "spec.consumerGroup is immutable",
        )
    )

    bootstrap_servers: list[NonEmpty] = Field(min_length=1)
    """Kafka bootstrap servers, host:port."""
    topics: list[NonEmpty] = Field(min_length=1)
    """Topics to read."""
    consumer_group: str | None = Field(default=None, min_length=1)
    """Consumer group; immutable. Default: knative-kafka-source-<uid of this object>."""
    initial_offset: InitialOffset = "latest"
    """Where a new consumer group starts reading: earliest or latest."""
    net: KafkaNetSpec | None = None
    consumers: int = Field(default=1, ge=1)
    """Number of consumers (adapter replicas) in the consumer group; the scale subresource sets it."""
    ordering: Ordering = UNORDERED
    """ordered: one event in flight per partition; unordered: several, bounded."""
    delivery: DeliverySpec | None = None
    """Delivery to the sink."""
    sink: Destination
    """Where the events go: a Broker, a Service or a URL."""
    ce_overrides: CloudEventOverrides | None = None
    """Extension attributes added to every event."""


class KafkaSource(SourceResource):
    """A KafkaSource reads Kafka topics and sends each record as a CloudEvent to its sink."""

    api_version: Literal["eventferry.dev/v1alpha1"] = "eventferry.dev/v1alpha1"
    kind: Literal["KafkaSource"] = "KafkaSource"
    spec: KafkaSourceSpec
    status: SourceStatus | None = None

    @model_validator(mode="after")
    def _key_type_label(self) -> KafkaSource:
        key_type = self.label(KEY_TYPE_LABEL, KNATIVE_KEY_TYPE_LABEL)
        if key_type is not None and key_type not in KEY_TYPES:
            raise ValueError(
                f"metadata.labels[{KEY_TYPE_LABEL}] must be one of {', '.join(KEY_TYPES)}, got {key_type!r}"
            )
        return self

    @property
    def key_type(self) -> str:
        """How record keys are read: string (default), int, float or byte-array (label, ours or Knative's)."""
        return self.label(KEY_TYPE_LABEL, KNATIVE_KEY_TYPE_LABEL) or DEFAULT_KEY_TYPE

    def effective_consumer_group(self) -> str:
        """spec.consumerGroup, or Knative's default derived from metadata.uid when it is unset."""
        if self.spec.consumer_group is not None:
            return self.spec.consumer_group
        if not self.metadata.uid:
            raise ValueError("spec.consumerGroup is unset and metadata.uid is unknown: cannot name the consumer group")
        return CONSUMER_GROUP_PREFIX + self.metadata.uid
