"""The status of each kind, from the facts the operator gathered: pure, so every rule is unit-tested.

Each ``*_status`` returns the whole ``status`` to write with a JSON merge patch: fields that no longer
apply are ``None`` so that the patch removes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eventferry.apis.meta import API_VERSION
from eventferry.resources.conditions import Cond, false, merge, summarize, true, unknown

ADDRESSABLE = "Addressable"
INGRESS_READY = "IngressReady"
DEAD_LETTER_SINK_RESOLVED = "DeadLetterSinkResolved"
TOPIC_READY = "TopicReady"
EVENT_POLICIES_READY = "EventPoliciesReady"
BROKER_READY = "BrokerReady"
SUBSCRIBER_RESOLVED = "SubscriberResolved"
SINK_PROVIDED = "SinkProvided"
DEPLOYED = "Deployed"
AUTOSCALED = "Autoscaled"


@dataclass(frozen=True)
class Resolution:
    """A destination turned into a URL, or why it could not be."""

    uri: str | None = None
    reason: str | None = None
    message: str | None = None

    @classmethod
    def failed(cls, reason: str, message: str) -> Resolution:
        return cls(None, reason, message)


@dataclass(frozen=True)
class StatusProblem:
    reason: str
    message: str


def _dead_letter(resolution: Resolution | None) -> Cond:
    if resolution is None:
        return true(DEAD_LETTER_SINK_RESOLVED, "DeadLetterSinkNotConfigured", "no dead-letter sink is configured")
    if resolution.uri is None:
        return false(DEAD_LETTER_SINK_RESOLVED, resolution.reason or "Unresolvable", resolution.message or "")
    return true(DEAD_LETTER_SINK_RESOLVED)


def _status(previous: Mapping[str, Any] | None, conditions: list[Cond], generation: int | None, now: str,
            **fields: Any) -> dict[str, Any]:
    merged = merge((previous or {}).get("conditions"), conditions, now)
    return {"observedGeneration": generation, "conditions": merged, **fields}


# --- Broker -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BrokerFacts:
    address: str | None
    """The ingress URL, None when the Broker is not routable (problem says why)."""
    problem: StatusProblem | None = None
    """Why the Broker is not in the contract: UnknownBrokerClass, InvalidConfig, InvalidSpec."""
    ingress: Cond = field(default_factory=lambda: unknown(INGRESS_READY, "NotInContract", ""))
    """The readiness gate, named IngressReady."""
    dead_letter: Resolution | None = None
    topic: Cond | None = None
    """TopicReady, for Kafka-class Brokers."""
    audience: str | None = None
    """Set when senders must present a token for it."""
    https_address: str | None = None
    """The ingress's https URL, when it serves HTTPS (transport encryption permissive or strict)."""
    https_only: bool = False
    """Strict transport encryption: the https URL is the address, and the only one."""
    ca_certs: str | None = None
    """PEM CA certificates of the ingress certificate, for the https address."""
    policies: tuple[str, ...] = ()
    """The EventPolicies (their names, in the Broker's namespace) that apply to the Broker."""
    senders: Cond | None = None
    """EventPoliciesReady: who may send, as ``event_policies_condition`` says."""


def event_policies_condition(authentication: bool, mode: str, policies: tuple[str, ...]) -> Cond:
    """Knative's EventPoliciesReady: which policies decide who may send, or why none do."""
    if not authentication:
        if policies:
            return false(EVENT_POLICIES_READY, "AuthenticationDisabled",
                         f"EventPolicies {', '.join(policies)} apply but are not enforced: senders are not "
                         "authenticated; run the operator with --authentication=required "
                         "(chart value security.authentication)")
        return true(EVENT_POLICIES_READY, "AuthenticationDisabled",
                    "senders are not authenticated: any client that reaches the ingress may send")
    if not policies:
        return true(EVENT_POLICIES_READY, "DefaultAuthorizationMode",
                    f"no EventPolicy selects this Broker: default authorization mode {mode}")
    return true(EVENT_POLICIES_READY, "EventPoliciesReady", f"senders allowed by {', '.join(policies)}")


def broker_conditions(facts: BrokerFacts) -> list[Cond]:
    if facts.problem is not None:
        addressable = false(ADDRESSABLE, facts.problem.reason, facts.problem.message)
        ingress = unknown(INGRESS_READY, facts.problem.reason, "the Broker is not routed")
    else:
        addressable = true(ADDRESSABLE)
        ingress = facts.ingress
    dependents = [addressable, ingress, _dead_letter(facts.dead_letter)]
    if facts.topic is not None:
        dependents.append(facts.topic)
    if facts.senders is not None:
        dependents.append(facts.senders)
    return [summarize(dependents), *dependents]


