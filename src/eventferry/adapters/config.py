"""Adapter configuration: what the operator sets as environment variables, or ``eventferry run`` passes in.

Two ways in, one result (``AdapterConfig``):
- ``parse_env(kind, env, secrets)``: the environment of an adapter Deployment (the contract with the
  operator, documented in docs/adapters.md). Pure: secrets come through a lookup the caller gives.
- ``config_from_manifest(manifest, sink)``: a KafkaSource/RocketMQSource manifest and a resolved sink
  URL, for hosting an adapter inside another process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from eventferry.apis.duck import CloudEventOverrides
from eventferry.apis.kafkasource import CONSUMER_GROUP_PREFIX, DEFAULT_KEY_TYPE, KEY_TYPES, KafkaSource, KafkaSourceSpec
from eventferry.apis.meta import object_key
from eventferry.apis.rocketmqsource import RocketMQSource, RocketMQSourceSpec
from eventferry.contract.compile import effective_delivery
from eventferry.contract.model import Delivery
from eventferry.contract.resolve import Resolver, Unresolvable
from eventferry.kafka.connection import (
    CredentialsError,
    DirectorySecrets,
    MappingSecrets,
    Sasl,
    SecretLookup,
    Tls,
    client_options,
    secret_value,
    security,
    security_protocol,
)

Kind = Literal["kafka", "rocketmq"]
KINDS: tuple[Kind, ...] = ("kafka", "rocketmq")

ENV_SINK = "K_SINK"
ENV_CE_OVERRIDES = "K_CE_OVERRIDES"
ENV_SPEC = "K_SOURCE_SPEC"
ENV_NAME = "K_SOURCE_NAME"
ENV_NAMESPACE = "K_SOURCE_NAMESPACE"
ENV_UID = "K_SOURCE_UID"
ENV_KEY_TYPE = "K_KEY_TYPE"
ENV_DELIVERY = "K_DELIVERY"
ENV_SECRETS_DIR = "K_SECRETS_DIR"
ENV_METRICS_PORT = "K_METRICS_PORT"
# A ServiceAccount token for the sink's audience (a projected volume the kubelet rotates), sent with each request.
ENV_SINK_TOKEN_FILE = "K_SINK_TOKEN_FILE"
# PEM CA certificates that verify an https sink, besides the system's (Knative's variable).
ENV_CA_CERTS = "K_CA_CERTS"

DEFAULT_SECRETS_DIR = "/etc/eventferry/secrets"
DEFAULT_METRICS_PORT = 9090
MIN_INVISIBLE_DURATION = 10  # seconds: the RocketMQ 5 proxy refuses a shorter invisible time on receive

# Optional tuning knobs: environment variable -> (Limits field, type).
LIMIT_ENV: dict[str, tuple[str, type]] = {
    "K_MAX_IN_FLIGHT": ("max_in_flight", int),
    "K_MAX_IN_FLIGHT_PER_PARTITION": ("max_in_flight_per_partition", int),
    "K_COMMIT_INTERVAL": ("commit_interval", float),
    "K_DRAIN_TIMEOUT": ("drain_timeout", float),
    "K_FAILED_BACKOFF_MAX": ("failed_backoff_max", float),
    "K_ROCKETMQ_INVISIBLE_DURATION": ("invisible_duration", int),
    "K_ROCKETMQ_AWAIT_DURATION": ("await_duration", int),
    "K_ROCKETMQ_RECEIVERS": ("receivers", int),
    "K_SINK_BATCH_SIZE": ("batch_size", int),
    "K_SINK_BATCH_LINGER": ("batch_linger", float),
}


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the variable or field and what is wrong."""


@dataclass(frozen=True)
class KafkaSourceSettings:
    bootstrap_servers: tuple[str, ...]
    topics: tuple[str, ...]
    consumer_group: str
    initial_offset: Literal["earliest", "latest"] = "latest"
    key_type: str = DEFAULT_KEY_TYPE
    sasl: Sasl | None = None
    tls: Tls | None = None

    @property
    def security_protocol(self) -> str:
        return security_protocol(self.sasl, self.tls)

    def client_options(self) -> dict[str, Any]:
        """aiokafka connection options (TLS material becomes an SSL context: call it off the event loop)."""
        return client_options(self.bootstrap_servers, self.sasl, self.tls)


