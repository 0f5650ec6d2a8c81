"""A KafkaSource consumer group's lag, read from Kafka directly: it is known while no adapter runs.

Lag of a partition = its end offset - the group's committed offset. A partition the group has not
committed yet counts from where the adapter would start (``initialOffset``): all of it for
``earliest``, none for ``latest`` (as KEDA's Kafka scaler with ``offsetResetPolicy``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from eventferry.resources.scaling import Lag

TIMEOUT_MS = 10_000
CLIENT_ID = "eventferry-operator-autoscaler"


class LagReader:
    """Keeps one metadata consumer (no group) and one admin client open between reads."""

    def __init__(self, options: Callable[[], dict[str, Any]], group: str, topics: Sequence[str],
                 initial_offset: str) -> None:
        self.options = options
        """Makes the aiokafka connection options; called off the event loop (TLS material is loaded)."""
        self.group = group
        self.topics = tuple(topics)
        self.initial_offset = initial_offset
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def _clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        if self._consumer is None or self._admin is None:
            await self.close()
            options = await asyncio.to_thread(self.options)
            common = {**options, "client_id": CLIENT_ID, "request_timeout_ms": TIMEOUT_MS}
            consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **common)
            admin = AIOKafkaAdminClient(**common)
            try:
                await consumer.start()
                await admin.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                    await admin.close()
                raise
            self._consumer, self._admin = consumer, admin
        return self._consumer, self._admin

    async def read(self) -> Lag:
        try:
            return await self._read()
        except BaseException:
            await self.close()  # the next read starts with fresh connections
            raise

    async def _read(self) -> Lag:
        consumer, admin = await self._clients()
        # Fresh metadata on every read, so that partitions added since count. Only topics that exist
        # are described: describing a missing one could create it where auto-creation is on.
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([topic for topic in self.topics if topic in existing])
        partitions = [TopicPartition(topic["topic"], p["partition"]) for topic in described
                      if not topic.get("error_code") for p in topic["partitions"]]
        if not partitions:
            return Lag(0, 0)
        ends = await consumer.end_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(self.group, partitions=partitions)
        starts: dict[TopicPartition, int] = {}
        uncommitted = [tp for tp in partitions if tp not in committed or committed[tp].offset < 0]
        if uncommitted:
            starts = (await consumer.beginning_offsets(uncommitted) if self.initial_offset == "earliest"
                      else {tp: ends[tp] for tp in uncommitted})
        total = 0
        for tp in partitions:
            position = starts[tp] if tp in starts else committed[tp].offset
            total += max(0, ends[tp] - position)
        return Lag(total, len(partitions))

    async def close(self) -> None:
        consumer, admin, self._consumer, self._admin = self._consumer, self._admin, None, None
        with contextlib.suppress(Exception):
            if consumer is not None:
                await consumer.stop()
        with contextlib.suppress(Exception):
            if admin is not None:
                await admin.close()
