"""Brokers + Triggers -> routing contract: one pure function, called by the operator and by ``eventferry run``.

What cannot be routed (a Trigger whose Broker is missing, a subscriber that does not resolve, an
invalid CESQL expression, a Broker of an unknown class) is left out of the contract and reported
as a ``CompileProblem``, which the caller turns into a False condition with the same reason and message.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from eventferry.apis.broker import BROKER_CLASSES, KAFKA, Broker, broker_audience
from eventferry.apis.delivery import (
    DEFAULT_BACKOFF_DELAY,
    DEFAULT_BACKOFF_POLICY,
    DEFAULT_TIMEOUT,
    DeliverySpec,
    default_delivery,
)
from eventferry.apis.duration import parse_duration
from eventferry.apis.trigger import PacingSpec, SubscriptionsAPIFilter, Trigger
from eventferry.cesql import CESQLParseError, compile_expression
from eventferry.contract import model
from eventferry.contract.kafka_names import broker_topic
from eventferry.contract.resolve import Resolver, Unresolvable
from eventferry.contract.senders import SenderAuthorization, Target, sender_policies

DEFAULT_PARTITIONS = 10
DEFAULT_REPLICATION = 1
# Knative's Kafka broker settings keys, read from the ConfigMap that spec.config refers to.
BOOTSTRAP_KEY = "bootstrap.servers"
PARTITIONS_KEY = "default.topic.partitions"
REPLICATION_KEY = "default.topic.replication.factor"
AUTH_SECRET_KEY = "auth.secret.ref.name"  # the Secret with the credentials, in the ConfigMap's namespace


@dataclass(frozen=True)
class CompileProblem:
    kind: str  # "Broker" or "Trigger"
    namespace: str
    name: str
    reason: str
    message: str


@dataclass
class Compiled:
    contract: model.Contract
    problems: list[CompileProblem] = field(default_factory=list)

    def problem(self, kind: str, namespace: str, name: str) -> CompileProblem | None:
        for problem in self.problems:
            if (problem.kind, problem.namespace, problem.name) == (kind, namespace, name):
                return problem
        return None


def compile_contract(brokers: Iterable[Broker], triggers: Iterable[Trigger], resolver: Resolver, *,
                     generation: int, config_maps: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
                     default_kafka_bootstrap: list[str] | None = None, autoscaling: bool = True,
                     senders: SenderAuthorization | None = None) -> Compiled:
    """``autoscaling``: whether a Trigger may scale its subscriber's workload (the operator); ``eventferry run``
    has no workloads, so its Triggers deliver as if they did not ask for it. ``senders``: Brokers check
    senders' tokens and let in whom these policies allow (None: anyone may send)."""
    config_maps = config_maps or {}
    problems: list[CompileProblem] = []
    routable: dict[tuple[str, str], Broker] = {}
    kafka: dict[tuple[str, str], model.KafkaSettings | None] = {}
    for broker in brokers:
        ns, name = _namespace(broker), broker.metadata.name
        try:
            kafka[(ns, name)] = _kafka_settings(broker, ns, config_maps, default_kafka_bootstrap)
            routable[(ns, name)] = broker
        except ValueError as error:
            reason = "UnknownBrokerClass" if broker.broker_class not in BROKER_CLASSES else "InvalidConfig"
            problems.append(CompileProblem("Broker", ns, name, reason, str(error)))

    routes: dict[tuple[str, str], list[model.Trigger]] = {key: [] for key in routable}
    for trigger in triggers:
        ns, name = _namespace(trigger), trigger.metadata.name
        target = routable.get((ns, trigger.spec.broker))
        if target is None:
            problems.append(CompileProblem("Trigger", ns, name, "BrokerDoesNotExist",
                                    f"Broker {ns}/{trigger.spec.broker} does not exist or is not ready"))
            continue
        try:
            routes[(ns, trigger.spec.broker)].append(_compile_trigger(trigger, target, ns, resolver, autoscaling))
        except Unresolvable as error:
            problems.append(CompileProblem("Trigger", ns, name, error.reason, str(error)))
        except CESQLParseError as error:
            problems.append(CompileProblem("Trigger", ns, name, "InvalidFilter", f"cesql: {error}"))

    contract_brokers = []
    for (ns, name), broker in sorted(routable.items()):
        klass = broker.broker_class
        audience, policies = None, []
        if senders is not None:
            audience = broker_audience(ns, name)
            policies = sender_policies(broker_target(broker), senders)
        contract_brokers.append(model.Broker(
            namespace=ns, name=name, uid=broker.metadata.uid or "", generation=broker.metadata.generation or 0,
            broker_class=klass if klass in BROKER_CLASSES else "InMemory", kafka=kafka[(ns, name)],
            triggers=sorted(routes[(ns, name)], key=lambda t: t.name), audience=audience, policies=policies))
    return Compiled(model.Contract(generation=generation, brokers=contract_brokers), problems)


def broker_target(broker: Broker) -> Target:
    """The Broker as an EventPolicy target."""
    return Target(broker.api_version, "Broker", broker.namespace, broker.metadata.name, broker.metadata.labels or {})


def _namespace(obj: Broker | Trigger) -> str:
    return obj.namespace


