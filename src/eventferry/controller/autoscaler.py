"""The built-in autoscaler: per source of class ``builtin``, a task that reads the consumer group's
backlog every polling interval and sets the adapter Deployment's replicas through its scale subresource.

It needs no KEDA and no metrics pipeline, and the backlog is read from the queue itself (a Kafka
group's lag from Kafka, ``controller/lag.py``; a RocketMQ group's from its name servers and brokers,
``controller/rocketmq_backlog.py``), so a source at zero replicas wakes on its backlog. Each change
of replicas is a ``Scaled`` Event on the source and a counted decision; the lag and the replicas
wanted are gauges and go to the source's status (written by the source reconciler, which asks ``report``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from eventferry.apis.autoscaling import SourceScaling
from eventferry.apis.kafkasource import KafkaSource
from eventferry.controller.kube import resource_path
from eventferry.controller.lag import LagReader
from eventferry.controller.rocketmq_backlog import BacklogReader, credentials_of
from eventferry.kafka.connection import SecretLookup, client_options, security
from eventferry.resources.adapter import Source, deployment_name
from eventferry.resources.scaling import Lag, Recommendations, decide
from eventferry.resources.status import ScaleReport, StatusProblem

if TYPE_CHECKING:
    from eventferry.controller.context import Context

log = logging.getLogger(__name__)

LAG_REFRESH = 30.0
"""Seconds between status refreshes while only the lag changes (the replicas wanted refresh at once)."""


class Backlog(Protocol):
    async def read(self) -> Lag: ...

    async def close(self) -> None: ...


def backlog_reader(source: Source, secrets: SecretLookup) -> tuple[Backlog, tuple[Any, ...]]:
    """How to read the source's backlog, and what (when it changes) needs a new reader."""
    identity: tuple[Any, ...]
    if isinstance(source, KafkaSource):
        sasl, tls = security(source.spec.net, secrets)
        group = source.effective_consumer_group()
        identity = (tuple(source.spec.bootstrap_servers), tuple(source.spec.topics), group,
                    source.spec.initial_offset, sasl, tls)
        servers = source.spec.bootstrap_servers
        return LagReader(lambda: client_options(servers, sasl, tls), group, source.spec.topics,
                         source.spec.initial_offset), identity
    spec = source.spec
    if spec.name_servers is None:
        raise ValueError("spec.nameServers is not set: the backlog of a RocketMQ consumer group is read from "
                         "its name servers")
    credentials = credentials_of(spec, secrets)
    identity = (spec.name_servers, spec.topic, spec.consumer_group, spec.namespace, credentials)
    return BacklogReader(spec.name_servers, spec.topic, spec.consumer_group, spec.namespace, credentials), identity


def group_of(source: Source) -> str:
    return source.effective_consumer_group() if isinstance(source, KafkaSource) else source.spec.consumer_group


@dataclass
class _Poller:
    source: Source
    scaling: SourceScaling
    body: dict[str, Any]
    reader: Backlog
    identity: tuple[Any, ...]
    """What, when it changes, needs a new reader: the connection, the group and the topics."""
    history: Recommendations = field(default_factory=Recommendations)
    report: ScaleReport | None = None
    reported_at: float = 0.0
    task: asyncio.Task[None] | None = None


