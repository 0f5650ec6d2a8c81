"""The CloudEvents HTTP and Kafka bindings."""

from __future__ import annotations

import base64
import json

import pytest

from eventferry.events import CloudEvent, InvalidEvent
from eventferry.events.http import claims_cloudevent, from_http, to_binary, to_structured
from eventferry.events.kafka import from_kafka, is_cloudevent_record, to_kafka

pytestmark = pytest.mark.unit

BASE = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}


def test_binary_round_trip_with_percent_encoding() -> None:
    event = CloudEvent(dict(BASE, comment='héllo "100%" sure'), b"\x00\x01", {"traceparent": "tp"})
    headers, body = to_binary(event)
    assert headers["ce-comment"] == "h%C3%A9llo%20%22100%25%22%20sure"
    back = from_http(headers, body)[0]
    assert back.attributes == event.attributes
    assert back.data == b"\x00\x01"
    assert back.headers == {"traceparent": "tp"}


def test_structured_round_trip_keeps_json_data_and_binary_data() -> None:
    json_event = CloudEvent(dict(BASE, datacontenttype="application/json", n=3), b'{"a":[1,2]}')
    headers, body = to_structured(json_event)
    assert json.loads(body)["data"] == {"a": [1, 2]}
    assert from_http(headers, body)[0].attributes["n"] == 3
    raw = CloudEvent(dict(BASE, datacontenttype="image/jpeg"), b"\xff\xd8")
    _, body = to_structured(raw)
    assert json.loads(body)["data_base64"] == base64.b64encode(b"\xff\xd8").decode()
    assert from_http({"content-type": "application/cloudevents+json"}, body)[0].data == b"\xff\xd8"


def test_text_data_in_structured_mode() -> None:
    doc = dict(BASE, datacontenttype="text/plain", data="plain words")
    event = from_http({"content-type": "application/cloudevents+json"}, json.dumps(doc).encode())[0]
    assert event.data == b"plain words"


def test_version_0_3_is_kept_as_is() -> None:
    doc = dict(BASE, specversion="0.3", datacontentencoding="base64", data=base64.b64encode(b"x").decode())
    event = from_http({"content-type": "application/cloudevents+json"}, json.dumps(doc).encode())[0]
    assert event.specversion == "0.3"
    assert event.data == b"x"


@pytest.mark.parametrize(("doc", "reason"), [
    ({"specversion": "1.0", "source": "/s", "type": "t"}, "missing required attribute(s): id"),
    (dict(BASE, specversion="9.9"), "unsupported specversion"),
    (dict(BASE, id=""), "must not be empty"),
    (dict(BASE, **{"Bad-Name": "x"}), "invalid attribute name"),
    (dict(BASE, ratio=0.5), "not an integer"),
    (dict(BASE, time="yesterday"), "RFC 3339"),
    (dict(BASE, nested={"a": 1}), "string, integer or boolean"),
])
def test_invalid_events_say_why(doc: dict, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason.replace("(", r"\(").replace(")", r"\)")):
        from_http({"content-type": "application/cloudevents+json"}, json.dumps(doc).encode())


def test_not_a_cloudevent_at_all() -> None:
    with pytest.raises(InvalidEvent, match="not a CloudEvent"):
        from_http({"content-type": "application/json"}, b"{}")


def test_batch_is_all_or_nothing() -> None:
    batch = [BASE, {"specversion": "1.0", "id": "2", "source": "/s"}]
    with pytest.raises(InvalidEvent, match="batch item 1"):
        from_http({"content-type": "application/cloudevents-batch+json"}, json.dumps(batch).encode())


def test_claims_cloudevent() -> None:
    assert claims_cloudevent({"ce-id": "x"})
    assert claims_cloudevent({"content-type": "application/cloudevents+json"})
    assert not claims_cloudevent({"content-type": "application/json"})


def test_kafka_binding_round_trip() -> None:
    event = CloudEvent(dict(BASE, datacontenttype="application/json", room="r1"), b"{}", {"traceparent": "tp"})
    headers, value = to_kafka(event)
    assert ("ce_room", b"r1") in headers and ("content-type", b"application/json") in headers
    assert is_cloudevent_record(headers)
    back = from_kafka(headers, value)
    assert back.attributes == event.attributes and back.headers == {"traceparent": "tp"}


def test_kafka_structured_record() -> None:
    _, body = to_structured(CloudEvent(dict(BASE), b"x"))
    headers = [("content-type", b"application/cloudevents+json")]
    assert is_cloudevent_record(headers)
    assert from_kafka(headers, body).id == "1"
    assert not is_cloudevent_record([("content-type", b"text/plain")])
