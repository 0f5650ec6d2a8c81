"""What the handlers share: settings, the API client, metrics, Events, the views and the reconcilers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from eventferry.controller.config import OperatorConfig
from eventferry.controller.events import EventRecorder
from eventferry.controller.kube import ApiClient, resource_path
from eventferry.controller.metrics import OperatorHealth, OperatorMetrics
from eventferry.controller.views import Views
from eventferry.net.secrets import secret_values

log = logging.getLogger(__name__)


class Context:
    def __init__(self, config: OperatorConfig, api: ApiClient, metrics: OperatorMetrics,
                 health: OperatorHealth) -> None:
        from eventferry.controller.contracts import ContractReconciler
        from eventferry.controller.sources import SourceReconciler
        from eventferry.controller.subscribers import SubscriberScaler

        self.config = config
        self.api = api
        self.metrics = metrics
        self.health = health
        self.events = EventRecorder(api, config.identity)
        self.views = Views()
        self.contracts = ContractReconciler(self)
        self.sources = SourceReconciler(self)
        self.subscribers = SubscriberScaler(self)
        self._tasks: set[asyncio.Task[None]] = set()

    async def read_secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """A Secret's values (Kafka-class Brokers' credentials), read now and held by the caller only."""
        found = await self.api.get(resource_path("v1", "secrets", namespace, name))
        return None if found is None else secret_values(found)

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def stop(self) -> None:
        await self.sources.builtin.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