class BuiltinAutoscaler:
    def __init__(self, ctx: Context, on_report: Callable[[dict[str, Any]], Any]) -> None:
        self.ctx = ctx
        self.on_report = on_report
        """Called with the source's body when its report changed: the source reconciler writes the status."""
        self._pollers: dict[str, _Poller] = {}

    def report(self, uid: str) -> ScaleReport | None:
        poller = self._pollers.get(uid)
        if poller is None:
            return None
        return poller.report or ScaleReport("builtin", message="reading the consumer group's lag")

    def ensure(self, source: Source, body: dict[str, Any], secrets: SecretLookup) -> StatusProblem | None:
        """Starts (or keeps, with the new settings) the poller of ``source``; a problem when it cannot."""
        uid = str(source.metadata.uid)
        try:
            reader, identity = backlog_reader(source, secrets)
        except ValueError as error:
            self.stop(uid)
            return StatusProblem("LagUnreadable", f"the built-in autoscaler cannot read the backlog: {error}")
        poller = self._pollers.get(uid)
        if poller is not None and poller.identity == identity:
            poller.source, poller.scaling, poller.body = source, source.scaling, body
            return None
        self.stop(uid)
        poller = _Poller(source, source.scaling, body, reader, identity)
        poller.task = asyncio.create_task(self._poll(poller), name=f"autoscaler {source.key}")
        self._pollers[uid] = poller
        log.info("built-in autoscaling of %s %s started", source.kind, source.key)
        return None

    def stop(self, uid: str) -> None:
        poller = self._pollers.pop(uid, None)
        if poller is None:
            return
        if poller.task is not None:
            poller.task.cancel()
        self.ctx.spawn(poller.reader.close(), name=f"closing the backlog reader of {poller.source.key}")
        self.ctx.metrics.forget_source(poller.source.kind, poller.source.namespace, poller.source.metadata.name)

    async def close(self) -> None:
        for uid in list(self._pollers):
            poller = self._pollers.pop(uid)
            if poller.task is not None:
                poller.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await poller.task
            await poller.reader.close()

    # --- one source ------------------------------------------------------------------------------------

    async def _poll(self, poller: _Poller) -> None:
        source = poller.source
        scale_path = resource_path("apps/v1", "deployments", source.namespace, deployment_name(source), "scale")
        started = False
        while True:
            try:
                await self._tick(poller, scale_path, started)
                started = True
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("built-in autoscaler of %s: %s", poller.source.key, error)
                self._publish(poller, ScaleReport(
                    "builtin", message="", problem=StatusProblem(
                        "LagUnreadable", f"reading the backlog of consumer group {group_of(source)} "
                        f"failed: {error or type(error).__name__}; replicas are left as they are and the read is "
                        f"tried again every {poller.scaling.polling_interval}s")))
            await asyncio.sleep(poller.scaling.polling_interval)

    async def _tick(self, poller: _Poller, scale_path: str, started: bool) -> None:
        lag = await poller.reader.read()
        scale = await self.ctx.api.get(scale_path)
        if scale is None:
            return  # the Deployment is not created yet: the source reconciler creates it
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        now = time.monotonic()
        if not started:
            # What runs now counts as a recent recommendation: a restarted operator does not scale a
            # busy adapter down before a whole cooldown period has seen the lag low.
            poller.history.add(now, current, poller.scaling.cooldown_period)
        decision = decide(poller.scaling, lag, current, poller.history, now)
        source = poller.source
        self.ctx.metrics.source_scaling(source.kind, source.namespace, source.metadata.name, lag.total,
                                        decision.replicas)
        if decision.replicas != current:
            await self.ctx.api.merge_patch(scale_path, {"spec": {"replicas": decision.replicas}})
            direction = "up" if decision.replicas > current else "down"
            self.ctx.metrics.scaling_decisions.labels(source.kind, direction).inc()
            message = f"adapter scaled from {current} to {decision.replicas}: {decision.reason}"
            log.info("%s %s: %s", source.kind, source.key, message)
            await self.ctx.events.post(poller.body, "Normal", "Scaled", message)
        self._publish(poller, ScaleReport("builtin", decision.replicas, lag.total, decision.reason))

    def _publish(self, poller: _Poller, report: ScaleReport) -> None:
        previous, now = poller.report, time.monotonic()
        poller.report = report
        changed = (previous is None or (previous.desired, previous.problem) != (report.desired, report.problem)
                   or (previous.lag != report.lag and now - poller.reported_at >= LAG_REFRESH))
        if changed:
            poller.reported_at = now
            self.on_report(poller.body)
