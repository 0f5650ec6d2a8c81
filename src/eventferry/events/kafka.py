"""The CloudEvents Kafka binding (binary mode: ``ce_`` headers; structured mode by content type)."""

from __future__ import annotations

from collections.abc import Iterable

from eventferry.events.event import AttributeValue, CloudEvent, InvalidEvent, attribute_text
from eventferry.events.http import FORWARDED_HEADERS, FORWARDED_PREFIX, from_structured

KafkaHeaders = list[tuple[str, bytes]]


def to_kafka(event: CloudEvent) -> tuple[KafkaHeaders, bytes | None]:
    headers: KafkaHeaders = [(key, value.encode()) for key, value in event.headers.items()]
    for name, value in event.attributes.items():
        if name == "datacontenttype":
            headers.append(("content-type", attribute_text(value).encode()))
        else:
            headers.append((f"ce_{name}", attribute_text(value).encode()))
    return headers, event.data


def is_cloudevent_record(headers: Iterable[tuple[str, bytes]]) -> bool:
    for key, value in headers:
        lower = key.lower()
        if lower == "ce_specversion":
            return True
        if lower == "content-type" and value.lower().startswith(b"application/cloudevents"):
            return True
    return False


def from_kafka(headers: Iterable[tuple[str, bytes]], value: bytes | None) -> CloudEvent:
    """A record that carries a CloudEvent, in binary or structured mode. Raises InvalidEvent."""
    attributes: dict[str, AttributeValue] = {}
    forwarded: dict[str, str] = {}
    content_type: str | None = None
    for key, raw in headers:
        lower = key.lower()
        try:
            text = raw.decode() if raw is not None else ""
        except UnicodeDecodeError:
            raise InvalidEvent(f"header {key!r} is not UTF-8") from None
        if lower.startswith("ce_"):
            attributes[lower[3:]] = text
        elif lower == "content-type":
            content_type = text
        elif lower in FORWARDED_HEADERS or lower.startswith(FORWARDED_PREFIX):
            forwarded[lower] = text
    if "specversion" not in attributes and content_type and content_type.lower().startswith("application/cloudevents"):
        event = from_structured(value or b"")
        event.headers = forwarded
        return event
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    return CloudEvent(attributes, value, forwarded).validate()
