"""Following the contract ConfigMap through the Kubernetes API, and reporting what was loaded.

``eventferry broker --configmap NAMESPACE/NAME`` lists the ConfigMap and then WATCHes it, so that a
new contract is applied within a second of the operator writing it. After each successful load, and
every ``report_interval`` seconds as a heartbeat, the replica writes the generation it has loaded
into the status ConfigMap (``eventferry-dataplane-status``, key = its pod name): the operator marks a
Trigger Ready only once every replica reporting has loaded a contract that holds it.

Everything here is asynchronous (aiohttp against the API server), so the event loop that serves
the ingress never blocks on the API. Credentials come from the pod's service account, or from
KUBECONFIG outside a cluster, read by the ``kubernetes`` package's loaders.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

import aiohttp

from eventferry.contract.model import Contract
from eventferry.dataplane.dataplane import DataPlane
from eventferry.net.kubeconn import ApiConnection, ApiError
from eventferry.resources.contract import contract_from_config_map
from eventferry.resources.names import DATAPLANE_STATUS_CONFIGMAP, PART_OF, WATCHED
from eventferry.resources.readiness import report_patch

log = logging.getLogger(__name__)

WATCH_SECONDS = 60  # the server ends each watch after this; a silent, stalled stream is noticed soon after
READ_MARGIN = 30
MAX_BACKOFF = 30.0


class ConfigMapClient:
    """The few ConfigMap calls the data plane makes."""

    def __init__(self, connection: ApiConnection) -> None:
        self.connection = connection
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.connection.ssl_context or True)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _headers(self, content_type: str | None = None, accept: str = "application/json") -> dict[str, str]:
        headers = {"Accept": accept}
        token = self.connection.authorization()
        if token:
            headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    @staticmethod
    def path(namespace: str, name: str | None = None) -> str:
        return f"/api/v1/namespaces/{namespace}/configmaps" + (f"/{name}" if name else "")

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      body: Any = None, content_type: str = "application/json", timeout: float = 30,
                      accept: str = "application/json") -> Any:
        data = json.dumps(body) if body is not None else None
        async with self._http().request(method, self.connection.server + path, params=params, data=data,
                                        headers=self._headers(content_type if data else None, accept),
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            text = await response.text()
            if response.status >= 400:
                raise ApiError(response.status, "", _message(text))
            return json.loads(text) if text else None

    async def watch(self, namespace: str, name: str, resource_version: str,
                    seconds: int = WATCH_SECONDS) -> AsyncGenerator[dict[str, Any], None]:
        """The watch events of one ConfigMap from ``resource_version`` on, until the server ends the stream
        (after ``seconds``)."""
        params = {"watch": "true", "fieldSelector": f"metadata.name={name}", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(seconds)}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=seconds + READ_MARGIN)
        async with self._http().get(self.connection.server + self.path(namespace), params=params,
                                    headers=self._headers(), timeout=timeout) as response:
            if response.status >= 400:
                raise ApiError(response.status, "", _message(await response.text()))
            # Lines are split by hand: a contract of several hundred kilobytes is one line, longer than
            # aiohttp's readline accepts.
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _message(text: str) -> str:
    try:
        return str(json.loads(text).get("message") or text)
    except (ValueError, AttributeError):
        return text[:500]


def replica_name() -> str:
    """This replica's key in the status ConfigMap: the pod name (set POD_NAME from the downward API)."""
    return os.environ.get("POD_NAME") or socket.gethostname()


