"""Writing an object's status, one way for every kind: only when it changed, through the status
subresource, counted, and with a Warning Event while its Ready condition is False."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from eventferry.apis.meta import API_VERSION, PLURALS
from eventferry.controller.kube import ApiError, resource_path
from eventferry.resources.status import same_status

if TYPE_CHECKING:
    from eventferry.controller.context import Context

log = logging.getLogger(__name__)


class StatusWriter:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # What this operator last wrote, by uid: newer than the index until the watch event comes back.
        self.written: dict[str, dict[str, Any]] = {}

    def previous(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The status to build on: what was last written here, else what the object holds."""
        return self.written.get(body["metadata"].get("uid")) or body.get("status")

    def forget(self, uid: str | None) -> None:
        self.written.pop(uid or "", None)

    def forget_all_but(self, live: set[str]) -> None:
        self.written = {uid: status for uid, status in self.written.items() if uid in live}

    async def write(self, body: dict[str, Any], status: dict[str, Any],
                    limit: asyncio.Semaphore | None = None) -> None:
        metadata = body["metadata"]
        uid = metadata.get("uid")
        kind = str(body.get("kind", ""))
        if not same_status(body.get("status"), status) and self.written.get(uid) != status:
            path = resource_path(API_VERSION, PLURALS[kind], metadata.get("namespace"), metadata["name"], "status")
            async with limit or contextlib.nullcontext():
                try:
                    await self.ctx.api.merge_patch(path, {"status": status})
                except ApiError as error:
                    log.warning("status of %s %s/%s not written: %s", kind, metadata.get("namespace"),
                                metadata["name"], error)
                    return
            if uid:
                self.written[uid] = status
            self.ctx.metrics.status_writes.labels(kind).inc()
        ready = status["conditions"][0]
        if ready["status"] == "False":
            await self.ctx.events.failure(body, ready.get("reason", "NotReady"), ready.get("message", ""))
        else:
            self.ctx.events.recovered(body)
