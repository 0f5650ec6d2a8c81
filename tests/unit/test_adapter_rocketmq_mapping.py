"""RocketMQSource message -> CloudEvent mapping (design brief, section 8)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from eventferry.adapters.rocketmq_mapping import is_cloudevent_message, map_message, property_extension

pytestmark = pytest.mark.unit


@dataclass
class Message:
    message_id: str = "0102FC0000000135620B1829ED00000000"
    topic: str = "live-comments"
    tag: str | None = "comment"
    keys: set[str] = field(default_factory=lambda: {"room-9", "user-1"})
    properties: dict[str, str] = field(default_factory=dict)
    body: bytes | None = b"great stream!"
    born_timestamp: int | None = 1_700_000_000_500
    delivery_attempt: int | None = 1
    message_group: str | None = None


def mapped(message: Message, overrides: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return map_message(message, namespace="live", name="comments", topic="live-comments", overrides=overrides)


def test_plain_message_is_wrapped() -> None:
    result = mapped(Message(properties={"Room-Id": "9", "lang": "en"}), overrides={"team": "moderation"})
    assert not result.passthrough and result.malformed is None
    assert result.event.attributes == {
        "specversion": "1.0",
        "id": "0102FC0000000135620B1829ED00000000",
        "type": "dev.eventferry.rocketmq.message",
        "source": "/apis/v1/namespaces/live/rocketmqsources/comments#live-comments",
        "subject": "comment",
        "time": "2023-11-14T22:13:20.500Z",
        "rocketmqtopic": "live-comments",
        "rocketmqtag": "comment",
        "rocketmqkeys": "room-9 user-1",
        "rocketmqmsgid": "0102FC0000000135620B1829ED00000000",
        "rocketmqdeliveryattempt": 1,
        "rocketmqproproomid": "9",
        "rocketmqproplang": "en",
        "team": "moderation",
    }
    assert result.event.data == b"great stream!"
    result.event.validate()


def test_message_without_tag_or_keys() -> None:
    event = mapped(Message(tag=None, keys=set())).event
    assert "subject" not in event.attributes and "rocketmqtag" not in event.attributes
    assert "rocketmqkeys" not in event.attributes


@pytest.mark.parametrize(("name", "extension"), [
    ("origin", "rocketmqproporigin"), ("Origin-Name", "rocketmqproporiginname"), ("a.b_c", "rocketmqpropabc"),
])
def test_property_names(name: str, extension: str) -> None:
    assert property_extension(name) == extension


def test_binary_cloudevent_message_passes_through() -> None:
    properties = {"CE_specversion": "1.0", "CE_id": "c-1", "CE_source": "/chat/room-9", "CE_type": "live.comment",
                  "CE_contenttype": "text/plain", "CE_roomid": "9",
                  "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    result = mapped(Message(properties=properties), overrides={"team": "moderation"})
    assert result.passthrough
    assert result.event.attributes == {"specversion": "1.0", "id": "c-1", "source": "/chat/room-9",
                                       "type": "live.comment", "roomid": "9", "datacontenttype": "text/plain"}
    # Passed through unchanged (design section 8): ceOverrides apply only to events the adapter makes.
    assert result.event.data == b"great stream!"
    assert result.event.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c")


def test_binary_cloudevent_with_the_empty_body_marker_has_no_data() -> None:
    properties = {"CE_specversion": "1.0", "CE_id": "c-1", "CE_source": "/s", "CE_type": "t"}
    assert mapped(Message(properties=properties, body=b"\0")).event.data is None


def test_structured_cloudevent_message_passes_through() -> None:
    body = json.dumps({"specversion": "1.0", "id": "c-2", "source": "/chat", "type": "live.comment",
                       "data": {"text": "hi"}}).encode()
    result = mapped(Message(body=body, properties={"CE_contenttype": "application/cloudevents+json; charset=UTF-8"}))
    assert result.passthrough
    assert result.event.id == "c-2"
    assert json.loads(result.event.data or b"") == {"text": "hi"}


def test_detection() -> None:
    assert is_cloudevent_message({"CE_specversion": "1.0"})
    assert is_cloudevent_message({"CE_contenttype": "application/cloudevents+json"})
    assert not is_cloudevent_message({"CE_contenttype": "application/json"})
    assert not is_cloudevent_message({"specversion": "1.0"})


def test_malformed_cloudevent_message_keeps_its_wrapped_form() -> None:
    result = mapped(Message(properties={"CE_specversion": "1.0", "CE_id": "x"}))
    assert result.malformed and "missing required attribute" in result.malformed
    assert result.event.attributes["rocketmqmsgid"] == "0102FC0000000135620B1829ED00000000"
    assert result.event.attributes["rocketmqpropcespecversion"] == "1.0"
