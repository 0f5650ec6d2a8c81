"""Where the traffic goes: the broker over HTTP, or the topics the sources read (Kafka, RocketMQ).

Every event leaves as a CloudEvent in binary mode (the ``cloudevents`` SDK's bindings): attributes in
headers (HTTP ``ce-``, Kafka ``ce_``) or user properties (RocketMQ ``CE_``), the JSON data as body. The
sources pass such records through as they are, so the broker sees the same events either way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from cloudevents.core.bindings import kafka as kafka_binding
from cloudevents.core.bindings.http import to_binary
from cloudevents.core.v1.event import CloudEvent

from eventferry_examples.service import JSON_FORMAT
from eventferry_examples.stream import Planned

CONNECTIONS = 64


def cloudevent(event: Planned) -> CloudEvent:
    return CloudEvent({"type": event.type, "source": event.source, "datacontenttype": "application/json",
                       **event.extensions}, event.data)


class HttpSink:
    """POSTs to the broker's ingress; taken when it answers 2xx (202)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS),
                                              timeout=aiohttp.ClientTimeout(total=timeout))

    async def send(self, event: Planned) -> bool:
        message = to_binary(cloudevent(event), JSON_FORMAT)
        async with self._session.post(self.url, data=message.body, headers=message.headers) as response:
            await response.read()
            return 200 <= response.status < 300

    async def close(self) -> None:
        await self._session.close()


class KafkaSink:
    """Writes to a topic with aiokafka, keyed by room (one room's frames stay in order); taken once acknowledged."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from aiokafka import AIOKafkaProducer

        self.topic = topic
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")

    async def start(self) -> None:
        await self._producer.start()

    async def send(self, event: Planned) -> bool:
        message = kafka_binding.to_binary_event(cloudevent(event))
        key = str(event.data.get("room", "")).encode()
        await self._producer.send_and_wait(self.topic, message.value, key=key, headers=list(message.headers.items()))
        return True

    async def close(self) -> None:
        await self._producer.stop()


class RocketMQSink:
    """Sends to a topic with the gRPC client of RocketMQ 5 (the one the project's adapter uses), tagged so
    that the source's filter expression takes it. The client blocks: its calls run in threads."""

    def __init__(self, endpoint: str, topic: str, tag: str) -> None:
        self.endpoint, self.topic, self.tag = endpoint, topic, tag
        self._producer: Any = None

    async def start(self) -> None:
        from rocketmq import ClientConfiguration, Credentials, Producer

        producer = Producer(ClientConfiguration(self.endpoint, Credentials(), request_timeout=10), (self.topic,))
        await asyncio.to_thread(producer.startup)
        self._producer = producer

    async def send(self, event: Planned) -> bool:
        from rocketmq import Message

        binary = to_binary(cloudevent(event), JSON_FORMAT)
        message = Message()
        message.topic, message.body, message.tag = self.topic, binary.body, self.tag
        for header, value in binary.headers.items():
            name = "CE_contenttype" if header.lower() == "content-type" else "CE_" + header.removeprefix("ce-")
            message.add_property(name, value)
        await asyncio.to_thread(self._producer.send, message)
        return True

    async def close(self) -> None:
        if self._producer is not None:
            await asyncio.to_thread(self._producer.shutdown)


class RoutedSink:
    """Comments to one sink, frames to another, the rest (gifts) to a third: as events reach a platform."""

    def __init__(self, comments: Any, frames: Any, rest: Any) -> None:
        self.comments, self.frames, self.rest = comments, frames, rest

    async def send(self, event: Planned) -> bool:
        kind = event.kind
        sink = self.comments if kind == "comment" else self.frames if kind in ("frame", "keyframe") else self.rest
        result: bool = await sink.send(event)
        return result

    async def close(self) -> None:
        for sink in (self.comments, self.frames, self.rest):
            await sink.close()