def broker_status(facts: BrokerFacts, previous: Mapping[str, Any] | None, generation: int | None,
                  now: str) -> dict[str, Any]:
    dead_letter_uri = facts.dead_letter.uri if facts.dead_letter else None
    address, addresses = _broker_addresses(facts) if facts.address and facts.problem is None else (None, None)
    policies = [{"apiVersion": API_VERSION, "name": name} for name in facts.policies] or None
    return _status(previous, broker_conditions(facts), generation, now, address=address, addresses=addresses,
                   deadLetterSinkUri=dead_letter_uri, policies=policies)


def _broker_addresses(facts: BrokerFacts) -> tuple[dict[str, str], list[dict[str, str]] | None]:
    """Knative's shapes: ``address`` is the https one under strict encryption, else the http one; ``addresses``
    lists every one while there is an https address (none without: the status stays as it was)."""
    assert facts.address is not None
    audience = {"audience": facts.audience} if facts.audience else {}
    plain = {"name": "http", "url": facts.address, **audience}
    if not facts.https_address:
        return {k: v for k, v in plain.items() if k != "name"}, None
    secure = {"name": "https", "url": facts.https_address, **audience,
              **({"CACerts": facts.ca_certs} if facts.ca_certs else {})}
    chosen, every = (secure, [secure]) if facts.https_only else (plain, [plain, secure])
    return {k: v for k, v in chosen.items() if k != "name"}, every


# --- Trigger ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TriggerFacts:
    broker: Cond
    """BrokerReady: from the Broker's own Ready condition as this pass computed it."""
    subscriber: Resolution
    dead_letter: Resolution | None = None
    problem: StatusProblem | None = None
    """What else keeps the Trigger out of the contract (InvalidFilter, InvalidSpec)."""
    loaded: Cond = field(default_factory=lambda: unknown("Loaded", "NotInContract", ""))
    """The readiness gate: True once the data plane routes the Trigger as it is now."""
    scale: SubscriberScaleReport | None = None
    """While the Trigger scales its subscriber's workload."""


@dataclass(frozen=True)
class SubscriberScaleReport:
    """What the scaling of a Trigger's subscriber is doing, for the Trigger's status."""

    condition: Cond
    """SubscriberScaled: True (ready, or at zero with nothing held), Unknown while activating (it does not
    make the Trigger unready: a cold start is normal), False when it cannot scale or missed its activation."""
    workload: str | None = None
    desired: int | None = None
    ready: int | None = None
    held: int | None = None
    message: str | None = None


def broker_ready(broker_ready_condition: Mapping[str, Any] | Cond | None, namespace: str, name: str) -> Cond:
    """BrokerReady of a Trigger, from the Ready condition of its Broker (None: no such Broker)."""
    if broker_ready_condition is None:
        return false(BROKER_READY, "BrokerDoesNotExist", f"Broker {namespace}/{name} does not exist")
    if isinstance(broker_ready_condition, Cond):
        status, reason, message = (broker_ready_condition.status, broker_ready_condition.reason,
                                   broker_ready_condition.message)
    else:
        status = broker_ready_condition.get("status", "Unknown")
        reason, message = broker_ready_condition.get("reason"), broker_ready_condition.get("message")
    if status == "True":
        return true(BROKER_READY)
    text = f"Broker {namespace}/{name} is not ready" + (f": {reason}: {message}" if reason else "")
    if status == "False":
        return false(BROKER_READY, "BrokerNotReady", text)
    return unknown(BROKER_READY, "BrokerNotReady", text)


def trigger_conditions(facts: TriggerFacts) -> list[Cond]:
    subscriber = (true(SUBSCRIBER_RESOLVED) if facts.subscriber.uri is not None else
                  false(SUBSCRIBER_RESOLVED, facts.subscriber.reason or "Unresolvable", facts.subscriber.message or ""))
    dependents = [facts.broker, subscriber, _dead_letter(facts.dead_letter)]
    blocker = (facts.problem.reason, facts.problem.message) if facts.problem else None
    scaled = facts.scale.condition if facts.scale is not None else None
    ready = summarize(dependents + ([scaled] if scaled is not None and scaled.status == "False" else []), blocker)
    if ready.is_true and not facts.loaded.is_true:
        # Every dependency is fine: what is left is the data plane loading the contract.
        ready = Cond("Ready", facts.loaded.status, facts.loaded.reason, facts.loaded.message)
    return [ready, *dependents, *([scaled] if scaled is not None else [])]