def _kafka_settings(broker: Broker, namespace: str, config_maps: Mapping[tuple[str, str], Mapping[str, str]],
                    default_bootstrap: list[str] | None) -> model.KafkaSettings | None:
    klass = broker.broker_class
    if klass not in BROKER_CLASSES:
        raise ValueError(f"unknown broker class {klass!r}: use one of {', '.join(BROKER_CLASSES)}")
    if klass != KAFKA:
        return None
    data: Mapping[str, str] = {}
    ref = broker.spec.config
    key = (namespace, "")
    if ref is not None:
        key = (ref.namespace or namespace, ref.name)
        if ref.kind != "ConfigMap":
            raise ValueError(f"spec.config must refer to a ConfigMap, not a {ref.kind}")
        if key not in config_maps:
            raise ValueError(f"ConfigMap {key[0]}/{key[1]} named by spec.config does not exist")
        data = config_maps[key]
    servers = [s.strip() for s in data.get(BOOTSTRAP_KEY, "").split(",") if s.strip()] or default_bootstrap or []
    if not servers:
        raise ValueError(f"a Kafka broker needs bootstrap servers: set {BOOTSTRAP_KEY!r} in the ConfigMap that "
                         "spec.config refers to")
    try:
        partitions = int(data.get(PARTITIONS_KEY, DEFAULT_PARTITIONS))
        replication = int(data.get(REPLICATION_KEY, DEFAULT_REPLICATION))
    except ValueError as error:
        raise ValueError(f"invalid Kafka topic settings in the broker config: {error}") from None
    secret = data.get(AUTH_SECRET_KEY, "").strip()
    return model.KafkaSettings(bootstrap_servers=servers, topic=broker_topic(namespace, broker.metadata.name),
                               partitions=partitions, replication_factor=replication,
                               auth_secret=model.SecretRef(namespace=key[0], name=secret) if secret else None)


def _compile_trigger(trigger: Trigger, broker: Broker, namespace: str, resolver: Resolver,
                     autoscaling: bool) -> model.Trigger:
    spec = trigger.spec
    filters = list(spec.filters or [])
    for item in filters:
        _check_cesql(item)
    return model.Trigger(
        namespace=namespace, name=trigger.metadata.name, uid=trigger.metadata.uid or "",
        generation=trigger.metadata.generation or 0,
        subscriber=resolver.resolve(spec.subscriber, namespace),
        subscriber_ca_certs=resolver.ca_certs(spec.subscriber, namespace),
        subscriber_audience=resolver.audience(spec.subscriber, namespace),
        attributes=dict(spec.filter.attributes or {}) if spec.filter else {},
        filters=filters,
        delivery=effective_delivery(spec.delivery, broker.spec.delivery, resolver, namespace),
        ordering=trigger.delivery_order,
        pacing=effective_pacing(spec.pacing),
        autoscaled=autoscaled(trigger) if autoscaling else None,
    )


def autoscaled(trigger: Trigger) -> model.Autoscaled | None:
    """A Trigger scales its subscriber when it asks to and its subscriber is a Service (whose endpoints say
    when the subscriber is ready); the operator reports on the Trigger why one that asks cannot."""
    scaling = trigger.scaling
    ref = trigger.spec.subscriber.ref
    if not scaling.enabled or ref is None or ref.kind != "Service" or (ref.api_version or "v1") != "v1":
        return None
    return model.Autoscaled(target=scaling.target)


def effective_pacing(pacing: PacingSpec | None) -> model.Pacing | None:
    """The burst defaults to the rate (at least 1): a second's worth of attempts may go at once."""
    if pacing is None:
        return None
    burst = pacing.burst if pacing.burst is not None else max(1, math.ceil(pacing.rate or 1))
    return model.Pacing(max_concurrency=pacing.max_concurrency, rate=pacing.rate, burst=burst)


def _check_cesql(item: SubscriptionsAPIFilter) -> None:
    if item.cesql is not None:
        compile_expression(item.cesql)
    for nested in (item.all_ or []) + (item.any_ or []) + ([item.not_] if item.not_ else []):
        _check_cesql(nested)


def effective_delivery(trigger_delivery: DeliverySpec | None, broker_delivery: DeliverySpec | None,
                       resolver: Resolver, namespace: str) -> model.Delivery:
    """A Trigger's delivery fully overrides its Broker's; with neither, Knative's default applies.

    Within a given spec, a missing ``retry`` means no retries (as Knative); other missing fields
    take the defaults (exponential, PT0.2S, a 30 s timeout per attempt).
    """
    spec = trigger_delivery or broker_delivery or default_delivery()
    dead_letter = resolver.resolve(spec.dead_letter_sink, namespace) if spec.dead_letter_sink else None
    dead_letter_ca_certs = resolver.ca_certs(spec.dead_letter_sink, namespace) if spec.dead_letter_sink else None
    dead_letter_audience = resolver.audience(spec.dead_letter_sink, namespace) if spec.dead_letter_sink else None
    return model.Delivery(
        retry=spec.retry if spec.retry is not None else 0,
        backoff_policy=spec.backoff_policy or DEFAULT_BACKOFF_POLICY,
        backoff_delay=parse_duration(spec.backoff_delay or DEFAULT_BACKOFF_DELAY),
        backoff_max=parse_duration(spec.backoff_max) if spec.backoff_max else None,
        timeout=parse_duration(spec.timeout or DEFAULT_TIMEOUT),
        retry_after_max=parse_duration(spec.retry_after_max) if spec.retry_after_max else None,
        dead_letter_sink=dead_letter,
        dead_letter_sink_ca_certs=dead_letter_ca_certs,
        dead_letter_sink_audience=dead_letter_audience,
        format=spec.format,
    )
