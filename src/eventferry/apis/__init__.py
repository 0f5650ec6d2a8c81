"""The API of EventFerry: pydantic models of Broker, Trigger, KafkaSource, RocketMQSource and
EventPolicy (group eventferry.dev, version v1alpha1) with Knative's field names, and the CRDs generated from them.

Each kind's module holds its types, defaults and validation side by side, as Knative's
``*_types.go``, ``*_defaults.go`` and ``*_validation.go``. This package imports nothing else of the
project.
"""

from eventferry.apis.broker import (
    BROKER_CLASS_ANNOTATION,
    BROKER_CLASSES,
    IN_MEMORY,
    KAFKA,
    KNATIVE_BROKER_CLASS_ANNOTATION,
    Addressable,
    Broker,
    BrokerSpec,
    BrokerStatus,
)
from eventferry.apis.delivery import (
    DEFAULT_BACKOFF_DELAY,
    DEFAULT_BACKOFF_POLICY,
    DEFAULT_RETRY,
    BackoffPolicy,
    DeliveryFormat,
    DeliverySpec,
    default_delivery,
)
from eventferry.apis.duck import (
    CloudEventOverrides,
    Destination,
    KReference,
    SecretKeySelector,
    SecretValueFromSource,
)
from eventferry.apis.duration import parse_duration
from eventferry.apis.eventpolicy import (
    EventPolicy,
    EventPolicyFromReference,
    EventPolicySelector,
    EventPolicySpec,
    EventPolicySpecFrom,
    EventPolicySpecTo,
    EventPolicyStatus,
    EventPolicyToReference,
    LabelSelectorRequirement,
)
from eventferry.apis.kafkasource import (
    KEY_TYPE_LABEL,
    KEY_TYPES,
    KNATIVE_KEY_TYPE_LABEL,
    KafkaNetSpec,
    KafkaSASLSpec,
    KafkaSource,
    KafkaSourceSpec,
    KafkaTLSSpec,
)
from eventferry.apis.meta import API_VERSION, GROUP, VERSION, Condition, ObjectMeta, Resource, Status
from eventferry.apis.rocketmqsource import RocketMQSource, RocketMQSourceSpec, split_endpoints
from eventferry.apis.source import ORDERED, UNORDERED, CloudEventAttributes, Ordering, SourceStatus
from eventferry.apis.trigger import (
    DELIVERY_ORDER_ANNOTATION,
    KNATIVE_DELIVERY_ORDER_ANNOTATION,
    SubscriptionsAPIFilter,
    Trigger,
    TriggerFilter,
    TriggerSpec,
    TriggerStatus,
)

KINDS: dict[str, type[Resource]] = {
    "Broker": Broker,
    "Trigger": Trigger,
    "KafkaSource": KafkaSource,
    "RocketMQSource": RocketMQSource,
    "EventPolicy": EventPolicy,
}
"""Model of each kind, by ``kind``: ``KINDS[manifest["kind"]].model_validate(manifest)``."""

__all__ = [
    "API_VERSION",
    "BROKER_CLASSES",
    "BROKER_CLASS_ANNOTATION",
    "DEFAULT_BACKOFF_DELAY",
    "DEFAULT_BACKOFF_POLICY",
    "DEFAULT_RETRY",
    "DELIVERY_ORDER_ANNOTATION",
    "GROUP",
    "IN_MEMORY",
    "KAFKA",
    "KEY_TYPES",
    "KEY_TYPE_LABEL",
    "KINDS",
    "KNATIVE_BROKER_CLASS_ANNOTATION",
    "KNATIVE_DELIVERY_ORDER_ANNOTATION",
    "KNATIVE_KEY_TYPE_LABEL",
    "ORDERED",
    "UNORDERED",
    "VERSION",
    "Addressable",
    "BackoffPolicy",
    "Broker",
    "BrokerSpec",
    "BrokerStatus",
    "CloudEventAttributes",
    "CloudEventOverrides",
    "Condition",
    "DeliveryFormat",
    "DeliverySpec",
    "Destination",
    "EventPolicy",
    "EventPolicyFromReference",
    "EventPolicySelector",
    "EventPolicySpec",
    "EventPolicySpecFrom",
    "EventPolicySpecTo",
    "EventPolicyStatus",
    "EventPolicyToReference",
    "KReference",
    "KafkaNetSpec",
    "KafkaSASLSpec",
    "KafkaSource",
    "KafkaSourceSpec",
    "KafkaTLSSpec",
    "LabelSelectorRequirement",
    "ObjectMeta",
    "Ordering",
    "Resource",
    "RocketMQSource",
    "RocketMQSourceSpec",
    "SecretKeySelector",
    "SecretValueFromSource",
    "SourceStatus",
    "Status",
    "SubscriptionsAPIFilter",
    "Trigger",
    "TriggerFilter",
    "TriggerSpec",
    "TriggerStatus",
    "default_delivery",
    "parse_duration",
    "split_endpoints",
]
