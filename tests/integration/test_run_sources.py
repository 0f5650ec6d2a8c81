"""``eventferry run`` with sources: RocketMQ comments and Kafka frames flow through the local broker."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.env.servers import Kafka, RocketMQ
from tests.support.broker import start_broker
from tests.support.subscriber import Subscriber, Subscribers

pytestmark = pytest.mark.integration


def manifests(sub: Subscriber, kafka: Kafka, rocketmq: RocketMQ, frames: str, comments: str) -> str:
    return f"""
apiVersion: eventferry.dev/v1alpha1
kind: Broker
metadata: {{name: live-stream, namespace: live}}
---
apiVersion: eventferry.dev/v1alpha1
kind: Trigger
metadata: {{name: comments, namespace: live}}
spec:
  broker: live-stream
  filter: {{attributes: {{type: dev.eventferry.rocketmq.message, rocketmqtag: comment}}}}
  subscriber: {{ref: {{apiVersion: v1, kind: Service, name: moderation}}}}
---
apiVersion: eventferry.dev/v1alpha1
kind: Trigger
metadata: {{name: frames, namespace: live}}
spec:
  broker: live-stream
  filters: [{{cesql: "type = 'dev.knative.kafka.event' AND stream = 'live'"}}]
  subscriber: {{uri: "{sub.url}/vision"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: rmq-credentials, namespace: live}}
stringData: {{accessKey: "", secretKey: ""}}
---
apiVersion: eventferry.dev/v1alpha1
kind: RocketMQSource
metadata: {{name: live-comments, namespace: live}}
spec:
  endpoints: "{rocketmq.endpoint}"
  topic: {comments}
  consumerGroup: g-{comments}
  filterExpression: comment
  sink: {{ref: {{apiVersion: eventferry.dev/v1alpha1, kind: Broker, name: live-stream}}}}
---
apiVersion: eventferry.dev/v1alpha1
kind: KafkaSource
metadata: {{name: video-frames, namespace: live}}
spec:
  bootstrapServers: ["{kafka.bootstrap}"]
  topics: [{frames}]
  consumerGroup: g-{frames}
  initialOffset: earliest
  ceOverrides: {{extensions: {{stream: live}}}}
  sink: {{ref: {{apiVersion: eventferry.dev/v1alpha1, kind: Broker, name: live-stream}}}}
"""


async def test_sources_in_the_embedded_mode(kafka: Kafka, rocketmq: RocketMQ, tmp_path: Path,
                                            subscribers: Subscribers) -> None:
    from rocketmq import ClientConfiguration, Credentials, Message, Producer

    suffix = uuid.uuid4().hex[:6]
    frames, comments = f"frames-{suffix}", f"comments-{suffix}"
    await asyncio.to_thread(rocketmq.create_topic, comments)
    sub = await subscribers()
    broker = await start_broker(tmp_path, manifests(sub, kafka, rocketmq, frames, comments),
                                services={("live", "moderation"): f"{sub.url}/moderation"})
    try:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(frames, b"frame-1", key=b"camera-3")
        finally:
            await producer.stop()

        def send_comments() -> None:
            rmq = Producer(ClientConfiguration(rocketmq.endpoint, Credentials(), request_timeout=10), (comments,))
            rmq.startup()
            try:
                for tag, body in (("comment", b"great stream"), ("gift", b"rose")):
                    message = Message()
                    message.topic, message.body, message.tag = comments, body, tag
                    rmq.send(message)
            finally:
                rmq.shutdown()

        await asyncio.to_thread(send_comments)
        [frame] = await sub.wait_for(1, "/vision", timeout=60)
        assert frame.event.data == b"frame-1"
        assert frame.event.attributes["key"] == "camera-3"
        assert frame.event.source == f"/apis/v1/namespaces/live/kafkasources/video-frames#{frames}"
        [comment] = await sub.wait_for(1, "/moderation", timeout=60)
        assert comment.event.data == b"great stream"
        assert comment.event.attributes["rocketmqtag"] == "comment"  # the gift was filtered out by the tag
        assert comment.event.source == f"/apis/v1/namespaces/live/rocketmqsources/live-comments#{comments}"
    finally:
        await broker.stop()