@dataclass(frozen=True)
class RocketMQSettings:
    endpoints: str
    topic: str
    consumer_group: str
    filter_expression: str = "*"
    filter_type: Literal["tag", "sql92"] = "tag"
    namespace: str = ""
    access_key: str = ""
    secret_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class Limits:
    """Bounds and timings; the defaults suit production, tests shorten some."""

    max_in_flight: int = 1000  # messages held at once (delivering or waiting), the whole adapter
    max_in_flight_per_partition: int = 100  # Kafka: a partition pauses past it
    commit_interval: float = 0.5  # seconds between Kafka offset commits
    drain_timeout: float = 10.0  # seconds that a stopping adapter lets in-flight deliveries finish
    failed_backoff_max: float = 60.0  # longest wait before a delivery that FAILED is tried again (Kafka)
    invisible_duration: int = 60  # seconds a received RocketMQ message stays invisible, renewed while held
    await_duration: int = 5  # RocketMQ long-polling seconds per receive (also bounds the stop latency)
    receivers: int = 4  # concurrent RocketMQ receive calls when unordered (ordered uses one)
    batch_size: int = 1  # events per request to the sink; more than 1 only for a sink that takes batches (a Broker)
    batch_linger: float = 0.005  # seconds a batch waits for more events before it goes

    def __post_init__(self) -> None:
        if self.batch_linger < 0:
            raise ConfigError(f"batch_linger must not be negative, got {self.batch_linger}")
        for name in ("max_in_flight", "max_in_flight_per_partition", "await_duration", "receivers", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.invisible_duration < MIN_INVISIBLE_DURATION:
            raise ConfigError(f"invisible_duration must be at least {MIN_INVISIBLE_DURATION} (the RocketMQ proxy "
                              f"refuses less), got {self.invisible_duration}")
        for name in ("commit_interval", "drain_timeout", "failed_backoff_max"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be greater than 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class AdapterConfig:
    kind: Kind
    namespace: str
    name: str
    sink: str
    delivery: Delivery
    ordering: Literal["ordered", "unordered"] = "unordered"
    ce_overrides: Mapping[str, str] = field(default_factory=dict)
    metrics_port: int | None = None  # None: no /healthz, /readyz, /metrics server (hosted in-process)
    kafka: KafkaSourceSettings | None = None
    rocketmq: RocketMQSettings | None = None
    limits: Limits = field(default_factory=Limits)
    sink_token_file: str | None = None
    sink_ca_certs: str | None = None

    @property
    def key(self) -> str:
        return object_key(self.namespace, self.name)

    def ca_certs_by_url(self) -> dict[str, str]:
        """The sink and the dead-letter sink, when they bring their own CA certificates."""
        found = {self.sink: self.sink_ca_certs} if self.sink_ca_certs else {}
        if self.delivery.dead_letter_sink and self.delivery.dead_letter_sink_ca_certs:
            found[self.delivery.dead_letter_sink] = self.delivery.dead_letter_sink_ca_certs
        return found


# --- from the environment -------------------------------------------------------------------------------

def secrets_from_env(env: Mapping[str, str]) -> DirectorySecrets:
    return DirectorySecrets(env.get(ENV_SECRETS_DIR) or DEFAULT_SECRETS_DIR)


def parse_env(kind: str, env: Mapping[str, str], secrets: SecretLookup) -> AdapterConfig:
    """The adapter's configuration from its environment; ConfigError says which variable is wrong."""
    if kind not in KINDS:
        raise ConfigError(f"unknown adapter kind {kind!r}: use one of {', '.join(KINDS)}")
    name = _required(env, ENV_NAME)
    namespace = _required(env, ENV_NAMESPACE)
    sink = _sink(_required(env, ENV_SINK), ENV_SINK)
    spec_document = _json(env, ENV_SPEC, required=True)
    spec: KafkaSourceSpec | RocketMQSourceSpec
    try:
        spec = (KafkaSourceSpec if kind == "kafka" else RocketMQSourceSpec).model_validate(spec_document)
    except ValidationError as error:
        raise ConfigError(f"{ENV_SPEC} is not a valid {_kind_name(kind)} spec:\n{error}") from None
    overrides = _overrides(env) if env.get(ENV_CE_OVERRIDES) else _spec_overrides(spec)
    delivery = _delivery_from_env(env) if env.get(ENV_DELIVERY) else default_delivery(spec, namespace)
    port = _int(env, ENV_METRICS_PORT, DEFAULT_METRICS_PORT)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{ENV_METRICS_PORT} must be a port number (0 picks a free one), got {port}")
    limits = _limits(env)
    token_file = env.get(ENV_SINK_TOKEN_FILE, "").strip() or None
    ca_certs = env.get(ENV_CA_CERTS, "").strip() or None
    if isinstance(spec, KafkaSourceSpec):
        key_type = env.get(ENV_KEY_TYPE) or DEFAULT_KEY_TYPE
        kafka = kafka_settings(spec, key_type=key_type, uid=env.get(ENV_UID) or None, secrets=secrets)
        return AdapterConfig("kafka", namespace, name, sink, delivery, spec.ordering, overrides, port, kafka=kafka,
                             limits=limits, sink_token_file=token_file, sink_ca_certs=ca_certs)
    rocketmq = rocketmq_settings(spec, secrets)
    return AdapterConfig("rocketmq", namespace, name, sink, delivery, spec.ordering, overrides, port,
                         rocketmq=rocketmq, limits=limits, sink_token_file=token_file, sink_ca_certs=ca_certs)


def _kind_name(kind: str) -> str:
    return "KafkaSource" if kind == "kafka" else "RocketMQSource"


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


def _sink(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{what} must be an absolute http(s) URL, got {url!r}")
    return url


def _json(env: Mapping[str, str], name: str, required: bool = False) -> Any:
    text = env.get(name, "")
    if not text.strip():
        if required:
            raise ConfigError(f"{name} is not set")
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise ConfigError(f"{name} is not valid JSON: {error}") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {text!r}") from None


def _limits(env: Mapping[str, str]) -> Limits:
    values: dict[str, Any] = {}
    for variable, (field_name, kind) in LIMIT_ENV.items():
        text = env.get(variable, "").strip()
        if not text:
            continue
        try:
            values[field_name] = kind(text)
        except ValueError:
            raise ConfigError(f"{variable} must be {'an integer' if kind is int else 'a number'}, "
                              f"got {text!r}") from None
    try:
        return Limits(**values)
    except ConfigError as error:
        raise ConfigError(f"tuning variables: {error}") from None


def _overrides(env: Mapping[str, str]) -> dict[str, str]:
    document = _json(env, ENV_CE_OVERRIDES)
    try:
        overrides = CloudEventOverrides.model_validate(document)
    except ValidationError as error:
        raise ConfigError(f'{ENV_CE_OVERRIDES} must be {{"extensions": {{"name": "value"}}}}:\n{error}') from None
    return dict(overrides.extensions or {})


def _spec_overrides(spec: KafkaSourceSpec | RocketMQSourceSpec) -> dict[str, str]:
    return dict(spec.ce_overrides.extensions or {}) if spec.ce_overrides else {}


def _delivery_from_env(env: Mapping[str, str]) -> Delivery:
    document = _json(env, ENV_DELIVERY)
    try:
        delivery = Delivery.model_validate(document)
    except ValidationError as error:
        raise ConfigError(f"{ENV_DELIVERY} is not a valid resolved delivery:\n{error}") from None
    if delivery.dead_letter_sink is not None:
        _sink(delivery.dead_letter_sink, f"{ENV_DELIVERY} deadLetterSink")
    return delivery


def default_delivery(spec: KafkaSourceSpec | RocketMQSourceSpec, namespace: str) -> Delivery:
    """The spec's delivery with durations in seconds; a dead-letter sink must be a uri (or a Service ref)."""
    resolver = Resolver(broker_url=lambda _namespace, _name: None)
    try:
        return effective_delivery(spec.delivery, None, resolver, namespace)
    except Unresolvable as error:
        raise ConfigError(f"spec.delivery.deadLetterSink: {error}; the operator resolves it into {ENV_DELIVERY}, "
                          "or give a uri") from None


# --- the settings of each kind ----------------------------------------------------------------------------

def kafka_settings(spec: KafkaSourceSpec, *, key_type: str, uid: str | None,
                   secrets: SecretLookup) -> KafkaSourceSettings:
    if key_type not in KEY_TYPES:
        raise ConfigError(f"key type {key_type!r} is not one of {', '.join(KEY_TYPES)}")
    group = spec.consumer_group
    if group is None:
        if not uid:
            raise ConfigError(f"spec.consumerGroup is unset and the source's uid is unknown ({ENV_UID}): "
                              "cannot name the consumer group")
        group = CONSUMER_GROUP_PREFIX + uid
    try:
        sasl, tls = security(spec.net, secrets)
    except CredentialsError as error:
        raise ConfigError(str(error)) from None
    return KafkaSourceSettings(bootstrap_servers=tuple(spec.bootstrap_servers), topics=tuple(spec.topics),
                         consumer_group=group, initial_offset=spec.initial_offset, key_type=key_type,
                         sasl=sasl, tls=tls)


def rocketmq_settings(spec: RocketMQSourceSpec, secrets: SecretLookup) -> RocketMQSettings:
    try:
        access_key = secret_value(secrets, spec.access_key, "spec.accessKey") or ""
        secret_key = secret_value(secrets, spec.secret_key, "spec.secretKey") or ""
    except CredentialsError as error:
        raise ConfigError(str(error)) from None
    return RocketMQSettings(endpoints=spec.endpoints, topic=spec.topic, consumer_group=spec.consumer_group,
                            filter_expression=spec.filter_expression, filter_type=spec.filter_type,
                            namespace=spec.namespace or "", access_key=access_key.strip(),
                            secret_key=secret_key.strip())


# --- from a manifest (adapters hosted by ``eventferry run``) -------------------------------------------------

def config_from_manifest(manifest: Mapping[str, Any], sink: str, *, secrets: SecretLookup | None = None,
                         delivery: Delivery | None = None, metrics_port: int | None = None,
                         limits: Limits | None = None) -> AdapterConfig:
    """A KafkaSource or RocketMQSource manifest plus its resolved sink URL -> the adapter's configuration.

    ``delivery`` is the resolved delivery (dead-letter sink as a URL); by default the spec's, whose
    dead-letter sink must then be a uri.
    """
    kind_name = manifest.get("kind")
    lookup = secrets or MappingSecrets()
    sink = _sink(sink, "the sink")
    try:
        if kind_name == "KafkaSource":
            source = KafkaSource.model_validate(manifest)
            spec: KafkaSourceSpec | RocketMQSourceSpec = source.spec
            namespace, name = source.namespace, source.metadata.name
            kafka = kafka_settings(source.spec, key_type=source.key_type, uid=source.metadata.uid, secrets=lookup)
            rocketmq = None
        elif kind_name == "RocketMQSource":
            rsource = RocketMQSource.model_validate(manifest)
            spec = rsource.spec
            namespace, name = rsource.namespace, rsource.metadata.name
            kafka, rocketmq = None, rocketmq_settings(rsource.spec, lookup)
        else:
            raise ConfigError(f"not a source manifest: kind {kind_name!r} (expected KafkaSource or RocketMQSource)")
    except ValidationError as error:
        raise ConfigError(f"invalid {kind_name}:\n{error}") from None
    return AdapterConfig(
        kind="kafka" if kafka is not None else "rocketmq", namespace=namespace, name=name, sink=sink,
        delivery=delivery or default_delivery(spec, namespace), ordering=spec.ordering,
        ce_overrides=_spec_overrides(spec), metrics_port=metrics_port, kafka=kafka, rocketmq=rocketmq,
        limits=limits or Limits())
