"""The data plane's half of subscriber autoscaling (``eventferry.contract.activation``): it follows what the
operator says of the autoscaled subscribers' endpoints, and reports the autoscaled Triggers' backlogs.

The backlog reaches the operator within ``poll`` seconds (0.1) when a held Trigger's first event arrives, so
that a subscriber at zero is woken at once; otherwise within ``interval`` (1 s) of a change, plus the API
round trip (a merge patch, then the operator's watch: tens of milliseconds on a quiet API server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from eventferry.contract.activation import (
    BACKLOG_CONFIGMAP,
    ENDPOINTS_CONFIGMAP,
    BacklogReport,
    TriggerBacklog,
    endpoints_from_data,
)
from eventferry.dataplane.contract_configmap import ConfigMapClient, FollowedConfigMap
from eventferry.dataplane.dataplane import DataPlane
from eventferry.net.kubeconn import ApiError
from eventferry.resources.names import PART_OF, WATCHED

log = logging.getLogger(__name__)


class SubscriberEndpointsFollower(FollowedConfigMap):
    """Applies the operator's word on the autoscaled subscribers' endpoints to every Broker's Triggers."""

    def __init__(self, client: ConfigMapClient, dataplane: DataPlane, namespace: str,
                 name: str = ENDPOINTS_CONFIGMAP, **kwargs: Any) -> None:
        super().__init__(client, namespace, name, **kwargs)
        self.dataplane = dataplane

    async def run(self, stop: asyncio.Event) -> None:
        await self._follow(stop)

    def _offer(self, config_map: dict[str, Any]) -> None:
        try:
            endpoints = endpoints_from_data(config_map.get("data"))
        except ValueError as error:
            log.error("ConfigMap %s/%s is invalid, keeping what was loaded: %s", self.namespace, self.name, error)
            return
        if endpoints != self.dataplane.endpoints:
            self.dataplane.set_endpoints(endpoints)


class BacklogReporter:
    """Writes this replica's backlog of each autoscaled Trigger under its own key of the backlog ConfigMap."""

    def __init__(self, client: ConfigMapClient, dataplane: DataPlane, namespace: str, replica: str, *,
                 name: str = BACKLOG_CONFIGMAP, poll: float = 0.1, interval: float = 1.0,
                 heartbeat: float = 10.0) -> None:
        self.client = client
        self.dataplane = dataplane
        self.namespace = namespace
        self.name = name
        self.replica = replica
        self.poll, self.interval, self.heartbeat = poll, interval, heartbeat
        self._last: dict[str, TriggerBacklog] | None = None  # as last written; None: nothing written
        self._written_at = 0.0
        self._reported_held: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll)
                try:
                    await self.tick()
                except Exception as error:  # a report that fails is retried at the next tick
                    log.warning("reporting the autoscaled Triggers' backlog failed: %s", error)
        finally:
            if self._last is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._patch(None), 5)

    async def tick(self) -> None:
        if not self.dataplane.autoscaled() and not self._last:
            return  # nothing autoscaled, nothing reported: no writes at all
        now = time.monotonic()
        held = self.dataplane.held()
        waking = bool(held - self._reported_held)
        if not waking and now - self._written_at < self.interval:
            return
        backlogs = await self.dataplane.backlogs()
        if not waking and backlogs == self._last and now - self._written_at < self.heartbeat:
            return
        report = BacklogReport(at=datetime.now(UTC), triggers=backlogs)
        await self._patch(report.to_json())
        self._last, self._written_at, self._reported_held = backlogs, now, held

    async def _patch(self, value: str | None) -> None:
        path = self.client.path(self.namespace, self.name)
        try:
            # The label too: the operator watches labelled ConfigMaps only (one made before it was, say).
            await self.client.request("PATCH", path, body={"metadata": {"labels": WATCHED},
                                                           "data": {self.replica: value}},
                                      content_type="application/merge-patch+json", timeout=10)
        except ApiError as error:
            if error.status != 404 or value is None:
                raise
            body = {"apiVersion": "v1", "kind": "ConfigMap", "data": {self.replica: value},
                    "metadata": {"name": self.name, "namespace": self.namespace, "labels": {**PART_OF, **WATCHED}}}
            try:
                await self.client.request("POST", self.client.path(self.namespace), body=body, timeout=10)
            except ApiError as created:
                if created.status != 409:  # another replica created it meanwhile: the next tick patches
                    raise
        except (aiohttp.ClientError, TimeoutError) as error:
            raise RuntimeError(f"the API server did not take the report: {error}") from None