class FollowedConfigMap:
    """One ConfigMap read through the API: listed, then watched, again after any error (with a backoff);
    each version that arrives goes to ``_offer``."""

    def __init__(self, client: ConfigMapClient, namespace: str, name: str, *, retry_interval: float = 2.0,
                 watch_seconds: int = WATCH_SECONDS) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.retry_interval = retry_interval
        self.watch_seconds = watch_seconds

    def _offer(self, config_map: dict[str, Any]) -> None:
        raise NotImplementedError

    def _missing(self) -> None:
        """The ConfigMap does not exist (yet): what was loaded stays."""

    async def _follow(self, stop: asyncio.Event) -> None:
        backoff = self.retry_interval
        version: str | None = None  # None: list first (at start, after an error, after 410 Gone)
        while not stop.is_set():
            try:
                if version is None:
                    version = await self._list()
                version = await self._watch(version)
                backoff = self.retry_interval
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError, KeyError) as error:
                log.warning("reading ConfigMap %s/%s failed (retrying in %.0fs): %s", self.namespace, self.name,
                            backoff, error)
                version = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _list(self) -> str:
        listed = await self.client.request("GET", self.client.path(self.namespace),
                                           params={"fieldSelector": f"metadata.name={self.name}"})
        items = listed.get("items") or []
        if items:
            self._offer(items[0])
        else:
            self._missing()
        return str(listed["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> str | None:
        """Follows the watch until the server ends it; the version to watch from next (None: list again)."""
        stream = self.client.watch(self.namespace, self.name, version, self.watch_seconds)
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":  # 410 Gone: the version is too old to resume from
                    log.info("watch of %s/%s ended: %s", self.namespace, self.name, obj.get("message"))
                    return None
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED"):
                    self._offer(obj)
                elif kind == "DELETED":
                    log.warning("ConfigMap %s/%s was deleted: keeping what was loaded", self.namespace, self.name)
        return version


class ConfigMapContract(FollowedConfigMap):
    """Loads the contract from a ConfigMap, follows it with a watch, and reports the loaded generation."""

    def __init__(self, client: ConfigMapClient, dataplane: DataPlane, namespace: str, name: str, *,
                 replica: str | None = None, status_name: str = DATAPLANE_STATUS_CONFIGMAP,
                 report_interval: float = 10.0, retry_interval: float = 2.0,
                 watch_seconds: int = WATCH_SECONDS) -> None:
        super().__init__(client, namespace, name, retry_interval=retry_interval, watch_seconds=watch_seconds)
        self.dataplane = dataplane
        self.replica = replica or replica_name()
        self.status_name = status_name
        self.report_interval = report_interval
        self._desired: Contract | None = None
        self._changed = asyncio.Event()
        self._report_now = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self._follow(stop), name="contract watch"),
                 asyncio.create_task(self._apply_loop(stop), name="contract apply"),
                 asyncio.create_task(self._report_loop(stop), name="contract report")]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._withdraw()

    def _missing(self) -> None:
        log.warning("ConfigMap %s/%s does not exist yet: waiting for the operator to write it", self.namespace,
                    self.name)

    def _offer(self, config_map: dict[str, Any]) -> None:
        try:
            contract = contract_from_config_map(config_map)
        except ValueError as error:
            log.error("ConfigMap %s/%s is invalid, keeping the loaded contract: %s", self.namespace, self.name,
                      error)
            return
        loaded = self.dataplane.contract if self.dataplane.loaded else None
        if loaded is not None and loaded.generation == contract.generation and loaded == contract:
            return
        self._desired = contract
        self._changed.set()

    async def _apply_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._changed.wait()
            self._changed.clear()
            contract = self._desired
            if contract is None:
                continue
            try:
                await self.dataplane.apply(contract)
            except Exception:
                log.exception("applying contract generation %d failed; trying again in %.0fs", contract.generation,
                              self.retry_interval)
                await asyncio.sleep(self.retry_interval)
                if self._desired is contract:
                    self._changed.set()
                continue
            self._report_now.set()

    # --- reporting --------------------------------------------------------------------------------------

    async def _report_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_now.wait(), self.report_interval)
            self._report_now.clear()
            if self.dataplane.loaded:
                await self._report(self.dataplane.contract.generation)

    async def _report(self, generation: int | None) -> None:
        path = self.client.path(self.namespace, self.status_name)
        # The label too: the operator watches labelled ConfigMaps only.
        patch = {**report_patch(self.replica, generation, datetime.now(UTC)), "metadata": {"labels": WATCHED}}
        try:
            await self.client.request("PATCH", path, body=patch, content_type="application/merge-patch+json")
        except ApiError as error:
            if error.status != 404 or generation is None:
                log.warning("reporting the loaded contract generation failed: %s", error)
                return
            await self._create_status(patch["data"])
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("reporting the loaded contract generation failed: %s", error)

    async def _create_status(self, data: dict[str, Any]) -> None:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                "metadata": {"name": self.status_name, "namespace": self.namespace, "labels": {**PART_OF, **WATCHED}}}
        try:
            await self.client.request("POST", self.client.path(self.namespace), body=body)
        except ApiError as error:
            if error.status != 409:  # created meanwhile by the operator or another replica: next beat patches
                log.warning("creating ConfigMap %s/%s failed: %s", self.namespace, self.status_name, error)

    async def _withdraw(self) -> None:
        """A replica that stops takes its report away, so that it no longer holds Triggers back."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._report(None), 5)
