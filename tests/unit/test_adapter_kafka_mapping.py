"""KafkaSource record -> CloudEvent mapping (design brief, section 8)."""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field

import pytest

from eventferry.adapters.kafka_mapping import header_extension, map_record, rfc3339, typed_key

pytestmark = pytest.mark.unit


@dataclass
class Record:
    topic: str = "comments"
    partition: int = 2
    offset: int = 41
    timestamp: int = 1_700_000_000_123
    key: bytes | None = None
    value: bytes | None = b"hello"
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


def mapped(record: Record, key_type: str = "string", overrides: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return map_record(record, namespace="live", name="frames", key_type=key_type, overrides=overrides)


def test_plain_record_is_wrapped_as_knative_does() -> None:
    result = mapped(Record(key=b"user-7", headers=[("Content-Type", b"text/plain"), ("X-Request.Id", b"r1")]))
    event = result.event
    assert not result.passthrough and result.malformed is None
    assert event.attributes == {
        "specversion": "1.0",
        "id": "partition:2/offset:41",
        "type": "dev.knative.kafka.event",
        "source": "/apis/v1/namespaces/live/kafkasources/frames#comments",
        "subject": "partition:2#41",
        "time": "2023-11-14T22:13:20.123Z",
        "key": "user-7",
        "partitionkey": "user-7",
        "kafkaheadercontenttype": "text/plain",
        "datacontenttype": "text/plain",
        "kafkaheaderxrequestid": "r1",
        "knativekafkapartition": 2,
        "knativekafkaoffset": 41,
    }
    assert event.data == b"hello"
    event.validate()


def test_record_without_key_timestamp_or_value() -> None:
    event = mapped(Record(key=None, timestamp=-1, value=None)).event
    assert "key" not in event.attributes and "partitionkey" not in event.attributes
    assert "time" not in event.attributes
    assert event.data is None


@pytest.mark.parametrize(("key_type", "key", "expected"), [
    ("string", b"abc", "abc"),
    ("string", b"\xff", "\ufffd"),  # as Java's StringDeserializer: invalid bytes replaced
    ("int", struct.pack(">i", -42), -42),
    ("int", b"12345", "12345"),  # not 4 bytes: falls back to string, as Knative
    ("float", struct.pack(">f", 1.1), "1.1"),
    ("float", struct.pack(">d", 2.5e-10), "2.5e-10"),
    ("float", b"abc", "abc"),
    ("byte-array", b"\x00\x01\xfe", base64.b64encode(b"\x00\x01\xfe").decode()),
])
def test_key_types(key_type: str, key: bytes, expected: object) -> None:
    assert typed_key(key, key_type) == expected
    event = mapped(Record(key=key), key_type=key_type).event
    assert event.attributes["key"] == expected
    assert event.attributes["partitionkey"] == str(expected)


@pytest.mark.parametrize(("header", "extension"), [
    ("trace-id", "kafkaheadertraceid"),
    ("X_Custom.Header", "kafkaheaderxcustomheader"),
    ("Ünïcode-9", "kafkaheaderncode9"),  # non-ASCII letters are removed too
    ("---", "kafkaheader"),
])
def test_header_names(header: str, extension: str) -> None:
    assert header_extension(header) == extension
    assert mapped(Record(headers=[(header, b"v")])).event.attributes[extension] == "v"


def test_header_that_is_not_utf8_is_left_out_and_reported() -> None:
    result = mapped(Record(headers=[("bin", b"\xff\xfe"), ("ok", b"yes")]))
    assert result.skipped_headers == ["bin"]
    assert "kafkaheaderbin" not in result.event.attributes
    assert result.event.attributes["kafkaheaderok"] == "yes"


def test_trace_context_header_travels_as_a_transport_header() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    event = mapped(Record(headers=[("traceparent", parent.encode())])).event
    assert event.headers["traceparent"] == parent


def test_overrides_come_last() -> None:
    event = mapped(Record(), overrides={"team": "moderation", "knativekafkaoffset": "x"}).event
    assert event.attributes["team"] == "moderation"
    assert event.attributes["knativekafkaoffset"] == "x"


def test_binary_cloudevent_record_passes_through() -> None:
    headers: list[tuple[str, bytes | None]] = [
        ("ce_specversion", b"1.0"), ("ce_id", b"frame-1"), ("ce_source", b"/camera/3"),
        ("ce_type", b"video.frame"), ("ce_subject", b"cam3"), ("content-type", b"application/json"),
        ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ]
    result = mapped(Record(value=b'{"n":1}', headers=headers, key=b"k"), overrides={"team": "ml"})
    assert result.passthrough and result.malformed is None
    assert result.event.attributes == {"specversion": "1.0", "id": "frame-1", "source": "/camera/3",
                                       "type": "video.frame", "subject": "cam3", "datacontenttype": "application/json"}
    # Passed through unchanged (design section 8): ceOverrides apply only to events the adapter makes.
    assert result.event.data == b'{"n":1}'
    assert result.event.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")


def test_structured_cloudevent_record_passes_through() -> None:
    body = json.dumps({"specversion": "1.0", "id": "c-9", "source": "/chat", "type": "live.comment",
                       "datacontenttype": "application/json", "data": {"text": "hi"}}).encode()
    result = mapped(Record(value=body, headers=[("content-type", b"application/cloudevents+json; charset=utf-8")]))
    assert result.passthrough
    assert result.event.id == "c-9" and result.event.type == "live.comment"
    assert json.loads(result.event.data or b"") == {"text": "hi"}


@pytest.mark.parametrize("headers", [
    [("ce_specversion", b"1.0"), ("ce_id", b"x")],  # no source, no type
    [("ce_specversion", b"2.0"), ("ce_id", b"x"), ("ce_source", b"/s"), ("ce_type", b"t")],
    [("content-type", b"application/cloudevents+json")],  # structured, but the body is not JSON
])
def test_malformed_cloudevent_record_is_reported_with_its_wrapped_form(headers: list[tuple[str, bytes]]) -> None:
    result = mapped(Record(value=b"not json", headers=list(headers)))
    assert result.malformed
    assert not result.passthrough
    assert result.event.attributes["id"] == "partition:2/offset:41"
    assert result.event.data == b"not json"


def test_rfc3339() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
