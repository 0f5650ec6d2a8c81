"""RocketMQ message -> CloudEvent (design brief, section 8). Pure functions.

- A message that already carries a CloudEvent in the RocketMQ CloudEvents binding passes through
  unchanged (no ``ceOverrides``): binary mode has ``CE_``-prefixed user properties (``CE_specversion``,
  ``CE_id``, ...; ``CE_contenttype`` is the data's content type) and the data as body; structured
  mode has ``CE_contenttype: application/cloudevents+json`` and the JSON event as body. A body of a
  single NUL byte means no data (RocketMQ refuses empty bodies).
- Any other message is wrapped: id the message id, type ``dev.eventferry.rocketmq.message``, source
  ``/apis/v1/namespaces/<ns>/rocketmqsources/<name>#<topic>``, subject the tag, time the born
  timestamp, extensions ``rocketmqtopic``, ``rocketmqtag``, ``rocketmqkeys`` (space-separated, sorted),
  ``rocketmqmsgid``, ``rocketmqdeliveryattempt``, one ``rocketmqprop<name>`` per user property, data
  the body, then ``ceOverrides``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Protocol

from eventferry.adapters import tracing
from eventferry.adapters.kafka_mapping import Mapped, rfc3339
from eventferry.events import CloudEvent, InvalidEvent
from eventferry.events.event import AttributeValue
from eventferry.events.http import from_structured

EVENT_TYPE = "dev.eventferry.rocketmq.message"
PROPERTY_PREFIX = "rocketmqprop"
CE_PREFIX = "CE_"
CE_CONTENT_TYPE = ("CE_contenttype", "CE_datacontenttype")
EMPTY_BODY = b"\0"
_NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]")


class RocketMQMessage(Protocol):
    """What the mapping reads of a received message (rocketmq-python-client's Message has it)."""

    @property
    def message_id(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def tag(self) -> str | None: ...
    @property
    def keys(self) -> Iterable[str]: ...
    @property
    def properties(self) -> Mapping[str, str]: ...
    @property
    def body(self) -> bytes | None: ...
    @property
    def born_timestamp(self) -> int | None: ...  # epoch milliseconds
    @property
    def delivery_attempt(self) -> int | None: ...


def source_of(namespace: str, name: str, topic: str) -> str:
    return f"/apis/v1/namespaces/{namespace}/rocketmqsources/{name}#{topic}"


def property_extension(name: str) -> str:
    """``rocketmqprop`` + the property name lower-cased with everything but a-z and 0-9 removed."""
    return PROPERTY_PREFIX + _NOT_ALPHANUMERIC.sub("", name.lower())


def is_cloudevent_message(properties: Mapping[str, str]) -> bool:
    if f"{CE_PREFIX}specversion" in properties:
        return True
    return any(properties.get(name, "").lower().startswith("application/cloudevents") for name in CE_CONTENT_TYPE)


def from_rocketmq(properties: Mapping[str, str], body: bytes | None) -> CloudEvent:
    """A message in the RocketMQ CloudEvents binding, binary or structured. Raises InvalidEvent."""
    forwarded = {name.lower(): value for name, value in properties.items()
                 if name.lower() in (tracing.TRACEPARENT, tracing.TRACESTATE)}
    data = None if body is None or body == EMPTY_BODY else body
    content_type = next((properties[name] for name in CE_CONTENT_TYPE if name in properties), None)
    if f"{CE_PREFIX}specversion" not in properties and content_type is not None:
        event = from_structured(data or b"")
        event.headers = forwarded
        return event
    attributes: dict[str, AttributeValue] = {}
    for name, value in properties.items():
        if name.startswith(CE_PREFIX) and name not in CE_CONTENT_TYPE:
            attributes[name[len(CE_PREFIX):].lower()] = value
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    return CloudEvent(attributes, data, forwarded).validate()


def map_message(message: RocketMQMessage, *, namespace: str, name: str, topic: str | None = None,
                overrides: Mapping[str, str] | None = None) -> Mapped:
    """``topic`` names the source's topic (default: the message's) in the ``source`` attribute."""
    properties = dict(message.properties or {})
    if is_cloudevent_message(properties):
        try:
            event = from_rocketmq(properties, message.body)
        except InvalidEvent as error:
            mapped = wrap_message(message, namespace=namespace, name=name, topic=topic, overrides=overrides)
            mapped.malformed = str(error)
            return mapped
        return Mapped(event, passthrough=True)  # design section 8: a CloudEvent passes through unchanged
    return wrap_message(message, namespace=namespace, name=name, topic=topic, overrides=overrides)


def wrap_message(message: RocketMQMessage, *, namespace: str, name: str, topic: str | None = None,
                 overrides: Mapping[str, str] | None = None) -> Mapped:
    attributes: dict[str, AttributeValue] = {
        "specversion": "1.0",
        "id": message.message_id,
        "type": EVENT_TYPE,
        "source": source_of(namespace, name, topic or message.topic),
    }
    if message.tag:
        attributes["subject"] = message.tag
    if message.born_timestamp:
        attributes["time"] = rfc3339(message.born_timestamp)
    attributes["rocketmqtopic"] = message.topic
    if message.tag:
        attributes["rocketmqtag"] = message.tag
    keys = sorted(message.keys or ())
    if keys:
        attributes["rocketmqkeys"] = " ".join(keys)
    attributes["rocketmqmsgid"] = message.message_id
    if message.delivery_attempt is not None:
        attributes["rocketmqdeliveryattempt"] = message.delivery_attempt
    transport: dict[str, str] = {}
    for prop, value in (message.properties or {}).items():
        attributes[property_extension(prop)] = value
        if prop.lower() in (tracing.TRACEPARENT, tracing.TRACESTATE):
            transport[prop.lower()] = value
    event = CloudEvent(attributes, message.body or None, transport)
    if overrides:
        event.attributes.update(overrides)
    return Mapped(event)
