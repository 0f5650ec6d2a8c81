"""What KEDA's ``metrics-api`` scaler reads from the operator.

``GET /backlog/triggers/<namespace>?trigger=<name>:<target>&...``: for a subscriber workload of autoscaling
class keda, ``{"replicas": sum(backlog / target), "backlog": N}`` over the named Triggers (the ScaledObject's
URL names them, ``resources/subscriber_scaling.scaled_object``), from the data plane's backlog reports
(the ConfigMap every replica writes), so any operator replica answers without state of its own.

``GET /backlog/rocketmqsources/<namespace>/<name>``: a RocketMQSource's backlog.

KEDA has no RocketMQ scaler; its ``metrics-api`` scaler reads a number from a JSON endpoint, and this
is that endpoint: ``{"backlog": N, "queues": Q}``, read from the source's ``spec.nameServers`` (the
same reader as the built-in engine). Every operator replica answers it, leader or standby, since the
Service in front of them picks any: the source is read from the API server on each request, so only
name servers that a stored source names are ever contacted. Readings are kept for a second, so that
KEDA's polls and its metrics server's reads cost one read.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import ValidationError

from eventferry.apis.meta import API_VERSION, PLURALS, object_key
from eventferry.apis.rocketmqsource import RocketMQSource
from eventferry.contract.activation import BACKLOG_CONFIGMAP, TriggerBacklog, backlogs
from eventferry.controller.kube import ApiError, resource_path
from eventferry.controller.rocketmq_backlog import BacklogReader, RemotingError, credentials_of
from eventferry.controller.secret_refs import read_secret_refs
from eventferry.resources.adapter import secret_refs
from eventferry.resources.names import SYSTEM_NAMESPACE
from eventferry.resources.scaling import Lag
from eventferry.resources.subscriber_scaling import replicas_metric

if TYPE_CHECKING:
    from eventferry.controller.kube import ApiClient

PATH = "/backlog/rocketmqsources/{namespace}/{name}"
TRIGGERS_PATH = "/backlog/triggers/{namespace}"
FRESH = 1.0
REPORTS_FRESH = 0.25
"""The backlog reports are read again after this: KEDA must not see a Trigger idle that the operator just woke."""


def backlog_path(namespace: str, name: str) -> str:
    return PATH.format(namespace=namespace, name=name)


class BacklogEndpoint:
    def __init__(self, api: ApiClient, system_namespace: str = SYSTEM_NAMESPACE,
                 stale_after: float = 30.0) -> None:
        self.api = api
        self.system_namespace = system_namespace
        self.stale_after = stale_after
        self._readings: dict[tuple[str, str], tuple[float, Lag]] = {}
        self._reports: tuple[float, dict[str, TriggerBacklog]] | None = None

    def routes(self) -> list[web.RouteDef]:
        return [web.get(PATH, self.handle), web.get(TRIGGERS_PATH, self.handle_triggers)]

    async def handle_triggers(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        triggers = []
        for item in request.query.getall("trigger", []):
            name, _, target = item.rpartition(":")
            if not name or not target.isdigit() or int(target) < 1:
                return web.json_response({"error": f"trigger={item!r}: expected <name>:<target>"}, status=400)
            triggers.append((object_key(namespace, name), int(target)))
        if not triggers:
            return web.json_response({"error": "name the Triggers: ?trigger=<name>:<target>"}, status=400)
        if self._reports is None or time.monotonic() - self._reports[0] >= REPORTS_FRESH:
            try:
                config_map = await self.api.get(resource_path("v1", "configmaps", self.system_namespace,
                                                              BACKLOG_CONFIGMAP))
            except ApiError as error:
                return web.json_response({"error": f"reading the data plane's backlog reports: {error}"}, status=502)
            reports = backlogs((config_map or {}).get("data"), datetime.now(UTC), self.stale_after)
            self._reports = (time.monotonic(), reports)
        replicas, total = replicas_metric(self._reports[1], triggers)
        return web.json_response({"replicas": replicas, "backlog": total})

    async def handle(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        key = (namespace, name)
        kept = self._readings.get(key)
        if kept is not None and time.monotonic() - kept[0] < FRESH:
            return _answer(kept[1])
        try:
            body = await self.api.get(resource_path(API_VERSION, PLURALS["RocketMQSource"], namespace, name))
        except ApiError as error:
            return web.json_response({"error": f"reading the source: {error}"}, status=502)
        if body is None:
            return web.json_response({"error": f"RocketMQSource {namespace}/{name} does not exist"}, status=404)
        try:
            source = RocketMQSource.model_validate({k: v for k, v in body.items() if k != "status"})
        except ValidationError as error:
            return web.json_response({"error": f"invalid RocketMQSource: {error.errors()[0]['msg']}"}, status=409)
        if source.spec.name_servers is None:
            return web.json_response({"error": "spec.nameServers is not set"}, status=409)
        problem, secrets = await read_secret_refs(self.api, namespace, secret_refs(source))
        if problem is not None:
            return web.json_response({"error": f"reading the source's keys: {problem.message}"}, status=409)
        reader = BacklogReader(source.spec.name_servers, source.spec.topic, source.spec.consumer_group,
                               source.spec.namespace, credentials_of(source.spec, secrets))
        try:
            lag = await reader.read()
        except (RemotingError, OSError, TimeoutError, ValueError) as error:
            return web.json_response({"error": f"reading the backlog: {error}"}, status=502)
        finally:
            await reader.close()
        self._readings[key] = (time.monotonic(), lag)
        if len(self._readings) > 10_000:  # bounded: forget the oldest half
            for stale in sorted(self._readings, key=lambda k: self._readings[k][0])[:5_000]:
                del self._readings[stale]
        return _answer(lag)


def _answer(lag: Lag) -> web.Response:
    return web.json_response({"backlog": lag.total, "queues": lag.partitions})
