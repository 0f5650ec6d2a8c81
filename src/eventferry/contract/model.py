"""The routing contract: what the broker data plane needs to know, nothing more.

Compiled from Brokers and Triggers by ``eventferry.contract.compile``; serialized as JSON into the
contract ConfigMap (key ``contract.json``) or a file. ``docs/contract.md`` documents the format.
Destinations are resolved to URLs and durations to seconds before they get here, so that the data
plane never needs the cluster to route an event.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eventferry.apis.delivery import DEFAULT_BACKOFF_DELAY, DEFAULT_BACKOFF_POLICY, DEFAULT_RETRY, DEFAULT_TIMEOUT
from eventferry.apis.duration import parse_duration
from eventferry.apis.meta import object_key
from eventferry.apis.trigger import SubscriptionsAPIFilter

BrokerClass = Literal["InMemory", "Kafka"]


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class Delivery(_Model):
    """Effective delivery of one Trigger: its own DeliverySpec, else its Broker's, else the default."""

    # The defaults are Knative's, defined once in eventferry.apis.delivery.
    retry: int = Field(default=DEFAULT_RETRY, ge=0)
    backoff_policy: Literal["linear", "exponential"] = Field(default=DEFAULT_BACKOFF_POLICY, alias="backoffPolicy")
    backoff_delay: float = Field(default=parse_duration(DEFAULT_BACKOFF_DELAY), ge=0, alias="backoffDelay",
                                 description="seconds")
    backoff_max: float | None = Field(default=None, ge=0, alias="backoffMax", description="seconds")
    timeout: float = Field(default=parse_duration(DEFAULT_TIMEOUT), gt=0, description="seconds, per attempt")
    retry_after_max: float | None = Field(default=None, ge=0, alias="retryAfterMax", description="seconds")
    dead_letter_sink: str | None = Field(default=None, alias="deadLetterSink")
    dead_letter_sink_ca_certs: str | None = Field(default=None, alias="deadLetterSinkCACerts",
                                                  description="PEM CA certificates the https dead-letter sink is "
                                                              "verified with, besides the system's")
    dead_letter_sink_audience: str | None = Field(default=None, alias="deadLetterSinkAudience",
                                                  description="the data plane presents a token for it")
    format: Literal["json", "binary"] | None = None


class Pacing(_Model):
    """A Trigger's pace, defaults applied: None means no cap of that kind."""

    max_concurrency: int | None = Field(default=None, ge=1, alias="maxConcurrency")
    rate: float | None = Field(default=None, gt=0, description="attempts per second")
    burst: int = Field(default=1, ge=1)


class Autoscaled(_Model):
    """The Trigger scales its subscriber's workload (``docs/autoscaling.md``). The data plane then holds its
    events while the subscriber has no ready endpoint (``activation.SubscriberEndpoints``), sends at most
    ``target`` of them in flight per ready endpoint, and reports the Trigger's backlog."""

    target: int = Field(ge=1, description="events in flight per ready endpoint")


class Trigger(_Model):
    namespace: str
    name: str
    uid: str = ""
    generation: int = 0
    subscriber: str
    subscriber_ca_certs: str | None = Field(default=None, alias="subscriberCACerts",
                                            description="PEM CA certificates the https subscriber is verified with, "
                                                        "besides the system's")
    subscriber_audience: str | None = Field(default=None, alias="subscriberAudience",
                                           description="the data plane presents a token for it")
    # Exactly one of the two filter forms is used: a non-empty ``filters`` overrides ``attributes``.
    attributes: dict[str, str] = Field(default_factory=dict)
    filters: list[SubscriptionsAPIFilter] = Field(default_factory=list)  # validated by the API model
    delivery: Delivery = Field(default_factory=Delivery)
    ordering: Literal["unordered", "ordered"] = "unordered"
    pacing: Pacing | None = None
    autoscaled: Autoscaled | None = None

    @property
    def key(self) -> str:
        return object_key(self.namespace, self.name)

    @property
    def own_group(self) -> bool:
        """Kafka class: the Trigger reads with a consumer group of its own, so that its events wait in the log
        (its group's lag) and hold back no other Trigger: ordered, paced and autoscaled Triggers."""
        return self.ordering == "ordered" or self.pacing is not None or self.autoscaled is not None


class SecretRef(_Model):
    namespace: str
    name: str


class KafkaSettings(_Model):
    bootstrap_servers: list[str] = Field(alias="bootstrapServers")
    topic: str
    partitions: int = Field(default=10, ge=1)
    replication_factor: int = Field(default=1, ge=1, alias="replicationFactor")
    auth_secret: SecretRef | None = Field(default=None, alias="authSecret")
    """The Secret with the Kafka credentials (Knative's keys: protocol, sasl.mechanism, user, password, ca.crt,
    user.crt, user.key), read by whoever connects: its name, never its values, is in the contract."""


class SenderPolicy(_Model):
    """Who may send what to a Broker: one EventPolicy that selects it, or the default authorization mode
    (``docs/security.md``). A request is allowed when its sender's subject matches one of ``subjects`` and
    each of its events passes ``filters``."""

    name: str = Field(description="the EventPolicy's namespace/name, or 'default: <mode>'")
    subjects: list[str] = Field(default_factory=list, alias="from",
                                description="exact subjects, or prefixes ending in '*'")
    filters: list[SubscriptionsAPIFilter] = Field(default_factory=list)


class Broker(_Model):
    namespace: str
    name: str
    uid: str = ""
    generation: int = 0
    broker_class: BrokerClass = Field(default="InMemory", alias="class")
    kafka: KafkaSettings | None = None
    triggers: list[Trigger] = Field(default_factory=list)
    audience: str | None = None
    """Set when senders must authenticate: the audience their ServiceAccount token must carry (401 without)."""
    policies: list[SenderPolicy] = Field(default_factory=list)
    """With ``audience``: a sender is let in when one of these allows it (403 otherwise); none lets no one in."""

    @property
    def path(self) -> str:
        return f"/{self.namespace}/{self.name}"

    @property
    def key(self) -> str:
        return object_key(self.namespace, self.name)


class Contract(_Model):
    generation: int = 0
    brokers: list[Broker] = Field(default_factory=list)

    def _destinations(self) -> Iterator[tuple[str, str | None, str | None]]:
        """(URL, CA certificates, audience) of every subscriber and dead-letter sink."""
        for broker in self.brokers:
            for trigger in broker.triggers:
                yield trigger.subscriber, trigger.subscriber_ca_certs, trigger.subscriber_audience
                sink = trigger.delivery
                if sink.dead_letter_sink:
                    yield sink.dead_letter_sink, sink.dead_letter_sink_ca_certs, sink.dead_letter_sink_audience

    def audiences_by_url(self) -> dict[str, str]:
        """Destinations that ask for a token (an audience), by URL."""
        return {url: audience for url, _, audience in self._destinations() if audience}

    def ca_certs_by_url(self) -> dict[str, str]:
        """Destinations that bring their own CA certificates, by URL."""
        return {url: ca_certs for url, ca_certs, _ in self._destinations() if ca_certs}

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> Contract:
        return cls.model_validate_json(text)
