"""``GET /backlog/rocketmqsources/<namespace>/<name>``: a RocketMQSource's backlog, for KEDA.

KEDA has no RocketMQ scaler; its ``metrics-api`` scaler reads a number from a JSON endpoint, and this
is that endpoint: ``{"backlog": N, "queues": Q}``, read from the source's ``spec.nameServers`` (the
same reader as the built-in engine). Every operator replica answers it, leader or standby, since the
Service in front of them picks any: the source is read from the API server on each request, so only
name servers that a stored source names are ever contacted. Readings are kept for a second, so that
KEDA's polls and its metrics server's reads cost one read.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import ValidationError

from eventferry.apis.meta import API_VERSION, PLURALS
from eventferry.apis.rocketmqsource import RocketMQSource
from eventferry.controller.kube import ApiError, resource_path
from eventferry.controller.rocketmq_backlog import BacklogReader, RemotingError
from eventferry.resources.scaling import Lag

if TYPE_CHECKING:
    from eventferry.controller.kube import ApiClient

PATH = "/backlog/rocketmqsources/{namespace}/{name}"
FRESH = 1.0


def backlog_path(namespace: str, name: str) -> str:
    return PATH.format(namespace=namespace, name=name)


class BacklogEndpoint:
    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self._readings: dict[tuple[str, str], tuple[float, Lag]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.get(PATH, self.handle)]

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
        reader = BacklogReader(source.spec.name_servers, source.spec.topic, source.spec.consumer_group,
                               source.spec.namespace)
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
