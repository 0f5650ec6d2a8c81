"""The broker data plane: the loaded contract, one broker object per Broker, hot reload.

A new contract is applied in place: brokers that stay keep their queues, consumers and in-flight
deliveries; only what changed is rebuilt, so a reload drops no event.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Literal, Protocol

from eventferry.apis.meta import object_key
from eventferry.contract import model
from eventferry.contract.activation import SubscriberEndpoints, TriggerBacklog
from eventferry.dataplane.authentication import TokenVerifier
from eventferry.dataplane.authorization import SenderPolicies
from eventferry.dataplane.memory import InMemoryBroker, MemoryLimits
from eventferry.dataplane.metrics import DEFAULT_MAX_EVENT_TYPES, BrokerMetrics
from eventferry.dataplane.tokens import ServiceAccountTokens
from eventferry.dataplane.trigger_delivery import TriggerDelivery
from eventferry.delivery import Sender
from eventferry.events import CloudEvent
from eventferry.net.secrets import SecretReader

log = logging.getLogger(__name__)


class BrokerRuntime(Protocol):
    spec: model.Broker
    trigger_delivery: TriggerDelivery

    def update(self, spec: model.Broker) -> None: ...
    async def ingest(self, events: list[CloudEvent]) -> None: ...
    async def start(self) -> None: ...
    def ready(self) -> bool: ...
    async def drain(self, timeout: float) -> bool: ...
    async def stop(self) -> None: ...
    async def backlogs(self) -> dict[str, TriggerBacklog]: ...


@dataclass
class DataPlaneSettings:
    max_event_bytes: int = 4 * 1024 * 1024
    body_timeout: float = 30.0  # seconds a request body may take to arrive (408 past it)
    idle_timeout: float = 60.0  # seconds before an idle or half-sent connection is closed
    max_event_types: int = DEFAULT_MAX_EVENT_TYPES  # distinct event_type label values before "other"
    memory: MemoryLimits = field(default_factory=MemoryLimits)
    kafka_bootstrap_servers: list[str] | None = None  # for Kafka brokers whose contract names none
    per_host_connections: int = 100
    # "all" (one process), or a split for scaling Kafka brokers: "ingress" replicas only write to
    # Kafka, "dispatcher" replicas only consume and deliver. InMemory brokers need "all".
    role: Literal["all", "ingress", "dispatcher"] = "all"
    # Kafka static group membership: unique per replica and stable across its restarts (the pod name in
    # a cluster, host and port for ``eventferry run``). None: dynamic membership.
    instance_id: str | None = None
    # Strict transport encryption: events only over HTTPS; the plain port serves the probes and metrics only.
    https_only: bool = False


def replica_instance_id(port: int) -> str:
    """This replica's Kafka group instance id: its pod name in a cluster (stable across container restarts),
    else host and port (one data plane per port on a host)."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{port}"


