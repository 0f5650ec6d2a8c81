"""Broker: types, defaults and validation (as Knative's eventing/v1 broker_*.go)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eventferry.apis.delivery import DeliverySpec
from eventferry.apis.duck import KReference
from eventferry.apis.meta import GROUP, ApiModel, Resource, Status

BROKER_CLASS_ANNOTATION = "eventferry.dev/broker.class"
KNATIVE_BROKER_CLASS_ANNOTATION = "eventing.knative.dev/broker.class"
IN_MEMORY = "InMemory"
KAFKA = "Kafka"
BROKER_CLASSES = (IN_MEMORY, KAFKA)
# Knative's class names mapped to ours; any other Knative class passes through unchanged (and unknown).
KNATIVE_BROKER_CLASSES = {"MTChannelBasedBroker": IN_MEMORY, "Kafka": KAFKA}


def broker_audience(namespace: str, name: str) -> str:
    """The audience a sender's token must carry for this Broker (its ``status.address.audience``), spelled as
    Knative's: ``<group>/<kind>/<namespace>/<name>``, lower case."""
    return f"{GROUP}/broker/{namespace}/{name}".lower()


def broker_class_cel(annotations: str) -> str:
    """CEL that computes the class of a Broker from its annotations (a CEL map expression), the way
    ``Broker.broker_class`` does.

    CRD validation rules cannot read annotations, so the class is kept immutable by a
    ValidatingAdmissionPolicy (see ``eventferry.apis.crds``), which uses this expression.
    """
    knative = f"{annotations}[?'{KNATIVE_BROKER_CLASS_ANNOTATION}']"
    mapped = "".join(
        f"{knative}.orValue('') == '{k}' ? '{v}' : " for k, v in KNATIVE_BROKER_CLASSES.items() if k != v
    )
    return f"{annotations}[?'{BROKER_CLASS_ANNOTATION}'].orValue({mapped}{knative}.orValue('{IN_MEMORY}'))"


class BrokerSpec(ApiModel):
    """The desired state of a Broker."""

    config: KReference | None = None
    """Class-specific configuration, e.g. a ConfigMap with the Kafka settings of a Kafka broker."""
    delivery: DeliverySpec | None = None
    """Delivery of the Broker's Triggers that set none of their own."""


class Addressable(ApiModel):
    """An address events can be sent to."""

    name: str | None = None
    url: str | None = None
    ca_certs: str | None = Field(default=None, alias="CACerts")
    audience: str | None = None


class AppliedEventPolicyRef(ApiModel):
    """An EventPolicy that applies to the resource (Knative's AppliedEventPolicyRef)."""

    api_version: str
    name: str


class BrokerStatus(Status):
    """Observed state: Ready, Addressable, IngressReady, DeadLetterSinkResolved and EventPoliciesReady
    conditions, the address (with the audience of senders' tokens when they are checked), the policies."""

    address: Addressable | None = None
    """Where producers POST events: the ingress URL of this Broker."""
    addresses: list[Addressable] | None = None
    dead_letter_sink_uri: str | None = None
    dead_letter_sink_ca_certs: str | None = Field(default=None, alias="deadLetterSinkCACerts")
    dead_letter_sink_audience: str | None = None
    policies: list[AppliedEventPolicyRef] | None = None
    """The EventPolicies that decide who may send to this Broker."""


class Broker(Resource):
    """A Broker receives events at its address and delivers them to the subscribers of its Triggers."""

    api_version: Literal["eventferry.dev/v1alpha1"] = "eventferry.dev/v1alpha1"
    kind: Literal["Broker"] = "Broker"
    spec: BrokerSpec = Field(default_factory=BrokerSpec)
    status: BrokerStatus | None = None

    @property
    def broker_class(self) -> str:
        """``InMemory`` (default), ``Kafka``, or an unknown class as written (not a model error:
        the operator reports it as a False condition)."""
        ours = self.annotation(BROKER_CLASS_ANNOTATION)
        if ours is not None:
            return ours
        knative = self.annotation(KNATIVE_BROKER_CLASS_ANNOTATION)
        if knative is None:
            return IN_MEMORY
        return KNATIVE_BROKER_CLASSES.get(knative, knative)
