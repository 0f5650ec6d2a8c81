"""Kafka record -> CloudEvent, as Knative's KafkaSource (design brief, section 8). Pure functions.

- A record that already is a CloudEvent (binary ``ce_`` headers, or structured by its
  ``content-type: application/cloudevents...``) passes through as it is (``ceOverrides`` apply only
  to events made here).
- Any other record is wrapped: id ``partition:<p>/offset:<o>``, type ``dev.knative.kafka.event``,
  source ``/apis/v1/namespaces/<ns>/kafkasources/<name>#<topic>``, subject ``partition:<p>#<o>``, time
  the record timestamp, ``key``/``partitionkey`` from the key (typed by the key-type label), one
  ``kafkaheader<name>`` extension per header, ``content-type`` header as ``datacontenttype``, data the
  raw value, ``knativekafkapartition`` and ``knativekafkaoffset``, then ``ceOverrides``.
- A header whose value is not UTF-8 is left out of the event (and reported): the extension would
  have to carry text that the record does not hold, and base64 would be indistinguishable from a
  text value.
- A record that claims to be a CloudEvent but is not a valid one is reported as malformed, with the
  wrapped form of it for the dead-letter sink.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from eventferry.adapters import tracing
from eventferry.events import CloudEvent, InvalidEvent
from eventferry.events.event import AttributeValue
from eventferry.events.kafka import from_kafka, is_cloudevent_record

EVENT_TYPE = "dev.knative.kafka.event"
HEADER_PREFIX = "kafkaheader"
_NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]")


class KafkaRecord(Protocol):
    """What the mapping reads of a record (aiokafka's ConsumerRecord has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...  # epoch milliseconds; negative when the record has none
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


@dataclass
class Mapped:
    event: CloudEvent
    passthrough: bool = False
    malformed: str | None = None  # why a record that claims to be a CloudEvent is not one; event is its wrapped form
    skipped_headers: list[str] = field(default_factory=list)  # header names left out (value not UTF-8)


def source_of(namespace: str, name: str, topic: str) -> str:
    return f"/apis/v1/namespaces/{namespace}/kafkasources/{name}#{topic}"


def header_extension(header: str) -> str:
    """``kafkaheader`` + the header name lower-cased with everything but a-z and 0-9 removed."""
    return HEADER_PREFIX + _NOT_ALPHANUMERIC.sub("", header.lower())


def rfc3339(epoch_millis: int) -> str:
    moment = datetime.fromtimestamp(epoch_millis / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def typed_key(key: bytes, key_type: str) -> AttributeValue:
    """The key as Knative's key deserializer reads it; a key of the wrong size for its type falls back to string.

    int: 4 bytes, big-endian signed. float: 4 or 8 bytes, big-endian IEEE 754, as its shortest text
    (CloudEvents has no float type). byte-array: base64. string: UTF-8 (invalid bytes replaced).
    """
    if key_type == "int" and len(key) == 4:
        value: int = struct.unpack(">i", key)[0]
        return value
    if key_type == "float" and len(key) in (4, 8):
        return _float_text(key)
    if key_type == "byte-array":
        return base64.b64encode(key).decode()
    return key.decode("utf-8", errors="replace")


def _float_text(key: bytes) -> str:
    if len(key) == 8:
        return repr(struct.unpack(">d", key)[0])
    number = struct.unpack(">f", key)[0]
    # The shortest decimal that reads back as the same 32-bit float ("1.1", not "1.100000023841858").
    for digits in range(1, 10):
        text = f"{number:.{digits}g}"
        if struct.pack(">f", float(text)) == key:
            return repr(float(text))
    return repr(number)


def map_record(record: KafkaRecord, *, namespace: str, name: str, key_type: str = "string",
               overrides: Mapping[str, str] | None = None) -> Mapped:
    headers = [(key, value if value is not None else b"") for key, value in record.headers]
    if is_cloudevent_record(headers):
        try:
            event = from_kafka(headers, record.value)
        except InvalidEvent as error:
            mapped = wrap_record(record, namespace=namespace, name=name, key_type=key_type, overrides=overrides)
            mapped.malformed = str(error)
            return mapped
        return Mapped(event, passthrough=True)  # design section 8: a CloudEvent passes through unchanged
    return wrap_record(record, namespace=namespace, name=name, key_type=key_type, overrides=overrides)


def wrap_record(record: KafkaRecord, *, namespace: str, name: str, key_type: str = "string",
                overrides: Mapping[str, str] | None = None) -> Mapped:
    """The record as a new CloudEvent (a record that is not a CloudEvent, or a malformed one)."""
    partition, offset = record.partition, record.offset
    attributes: dict[str, AttributeValue] = {
        "specversion": "1.0",
        "id": f"partition:{partition}/offset:{offset}",
        "type": EVENT_TYPE,
        "source": source_of(namespace, name, record.topic),
        "subject": f"partition:{partition}#{offset}",
    }
    if record.timestamp is not None and record.timestamp >= 0:
        attributes["time"] = rfc3339(record.timestamp)
    if record.key is not None:
        key = typed_key(record.key, key_type)
        attributes["key"] = key
        attributes["partitionkey"] = str(key)
    transport: dict[str, str] = {}
    skipped: list[str] = []
    for header, raw in record.headers:
        try:
            text = (raw or b"").decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(header)
            continue
        attributes[header_extension(header)] = text
        lower = header.lower()
        if lower == "content-type":
            attributes["datacontenttype"] = text
        elif lower in (tracing.TRACEPARENT, tracing.TRACESTATE):
            transport[lower] = text
    attributes["knativekafkapartition"] = partition
    attributes["knativekafkaoffset"] = offset
    event = CloudEvent(attributes, record.value, transport)
    _apply_overrides(event, overrides)
    return Mapped(event, skipped_headers=skipped)


def _apply_overrides(event: CloudEvent, overrides: Mapping[str, str] | None) -> None:
    if overrides:
        event.attributes.update(overrides)
