"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it.

Only the holder of the Lease runs kopf: kopf's own peering pauses every operator of the same
priority when it sees two, so it cannot elect one. A standby replica waits; the leader renews every
``duration / 3`` seconds and, when it cannot renew within ``duration``, stops (its process exits and
is restarted as a standby), so that two leaders never write at the same time for long.

Expiry is judged by the time this process observed the Lease unchanged, not by the holder's
timestamps, so clocks that disagree between nodes do not matter (as client-go).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from eventferry.controller.kube import ApiClient, ApiError, resource_path
from eventferry.controller.timing import wait_event

log = logging.getLogger(__name__)

API_VERSION = "coordination.k8s.io/v1"
ERRORS = (ApiError, aiohttp.ClientError, TimeoutError)


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(self, api: ApiClient, namespace: str, name: str, identity: str, *, duration: float = 15.0,
                 retry_period: float = 2.0) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.retry_period = retry_period
        self.path = resource_path(API_VERSION, "leases", namespace, name)
        self._observed: tuple[str, float] | None = None  # (resourceVersion, monotonic time first seen)

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Waits until this process holds the Lease (True), or until ``stop`` is set (False)."""
        announced = False
        while not stop.is_set():
            try:
                if await self._try_acquire():
                    log.info("leader election: %s holds Lease %s/%s", self.identity, self.namespace, self.name)
                    return True
            except ERRORS as error:
                log.warning("leader election: Lease %s/%s: %s", self.namespace, self.name, error)
            if not announced:
                log.info("leader election: another operator holds Lease %s/%s; standing by", self.namespace,
                         self.name)
                announced = True
            await wait_event(stop, self.retry_period)
        return False

    async def hold(self, stop: asyncio.Event) -> bool:
        """Renews the Lease until ``stop`` is set (True) or until it is lost (False)."""
        deadline = time.monotonic() + self.duration
        while not stop.is_set():
            if await wait_event(stop, self.duration / 3):
                return True
            try:
                lease = await self.api.get(self.path)
                if lease is None or _spec(lease).get("holderIdentity") != self.identity:
                    log.error("leader election: Lease %s/%s was taken over", self.namespace, self.name)
                    return False
                _spec(lease)["renewTime"] = _micro_time()
                await self.api.replace(self.path, lease)
                deadline = time.monotonic() + self.duration
            except ERRORS as error:
                log.warning("leader election: renewing Lease %s/%s failed: %s", self.namespace, self.name, error)
                if time.monotonic() >= deadline:
                    log.error("leader election: Lease %s/%s not renewed for %.0fs: giving it up", self.namespace,
                              self.name, self.duration)
                    return False
        return True

    async def release(self) -> None:
        """Hands the Lease over at once instead of letting it expire (on a clean stop)."""
        with contextlib.suppress(*ERRORS):
            lease = await self.api.get(self.path)
            if lease is not None and _spec(lease).get("holderIdentity") == self.identity:
                _spec(lease).update(holderIdentity=None, leaseDurationSeconds=1, renewTime=_micro_time())
                await self.api.replace(self.path, lease)

    async def _try_acquire(self) -> bool:
        lease = await self.api.get(self.path)
        now = _micro_time()
        if lease is None:
            body = {"apiVersion": API_VERSION, "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.duration),
                             "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}
            return await self._write(self.api.create(resource_path(API_VERSION, "leases", self.namespace), body))
        spec = _spec(lease)
        holder = spec.get("holderIdentity")
        if holder and holder != self.identity and not self._expired(lease):
            return False
        if holder != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=int(self.duration), renewTime=now)
        # The resourceVersion in the body makes this a compare-and-swap: a concurrent taker gets 409.
        return await self._write(self.api.replace(self.path, lease))

    async def _write(self, request: Any) -> bool:
        try:
            await request
        except ApiError as error:
            if error.status == 409:
                return False
            raise
        return True

    def _expired(self, lease: dict[str, Any]) -> bool:
        version = str(lease["metadata"].get("resourceVersion"))
        now = time.monotonic()
        if self._observed is None or self._observed[0] != version:
            self._observed = (version, now)
            return False
        duration = float(_spec(lease).get("leaseDurationSeconds") or self.duration)
        return now - self._observed[1] >= duration


def _spec(lease: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = lease.setdefault("spec", {})
    return spec