def trigger_status(facts: TriggerFacts, previous: Mapping[str, Any] | None, generation: int | None,
                   now: str) -> dict[str, Any]:
    scale = facts.scale
    # None values stay: the merge patch removes what no longer applies
    subscriber_scale = None if scale is None else {
        "workload": scale.workload, "desiredReplicas": scale.desired, "readyReplicas": scale.ready,
        "heldEvents": scale.held, "message": scale.message}
    return _status(previous, trigger_conditions(facts), generation, now,
                   subscriberUri=facts.subscriber.uri,
                   deadLetterSinkUri=facts.dead_letter.uri if facts.dead_letter else None,
                   subscriberScale=subscriber_scale)


# --- KafkaSource and RocketMQSource -------------------------------------------------------------------------

def deployed(deployment: Mapping[str, Any] | None) -> Cond:
    """Deployed, from the adapter Deployment's status as its controller writes it."""
    if deployment is None:
        return unknown(DEPLOYED, "DeploymentNotCreated", "the adapter Deployment does not exist yet")
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation")
    if generation is not None and status.get("observedGeneration", 0) < generation:
        return unknown(DEPLOYED, "DeploymentProgressing", "the adapter Deployment is rolling out")
    available = next((c for c in status.get("conditions") or () if c.get("type") == "Available"), None)
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    count = f"{status.get('availableReplicas', 0)} of {wanted} adapter replica(s) available"
    if available is None:
        return unknown(DEPLOYED, "DeploymentProgressing", count)
    if available.get("status") == "True":
        return true(DEPLOYED, "DeploymentAvailable", count)
    return false(DEPLOYED, available.get("reason") or "DeploymentUnavailable",
                 f"{count}: {available.get('message') or 'not available'}")


@dataclass(frozen=True)
class ScaleReport:
    """What the autoscaling of a source's adapter is doing, for its status."""

    engine: str
    """keda or builtin."""
    desired: int | None = None
    """Replicas wanted (builtin: by the last decision; keda: the Deployment's, as KEDA and its HPA set it)."""
    lag: int | None = None
    """The consumer group's lag behind that decision (builtin)."""
    message: str = ""
    """Why: the lag against the thresholds, or what KEDA says."""
    problem: StatusProblem | None = None
    """What keeps it from scaling (KEDA not installed, the lag unreadable...): Autoscaled is then False."""


def autoscaled(report: ScaleReport) -> Cond:
    if report.problem is not None:
        return false(AUTOSCALED, report.problem.reason, report.problem.message)
    return true(AUTOSCALED, "KEDA" if report.engine == "keda" else "Builtin", report.message or None)


@dataclass(frozen=True)
class SourceFacts:
    sink: Resolution
    deployed: Cond
    problem: StatusProblem | None = None
    """What keeps the adapter from being deployed as specified: SecretNotFound, InvalidSpec..."""
    consumers: int | None = None
    selector: str | None = None
    ce_attributes: list[dict[str, str]] | None = None
    scaling: ScaleReport | None = None
    """None: not autoscaled (spec.consumers replicas)."""
    sink_audience: str | None = None
    """The sink checks senders' tokens for this audience; the adapter presents one."""
    service_account: str | None = None
    """The ServiceAccount the adapter sends as (status.auth.serviceAccountName), while it presents tokens."""


def source_conditions(facts: SourceFacts) -> list[Cond]:
    sink = (true(SINK_PROVIDED) if facts.sink.uri is not None else
            false(SINK_PROVIDED, facts.sink.reason or "Unresolvable", facts.sink.message or ""))
    deployment = facts.deployed
    if facts.problem is not None:
        deployment = false(DEPLOYED, facts.problem.reason, facts.problem.message)
    dependents = [sink, deployment]
    if facts.scaling is not None:
        dependents.append(autoscaled(facts.scaling))
    return [summarize(dependents), *dependents]


def source_status(facts: SourceFacts, previous: Mapping[str, Any] | None, generation: int | None,
                  now: str) -> dict[str, Any]:
    report = facts.scaling
    scaling = None if report is None else {
        key: value for key, value in (("class", report.engine), ("desiredReplicas", report.desired),
                                      ("lag", report.lag), ("message", report.message)) if value is not None}
    auth = {"serviceAccountName": facts.service_account} if facts.service_account else None
    return _status(previous, source_conditions(facts), generation, now, sinkUri=facts.sink.uri,
                   consumers=facts.consumers, selector=facts.selector, ceAttributes=facts.ce_attributes,
                   autoscaling=scaling, sinkAudience=facts.sink_audience, auth=auth)


def same_status(current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Whether writing ``wanted`` (a merge patch of the status) would change ``current``."""
    current = current or {}
    return all(current.get(key) == _without_nulls(value) for key, value in wanted.items())


def _without_nulls(value: Any) -> Any:
    """What a merge patch leaves of ``value`` in an object: null members removed."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value
