"""Brokers and Triggers: the contract ConfigMap, the Kafka topics, and the status of each object.

Level-triggered, because the contract is one document for the whole cluster: a change of a Broker,
a Trigger, a Service, a ConfigMap or a data plane report pokes the loop; after a short quiet period
(debounce) one pass compiles ALL Brokers and Triggers with ``compile_contract``, writes the
ConfigMap when the routing changed (as a new generation), and patches the status of the objects
whose status changed. A burst of 1,000 new Triggers is therefore a few passes and a few ConfigMap
writes, not 1,000 of each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from eventferry.apis.broker import KAFKA, Broker, broker_audience
from eventferry.apis.delivery import DeliverySpec
from eventferry.apis.duck import Destination
from eventferry.apis.eventpolicy import EventPolicy
from eventferry.apis.meta import DEFAULT_NAMESPACE, Resource
from eventferry.apis.trigger import Trigger
from eventferry.contract.compile import Compiled, broker_target, compile_contract
from eventferry.contract.model import Contract, KafkaSettings
from eventferry.contract.resolve import Resolver, Unresolvable
from eventferry.contract.senders import ResolvedPolicy, SenderAuthorization, applying
from eventferry.controller import topics
from eventferry.controller.kube import ApiError, resource_path
from eventferry.controller.status_writer import StatusWriter
from eventferry.controller.timing import wait_event
from eventferry.controller.views import Key, deleting, kafka_config
from eventferry.resources.conditions import Cond, false, now_rfc3339, true, unknown
from eventferry.resources.contract import (
    ContractTooLarge,
    contract_config_map,
    contract_from_config_map,
    same_routing,
    stored_bytes,
)
from eventferry.resources.eventpolicy import ResolvedSenders, eventpolicy_status, resolve_senders
from eventferry.resources.names import (
    CONTRACT_CONFIGMAP,
    DATAPLANE_STATUS_CONFIGMAP,
    PART_OF,
    WATCHED,
    broker_address,
)
from eventferry.resources.readiness import BROKER, TRIGGER, ContractHistory, gate, loaded_generation
from eventferry.resources.status import (
    INGRESS_READY,
    TOPIC_READY,
    BrokerFacts,
    Resolution,
    StatusProblem,
    TriggerFacts,
    broker_ready,
    broker_status,
    event_policies_condition,
    trigger_status,
)

if TYPE_CHECKING:
    from eventferry.controller.context import Context

log = logging.getLogger(__name__)

RESYNC_SECONDS = 300.0  # statuses are compared with the cluster again, in case someone else wrote them
M = TypeVar("M", bound=Resource)


@dataclass(frozen=True)
class TopicState:
    settings: KafkaSettings
    condition: Cond
    retry_at: float = math.inf


def resolve(resolver: Resolver, destination: Destination, namespace: str) -> Resolution:
    try:
        return Resolution(resolver.resolve(destination, namespace))
    except Unresolvable as error:
        return Resolution.failed(error.reason, str(error))


def parse(model: type[M], bodies: list[dict[str, Any]]) -> tuple[dict[Key, M], dict[Key, str]]:
    """Models of the bodies by (namespace, name), and why the others do not validate."""
    models: dict[Key, M] = {}
    invalid: dict[Key, str] = {}
    for body in bodies:
        key = (body["metadata"].get("namespace") or DEFAULT_NAMESPACE, body["metadata"]["name"])
        try:
            models[key] = model.model_validate({k: v for k, v in body.items() if k != "status"})
        except ValidationError as error:
            first = error.errors()[0]
            invalid[key] = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return models, invalid


def contract_entries(contract: Contract) -> dict[tuple[str, str, str], Any]:
    entries: dict[tuple[str, str, str], Any] = {}
    for broker in contract.brokers:
        entries[(BROKER, broker.namespace, broker.name)] = broker.model_copy(update={"triggers": []})
        for trigger in broker.triggers:
            entries[(TRIGGER, trigger.namespace, trigger.name)] = trigger
    return entries


@dataclass
class _Pass:
    """What one pass reads and compiles once; every step of it works from this."""

    resolver: Resolver
    broker_bodies: list[dict[str, Any]]
    trigger_bodies: list[dict[str, Any]]
    brokers: dict[Key, Broker]
    invalid_brokers: dict[Key, str]
    triggers: dict[Key, Trigger]
    invalid_triggers: dict[Key, str]
    compiled: Compiled
    entries: Mapping[tuple[str, str, str], Any]
    problems: dict[tuple[str, str, str], StatusProblem]
    stamp: str
    policy_bodies: list[dict[str, Any]] = field(default_factory=list)
    senders: dict[Key, ResolvedSenders] = field(default_factory=dict)
    """Each valid EventPolicy's senders, resolved."""
    authorization: SenderAuthorization = field(default_factory=SenderAuthorization)
    ready_of: dict[Key, Mapping[str, Any]] = field(default_factory=dict)


