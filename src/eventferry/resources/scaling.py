"""Autoscaling of a source's adapter Deployment: KEDA's objects, and the built-in engine's decision. Pure.

- ``keda``: one ScaledObject per source, named as its Deployment and owned by the source (deleted
  with it), with one Kafka trigger per topic, and a TriggerAuthentication for the SASL and TLS
  material the source reads from its Secrets (KEDA reads the same Secret keys; no value is copied).
- ``builtin``: the operator reads the consumer group's lag itself and ``decide`` sets the replicas
  with KEDA's rules: awake while the lag is over the activation threshold, one replica per
  ``lag-threshold`` messages, no more replicas than partitions (an extra one would idle), between
  ``min-scale`` and ``max-scale``; up at once, down only once the lag has stayed low for the cooldown.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from eventferry.apis.autoscaling import SourceScaling
from eventferry.apis.kafkasource import KafkaSource
from eventferry.apis.rocketmqsource import RocketMQSource
from eventferry.resources.adapter import Source, deployment_name, labels, owner_reference

KEDA_API_VERSION = "keda.sh/v1alpha1"
# The source Secret's SASL mechanism (Knative's values) -> KEDA's Kafka scaler's ``sasl`` parameter.
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


# --- KEDA --------------------------------------------------------------------------------------------------

def _meta(source: Source) -> dict[str, Any]:
    return {"name": deployment_name(source), "namespace": source.namespace, "labels": labels(source),
            "ownerReferences": [owner_reference(source)]}


def trigger_authentication(source: KafkaSource) -> dict[str, Any] | None:
    """The Secret keys KEDA needs to reach the source's Kafka; None when it needs none."""
    net = source.spec.net
    refs: list[tuple[str, Any]] = []
    if net and net.sasl and net.sasl.enable:
        refs += [("username", net.sasl.user), ("password", net.sasl.password)]
    if net and net.tls and net.tls.enable:
        refs += [("ca", net.tls.ca_cert), ("cert", net.tls.cert), ("key", net.tls.key)]
    targets = [{"parameter": parameter, "name": ref.secret_key_ref.name, "key": ref.secret_key_ref.key}
               for parameter, ref in refs if ref is not None]
    if not targets:
        return None
    return {"apiVersion": KEDA_API_VERSION, "kind": "TriggerAuthentication", "metadata": _meta(source),
            "spec": {"secretTargetRef": targets}}


def scaled_object(source: KafkaSource, scaling: SourceScaling, sasl_mechanism: str | None = None) -> dict[str, Any]:
    """The ScaledObject that scales the adapter Deployment of ``source`` on its consumer group's lag.

    ``sasl_mechanism`` is the value of the source's ``spec.net.sasl.type`` key (PLAIN when unset).
    """
    net = source.spec.net
    trigger_metadata: dict[str, str] = {
        "bootstrapServers": ",".join(source.spec.bootstrap_servers),
        "consumerGroup": source.effective_consumer_group(),
        "lagThreshold": str(scaling.lag_threshold),
        "activationLagThreshold": str(scaling.activation_lag_threshold),
        "offsetResetPolicy": source.spec.initial_offset,
        # As the built-in engine: a replica beyond the partition count would have nothing to read.
        "allowIdleConsumers": "false",
    }
    if net and net.sasl and net.sasl.enable:
        trigger_metadata["sasl"] = KEDA_SASL[(sasl_mechanism or "PLAIN").strip().upper()]
    if net and net.tls and net.tls.enable:
        trigger_metadata["tls"] = "enable"
    authentication = trigger_authentication(source)
    triggers = []
    for topic in source.spec.topics:
        trigger: dict[str, Any] = {"type": "kafka", "name": _trigger_name(topic),
                                   "metadata": {**trigger_metadata, "topic": topic}}
        if authentication is not None:
            trigger["authenticationRef"] = {"name": authentication["metadata"]["name"]}
        triggers.append(trigger)
    return _scaled_object(source, scaling, triggers)


def _scaled_object(source: Source, scaling: SourceScaling, triggers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": KEDA_API_VERSION, "kind": "ScaledObject", "metadata": _meta(source),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(source)},
            "minReplicaCount": scaling.min_scale,
            "maxReplicaCount": scaling.max_scale,
            "pollingInterval": scaling.polling_interval,
            "cooldownPeriod": scaling.cooldown_period,
            "triggers": triggers,
        },
    }


def rocketmq_scaled_object(source: RocketMQSource, scaling: SourceScaling, backlog_url: str) -> dict[str, Any]:
    """The ScaledObject of a RocketMQSource: KEDA has no RocketMQ scaler, so its ``metrics-api`` scaler
    reads the group's backlog from the operator (``backlog_url``, its ``/backlog/...`` endpoint)."""
    trigger = {"type": "metrics-api", "name": "backlog", "metadata": {
        "url": backlog_url, "format": "json", "valueLocation": "backlog",
        "targetValue": str(scaling.lag_threshold), "activationTargetValue": str(scaling.activation_lag_threshold)}}
    return _scaled_object(source, scaling, [trigger])


def _trigger_name(topic: str) -> str:
    """A DNS-label-like name per topic, for KEDA's metric names and its status."""
    cleaned = "".join(c if c.isalnum() else "-" for c in topic.lower()).strip("-") or "topic"
    return f"topic-{cleaned}"[:63].rstrip("-")


# --- built-in ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Lag:
    """A consumer group's backlog over the source's topics."""

    total: int
    partitions: int
    """How many partitions the topics have: more replicas than this would idle."""


@dataclass(frozen=True)
class Decision:
    replicas: int
    wanted: int
    """What the lag alone asks for, before the cooldown holds a scale-down back."""
    reason: str


@dataclass
class Recommendations:
    """What ``wanted`` said over the last cooldown period: a scale-down takes the highest of them."""

    seen: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, wanted: int, window: float) -> int:
        self.seen.append((now, wanted))
        while self.seen and self.seen[0][0] < now - window:
            self.seen.popleft()
        return max(replicas for _, replicas in self.seen)


def wanted_replicas(scaling: SourceScaling, lag: Lag) -> tuple[int, str]:
    """What the lag asks for now, and why (the words go to the status and the Events)."""
    low = scaling.min_scale
    if lag.total <= scaling.activation_lag_threshold:
        return low, (f"lag {lag.total} is not above the activation threshold {scaling.activation_lag_threshold}: "
                     f"min-scale {low}")
    wanted = math.ceil(lag.total / scaling.lag_threshold)
    why = f"lag {lag.total} at {scaling.lag_threshold} per replica: {wanted}"
    capped = min(wanted, scaling.max_scale, max(lag.partitions, 1))
    if capped < wanted:
        limit = "max-scale" if capped == scaling.max_scale else f"{lag.partitions} partition(s)"
        why += f", capped at {capped} by {limit}"
    replicas = max(capped, low, 1)
    if replicas > capped:
        why += f", raised to {replicas} by min-scale"
    return replicas, why


def decide(scaling: SourceScaling, lag: Lag, current: int, history: Recommendations, now: float) -> Decision:
    """The replicas to run now: up at once, down only to the highest that the cooldown period asked for."""
    wanted, why = wanted_replicas(scaling, lag)
    held = history.add(now, wanted, scaling.cooldown_period)
    if wanted >= current or held <= wanted:
        return Decision(wanted, wanted, why)
    replicas = min(current, held)
    if replicas > wanted:
        why += f"; held at {replicas} until the lag has stayed low for the cooldown ({scaling.cooldown_period}s)"
    return Decision(replicas, wanted, why)
