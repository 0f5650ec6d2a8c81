"""Kubernetes Events for failures, posted once per failure (not once per reconcile).

kopf posts its own Events for handlers that raise; this recorder covers the failures the operator
reports as False conditions (UnknownBrokerClass, ServiceNotFound, SecretNotFound, InvalidFilter...),
which are found outside kopf's per-object handlers, where kopf's ``kopf.warn`` cannot post.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from eventferry.apis.meta import DEFAULT_NAMESPACE
from eventferry.controller.kube import ApiClient, ApiError, resource_path
from eventferry.resources.conditions import now_rfc3339

log = logging.getLogger(__name__)
COMPONENT = "eventferry-operator"


class EventRecorder:
    def __init__(self, api: ApiClient, instance: str) -> None:
        self.api = api
        self.instance = instance
        self._posted: dict[str, tuple[str, str]] = {}  # uid -> the failure last posted

    async def failure(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        """Posts a Warning Event unless this very failure was the last one posted for the object."""
        metadata = obj.get("metadata") or {}
        uid = str(metadata.get("uid") or "")
        if self._posted.get(uid) == (reason, message):
            return
        self._posted[uid] = (reason, message)
        await self.post(obj, "Warning", reason, message)

    def recovered(self, obj: Mapping[str, Any]) -> None:
        """The next failure of the object is posted again, even if it is the same as the last one."""
        self._posted.pop(str((obj.get("metadata") or {}).get("uid") or ""), None)

    async def post(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
        now = now_rfc3339()
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{metadata.get('name')}.", "namespace": namespace},
            "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                               "name": metadata.get("name"), "namespace": namespace, "uid": metadata.get("uid")},
            "type": type_, "reason": reason, "message": message[:1024],
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT, "reportingInstance": self.instance,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            await self.api.create(resource_path("v1", "events", namespace), event)
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            # An Event is a courtesy: failing to post one must not fail the reconcile.
            log.warning("posting Event %s for %s %s/%s failed: %s", reason, obj.get("kind"), namespace,
                        metadata.get("name"), error)