class DataPlane:
    def __init__(self, settings: DataPlaneSettings | None = None, metrics: BrokerMetrics | None = None) -> None:
        self.settings = settings or DataPlaneSettings()
        self.metrics = metrics or BrokerMetrics(max_event_types=self.settings.max_event_types)
        self.sender = Sender(per_host=self.settings.per_host_connections)
        self.contract = model.Contract()
        self.brokers: dict[str, BrokerRuntime] = {}
        self.loaded = False
        self.endpoints: dict[str, SubscriberEndpoints] = {}
        """The autoscaled subscribers' endpoints, as the operator last said (``contract.activation``)."""
        self.verifier: TokenVerifier | None = None
        """Checks senders' tokens for Brokers that ask for them (``contract.Broker.audience``); None: no way to
        (no API server), so such a Broker answers 503 until there is one."""
        self.sender_policies: dict[str, SenderPolicies] = {}
        self._failed_starts: set[str] = set()
        self.tokens: ServiceAccountTokens | None = None
        """This replica's tokens for destinations with an audience; None: such a delivery fails (no identity)."""
        self._audiences: dict[str, str] = {}
        self.sender.authorization = self._authorization
        self.read_secret: SecretReader | None = None
        """Reads the Secrets the contract names (Kafka credentials); None: a Broker that names one fails to start."""

    def broker(self, namespace: str, name: str) -> BrokerRuntime | None:
        return self.brokers.get(object_key(namespace, name))

    async def apply(self, contract: model.Contract) -> None:
        await self.sender.start()
        self.sender.trust.set(contract.ca_certs_by_url())  # before any delivery to a new destination
        self._audiences = contract.audiences_by_url()
        wanted = {broker.key: broker for broker in contract.brokers}
        for key in list(self.brokers):
            if key not in wanted:
                self._failed_starts.discard(key)
                runtime = self.brokers.pop(key)
                await runtime.drain(timeout=5)
                await runtime.stop()
        for key, spec in wanted.items():
            current = self.brokers.get(key)
            if current is not None and _same_storage(current.spec, spec) and key not in self._failed_starts:
                current.update(spec)
                continue
            if current is not None:
                await current.stop()
            runtime = self._make(spec)
            runtime.trigger_delivery.set_endpoints(self.endpoints)
            # Known while it starts: its ingress answers 503 (retry) until it can store, never 404.
            self.brokers[key] = runtime
            # A start that fails (Kafka unreachable, its credentials Secret missing) is tried anew with the next
            # attempt to apply, not left half-started.
            self._failed_starts.add(key)
            await runtime.start()
            self._failed_starts.discard(key)
        self.sender_policies = {key: SenderPolicies(spec) for key, spec in wanted.items() if spec.audience}
        self.contract = contract
        self.loaded = True
        large = sum(len(broker.triggers) for broker in contract.brokers) >= SETTLE_FROM_TRIGGERS
        if large or gc.get_freeze_count():  # a small contract after a large one: free what was frozen
            settle_long_lived_objects(freeze=large)
        self.metrics.contract_generation.set(contract.generation)
        log.info("contract generation %d loaded: %d broker(s), %d trigger(s)", contract.generation,
                 len(contract.brokers), sum(len(b.triggers) for b in contract.brokers))

    def _make(self, spec: model.Broker) -> BrokerRuntime:
        if spec.broker_class == "Kafka":
            from eventferry.dataplane.kafka import KafkaBroker

            return KafkaBroker(spec, self.sender, self.metrics, self.settings.kafka_bootstrap_servers,
                               consume=self.settings.role != "ingress", instance_id=self.settings.instance_id,
                               read_secret=self.read_secret)
        return InMemoryBroker(spec, self.sender, self.metrics, self.settings.memory)

    def set_endpoints(self, endpoints: dict[str, SubscriberEndpoints]) -> None:
        self.endpoints = endpoints
        for runtime in self.brokers.values():
            runtime.trigger_delivery.set_endpoints(endpoints)

    async def _authorization(self, url: str) -> str | None:
        audience = self._audiences.get(url)
        if audience is None:
            return None
        if self.tokens is None:
            raise RuntimeError(f"{url} asks for a token (audience {audience}) and this data plane has no "
                               "ServiceAccount to request one with (--service-account)")
        return f"Bearer {await self.tokens.token(audience)}"

    def checks_senders(self) -> bool:
        """Whether a loaded Broker asks for senders' tokens."""
        return bool(self.sender_policies)

    def autoscaled(self) -> bool:
        return any(trigger.autoscaled is not None for broker in self.contract.brokers for trigger in broker.triggers)

    def held(self) -> set[str]:
        """Autoscaled Triggers whose events wait while their subscriber has no ready endpoint (cheap: in memory)."""
        found: set[str] = set()
        for runtime in list(self.brokers.values()):
            found |= runtime.trigger_delivery.held()
        return found

    async def backlogs(self) -> dict[str, TriggerBacklog]:
        """What this replica holds for each autoscaled Trigger."""
        found: dict[str, TriggerBacklog] = {}
        for runtime in list(self.brokers.values()):
            found.update(await runtime.backlogs())
        return found

    def ready(self) -> bool:
        return self.loaded and all(runtime.ready() for runtime in self.brokers.values())

    async def drain(self, timeout: float) -> bool:
        results = [await runtime.drain(timeout) for runtime in self.brokers.values()]
        return all(results)

    async def close(self) -> None:
        for runtime in self.brokers.values():
            await runtime.stop()
        self.brokers.clear()
        await self.sender.close()


SETTLE_FROM_TRIGGERS = 500
"""Below this many Triggers a contract makes few objects: not worth a full collection on each load."""


def settle_long_lived_objects(freeze: bool = True) -> None:
    """Takes what a contract load made (the Triggers, their filters and indices: hundreds of thousands of
    objects with thousands of Triggers) out of the garbage collector's full scans, which would otherwise walk
    them all again and again under load and stall the event loop for tens of milliseconds each time (the
    tail latency of every request then). Called after each load: the previous contract's objects are
    unfrozen and collected first, so a replaced contract is still freed."""
    gc.unfreeze()
    gc.collect()
    if freeze:
        gc.freeze()


def _same_storage(old: model.Broker, new: model.Broker) -> bool:
    return old.broker_class == new.broker_class and old.kafka == new.kafka and old.uid == new.uid