class ContractReconciler:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.history = ContractHistory()
        self.contract: Contract | None = None
        """The contract in the ConfigMap, as last written or read."""
        self.kafka: dict[Key, KafkaSettings] = {}
        """Last known Kafka settings of each Broker, kept after it left the contract (for its deletion)."""
        self.topics: dict[Key, TopicState] = {}
        self.loaded: int | None = None
        self.indexed = asyncio.Event()
        """Set by the first kopf handler: kopf runs none before every index is listed."""
        self._too_large: ContractTooLarge | None = None
        self._fingerprints: dict[tuple[str, Any], Any] = {}
        self.statuses = StatusWriter(ctx)
        self._topic_tasks: set[Key] = set()
        self._wake = asyncio.Event()
        self._passed = asyncio.Condition()

    # --- signals ----------------------------------------------------------------------------------------

    def poke(self) -> None:
        self._wake.set()

    def observe(self, kind: str, key: Any, fingerprint: Any) -> None:
        """A watched object changed; ``fingerprint`` None means deleted. Pokes only on relevant changes."""
        self.indexed.set()
        slot = (kind, key)
        if fingerprint is None:
            if self._fingerprints.pop(slot, None) is not None:
                self.poke()
        elif self._fingerprints.get(slot) != fingerprint:
            self._fingerprints[slot] = fingerprint
            self.poke()

    # --- the loop ---------------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """At startup: the data plane status ConfigMap exists, and the contract written before is known."""
        namespace = self.config.system_namespace
        body = {"apiVersion": "v1", "kind": "ConfigMap", "data": {},
                "metadata": {"name": DATAPLANE_STATUS_CONFIGMAP, "namespace": namespace,
                             "labels": {**PART_OF, **WATCHED}}}
        try:
            await self.ctx.api.create(resource_path("v1", "configmaps", namespace), body)
        except ApiError as error:
            if error.status == 404:
                raise RuntimeError(f"the system namespace {namespace!r} does not exist: create it, or name another "
                                   "with --system-namespace") from None
            if error.status != 409:
                raise
            # Made before (by an earlier version, say): labelled, as the watch selects the operator's ConfigMaps.
            await self.ctx.api.merge_patch(resource_path("v1", "configmaps", namespace, DATAPLANE_STATUS_CONFIGMAP),
                                           {"metadata": {"labels": WATCHED}})
        written = await self.ctx.api.get(resource_path("v1", "configmaps", namespace, CONTRACT_CONFIGMAP))
        if written is not None:
            try:
                self._remember(contract_from_config_map(written))
            except ValueError as error:
                log.warning("the contract ConfigMap holds no valid contract; it will be rewritten: %s", error)

    async def run(self) -> None:
        await self.indexed.wait()
        tick = self.config.report_stale_after / 2
        resync_at = time.monotonic() + RESYNC_SECONDS
        while True:
            # Without changes, a pass every `tick` notices data plane replicas that stopped reporting.
            await wait_event(self._wake, tick)
            await self._debounce()
            if time.monotonic() >= resync_at:
                self.statuses.written.clear()
                resync_at = time.monotonic() + RESYNC_SECONDS
            try:
                with self.ctx.metrics.reconcile("Contract"):
                    await self.reconcile()
            except Exception:
                log.exception("contract pass failed; trying again in %.0fs", self.config.retry_interval)
                asyncio.get_running_loop().call_later(self.config.retry_interval, self.poke)
            self.ctx.health.synced = True
            async with self._passed:
                self._passed.notify_all()

    async def _debounce(self) -> None:
        """Returns once no poke came for ``debounce`` seconds, or ``debounce_max`` after the first."""
        deadline = time.monotonic() + self.config.debounce_max
        while True:
            self._wake.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if not await wait_event(self._wake, min(self.config.debounce, remaining)):
                return

    # --- one pass ---------------------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """One pass: read and compile, publish the contract, learn what the data plane loaded, then
        build and write every Broker's and Trigger's status."""
        run = self._read(await self._label_broker_configs())
        if await self._write(run.compiled.contract):
            await self._await_loaded(self.config.load_wait)
        self._ensure_topics(run.compiled.contract)
        self._learn_loaded()
        writes = [(body, self._broker_status(run, body)) for body in run.broker_bodies]
        writes += [(body, self._trigger_status(run, body)) for body in run.trigger_bodies]
        writes += [(body, self._eventpolicy_status(run, body)) for body in run.policy_bodies]
        self.statuses.forget_all_but({body["metadata"].get("uid") for body, _ in writes})
        limit = asyncio.Semaphore(self.config.status_concurrency)
        await asyncio.gather(*(self.statuses.write(body, status, limit) for body, status in writes))

    @property
    def authenticating(self) -> bool:
        return self.config.authentication == "required"

    async def _label_broker_configs(self) -> dict[Key, dict[str, str]]:
        """The ConfigMaps Brokers' spec.config names that the watch does not see yet: read once, labelled so that
        the watch sees them from now on (it selects by label, not every ConfigMap of the cluster), and returned
        for this pass."""
        known = self.ctx.views.config_maps()
        found: dict[Key, dict[str, str]] = {}
        for body in self.ctx.views.brokers():
            config = (body.get("spec") or {}).get("config") or {}
            if config.get("kind") != "ConfigMap" or not config.get("name"):
                continue
            key = (config.get("namespace") or _key(body)[0], str(config["name"]))
            if key in known or key in found:
                continue
            path = resource_path("v1", "configmaps", *key)
            current = await self.ctx.api.get(path)
            if current is None:
                continue  # compile_contract reports it missing; its creation is noticed at the next pass
            found[key] = kafka_config(current.get("data"))
            try:
                await self.ctx.api.merge_patch(path, {"metadata": {"labels": WATCHED}})
            except ApiError as error:  # read each pass instead: slower to notice a change, still correct
                log.warning("cannot label ConfigMap %s/%s as a Broker's config (%s): it is read at each pass",
                            *key, error)
        return found

    def _read(self, extra_config_maps: Mapping[Key, dict[str, str]] | None = None) -> _Pass:
        views = self.ctx.views
        resolver = views.resolver(broker_audiences=self.authenticating)
        broker_bodies = [b for b in views.brokers() if not deleting(b)]
        trigger_bodies = [t for t in views.triggers() if not deleting(t)]
        policy_bodies = [p for p in views.eventpolicies() if not deleting(p)]
        brokers, invalid_brokers = parse(Broker, broker_bodies)
        triggers, invalid_triggers = parse(Trigger, trigger_bodies)
        policies, _ = parse(EventPolicy, policy_bodies)  # the CRD's rules let no invalid one in
        senders = {key: resolve_senders(policy, self.config.adapter.service_account)
                   for key, policy in policies.items()}
        authorization = SenderAuthorization(self.config.authorization_mode, tuple(
            ResolvedPolicy(policies[key], resolved.subjects) for key, resolved in sorted(senders.items())))
        compiled = compile_contract(brokers.values(), triggers.values(), resolver, generation=0,
                                    config_maps={**views.config_maps(), **(extra_config_maps or {})},
                                    default_kafka_bootstrap=list(self.config.default_kafka_bootstrap) or None,
                                    senders=authorization if self.authenticating else None)
        problems = {(p.kind, p.namespace, p.name): StatusProblem(p.reason, p.message) for p in compiled.problems}
        return _Pass(resolver, broker_bodies, trigger_bodies, brokers, invalid_brokers, triggers, invalid_triggers,
                     compiled, contract_entries(compiled.contract), problems, now_rfc3339(), policy_bodies, senders,
                     authorization)

    def _learn_loaded(self) -> None:
        self.loaded = loaded_generation(self.ctx.views.reports(), datetime.now(UTC), self.config.report_stale_after)
        self.ctx.metrics.loaded_generation.set(-1 if self.loaded is None else self.loaded)

    def _gate(self, run: _Pass, kind: str, key: Key, condition: str) -> Cond:
        entry = run.entries.get((kind, *key))
        required = self.history.first_generation(kind, *key) if entry is not None else None
        if required is not None and self.history.entry(kind, *key) != entry:
            required = None  # the current spec is compiled but not written yet
        if required is None and self._too_large is not None:
            return false(condition, "ContractTooLarge", str(self._too_large))
        return gate(required, self.loaded, condition)

    def _broker_status(self, run: _Pass, body: dict[str, Any]) -> dict[str, Any]:
        key = _key(body)
        status = broker_status(self._broker_facts(run, key), self.statuses.previous(body),
                               body["metadata"].get("generation"), run.stamp)
        run.ready_of[key] = status["conditions"][0]  # what this pass's Trigger statuses say of their Broker
        return status

    def _broker_facts(self, run: _Pass, key: Key) -> BrokerFacts:
        broker = run.brokers.get(key)
        if broker is None:
            return BrokerFacts(address=None, problem=StatusProblem("InvalidSpec",
                                                                   run.invalid_brokers.get(key) or "invalid Broker"))
        dead_letter = self._dead_letter(broker.spec.delivery, run.resolver, key[0])
        problem = run.problems.get(("Broker", *key))
        if problem is not None:
            return BrokerFacts(address=None, problem=problem, dead_letter=dead_letter)
        topic = self.topics.get(key)
        topic_condition = None
        if broker.broker_class == KAFKA:
            topic_condition = topic.condition if topic else unknown(TOPIC_READY, "TopicNotCreated", "pending")
        address = broker_address(self.config.ingress_service, self.config.system_namespace, *key)
        encryption = self.config.transport_encryption
        https = broker_address(self.config.ingress_service, self.config.system_namespace, *key, scheme="https") \
            if encryption != "disabled" else None
        policies = tuple(p.policy.metadata.name for p in applying(broker_target(broker), run.authorization))
        return BrokerFacts(address=address, https_address=https, https_only=encryption == "strict",
                           ca_certs=self.config.ingress_ca_certs if https else None,
                           ingress=self._gate(run, BROKER, key, INGRESS_READY),
                           dead_letter=dead_letter, topic=topic_condition,
                           audience=broker_audience(*key) if self.authenticating else None, policies=policies,
                           senders=event_policies_condition(self.authenticating, self.config.authorization_mode,
                                                            policies))

    def _eventpolicy_status(self, run: _Pass, body: dict[str, Any]) -> dict[str, Any]:
        resolved = run.senders.get(_key(body), ResolvedSenders((), ("the EventPolicy does not validate",)))
        return eventpolicy_status(resolved, self.authenticating, self.statuses.previous(body),
                                  body["metadata"].get("generation"), run.stamp)

    def _trigger_status(self, run: _Pass, body: dict[str, Any]) -> dict[str, Any]:
        return trigger_status(self._trigger_facts(run, body), self.statuses.previous(body),
                              body["metadata"].get("generation"), run.stamp)

    def _trigger_facts(self, run: _Pass, body: dict[str, Any]) -> TriggerFacts:
        key = _key(body)
        namespace = key[0]
        broker_name = str((body.get("spec") or {}).get("broker") or "")
        broker = broker_ready(run.ready_of.get((namespace, broker_name)), namespace, broker_name)
        trigger = run.triggers.get(key)
        if trigger is None:
            why = run.invalid_triggers.get(key) or "invalid Trigger"
            return TriggerFacts(broker, Resolution.failed("InvalidSpec", why),
                                problem=StatusProblem("InvalidSpec", why))
        owner = run.brokers.get((namespace, broker_name))
        # As compile_contract: a Trigger's delivery fully overrides its Broker's.
        delivery = trigger.spec.delivery or (owner.spec.delivery if owner else None)
        return TriggerFacts(
            broker=broker,
            subscriber=resolve(run.resolver, trigger.spec.subscriber, namespace),
            dead_letter=self._dead_letter(delivery, run.resolver, namespace),
            problem=run.problems.get(("Trigger", *key)),
            loaded=self._gate(run, TRIGGER, key, "Loaded"),
            scale=self.ctx.subscribers.report(*key) if trigger.scaling.enabled else None,
        )

    @staticmethod
    def _dead_letter(delivery: DeliverySpec | None, resolver: Resolver, namespace: str) -> Resolution | None:
        if delivery is None or delivery.dead_letter_sink is None:
            return None
        return resolve(resolver, delivery.dead_letter_sink, namespace)

    # --- the ConfigMap --------------------------------------------------------------------------------------

    async def _await_loaded(self, seconds: float) -> None:
        """Gives the data plane a moment to load the contract just written, so that the statuses written
        next are final (Ready) rather than 'waiting', which would cost each object a second write."""
        assert self.contract is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            loaded = loaded_generation(self.ctx.views.reports(), datetime.now(UTC), self.config.report_stale_after)
            if loaded is None or loaded >= self.contract.generation:
                return
            await asyncio.sleep(0.05)

    async def _write(self, compiled: Contract) -> bool:
        """Writes the contract if its routing changed; whether a new generation was written."""
        if self.contract is not None and same_routing(compiled, self.contract):
            self._too_large = None
            return False
        # Above every generation a replica reported: the ConfigMap may have been deleted and rewritten.
        reported = max((r.generation for r in self.ctx.views.reports().values()), default=0)
        generation = max(self.contract.generation if self.contract else 0, reported) + 1
        contract = compiled.model_copy(update={"generation": generation})
        try:
            body = contract_config_map(contract, self.config.system_namespace)
        except ContractTooLarge as error:
            if self._too_large is None or self._too_large.size != error.size:
                log.error("%s", error)
            self._too_large = error
            self.ctx.metrics.contract_bytes.set(error.size)
            return False
        self._too_large = None
        await self.ctx.api.apply(resource_path("v1", "configmaps", self.config.system_namespace, CONTRACT_CONFIGMAP),
                                 body)
        self._remember(contract)
        size = stored_bytes(body)
        self.ctx.metrics.contract_writes.inc()
        self.ctx.metrics.contract_bytes.set(size)
        log.info("contract generation %d written: %d broker(s), %d trigger(s), %d bytes", generation,
                 len(contract.brokers), sum(len(b.triggers) for b in contract.brokers), size)
        return True

    def _remember(self, contract: Contract) -> None:
        self.contract = contract
        self.history.record(contract)
        self.ctx.metrics.contract_generation.set(contract.generation)
        for broker in contract.brokers:
            if broker.kafka is not None:
                self.kafka[(broker.namespace, broker.name)] = broker.kafka

    # --- Kafka topics -----------------------------------------------------------------------------------------

    def _ensure_topics(self, contract: Contract) -> None:
        wanted = {(b.namespace, b.name): b.kafka for b in contract.brokers if b.kafka is not None}
        for key in [k for k in self.topics if k not in wanted]:
            del self.topics[key]
        for key, settings in wanted.items():
            state = self.topics.get(key)
            due = (state is None or state.settings != settings
                   or (not state.condition.is_true and time.monotonic() >= state.retry_at))
            if not due or key in self._topic_tasks:
                continue
            if state is None or state.settings != settings:
                pending = unknown(TOPIC_READY, "TopicNotCreated", f"creating topic {settings.topic}")
                self.topics[key] = TopicState(settings, pending)
            self._topic_tasks.add(key)
            self.ctx.spawn(self._create_topic(key, settings), name=f"topic {settings.topic}")

    async def _create_topic(self, key: Key, settings: KafkaSettings) -> None:
        retry_at = math.inf
        try:
            async with asyncio.timeout(60):
                created = await topics.ensure_topic(settings, self.ctx.read_secret)
            condition = true(TOPIC_READY, "TopicCreated" if created else "TopicExists", f"topic {settings.topic}")
        except Exception as error:  # any failure (unreachable, refused, timed out) is the condition's message
            retry_at = time.monotonic() + self.config.retry_interval
            condition = false(TOPIC_READY, "TopicCreationFailed",
                              f"topic {settings.topic} on {','.join(settings.bootstrap_servers)}: "
                              f"{type(error).__name__}: {error}")
            asyncio.get_running_loop().call_later(self.config.retry_interval, self.poke)
        finally:
            self._topic_tasks.discard(key)
        state = self.topics.get(key)
        if state is not None and state.settings == settings:
            self.topics[key] = TopicState(settings, condition, retry_at)
        self.poke()

    def kafka_settings(self, body: Mapping[str, Any]) -> KafkaSettings | None:
        """The Kafka settings of a Broker: as last written, else compiled from its body now."""
        key = _key(body)
        if key in self.kafka:
            return self.kafka[key]
        brokers, _ = parse(Broker, [dict(body)])
        compiled = compile_contract(brokers.values(), [], self.ctx.views.resolver(), generation=0,
                                    config_maps=self.ctx.views.config_maps(),
                                    default_kafka_bootstrap=list(self.config.default_kafka_bootstrap) or None)
        return next((b.kafka for b in compiled.contract.brokers if b.kafka is not None), None)

    async def wait_unloaded(self, namespace: str, name: str, timeout: float) -> bool:
        """Waits until the data plane has loaded a contract without the Broker (so that it will not write to
        its topic again); False after ``timeout`` seconds."""
        self.poke()
        deadline = time.monotonic() + timeout
        async with self._passed:
            while not self._unloaded((namespace, name)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._passed.wait()
        return True

    def _unloaded(self, key: Key) -> bool:
        if self.contract is not None and any((b.namespace, b.name) == key for b in self.contract.brokers):
            return False
        removed = self.history.removed.get(key)
        return removed is None or self.loaded is None or self.loaded >= removed


def _key(body: Mapping[str, Any]) -> Key:
    metadata = body["metadata"]
    return (metadata.get("namespace") or DEFAULT_NAMESPACE, metadata["name"])
