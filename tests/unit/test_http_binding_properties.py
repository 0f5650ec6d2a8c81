"""Properties of the HTTP binding: arbitrary input never raises anything but InvalidEvent, whatever
parses can be written to a subscriber, and valid events round-trip byte for byte in every mode."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventferry.events import CloudEvent, InvalidEvent
from eventferry.events.http import BATCH, STRUCTURED, from_http, to_binary, to_json_object, to_structured
from eventferry.events.kafka import from_kafka, to_kafka

pytestmark = pytest.mark.unit

# Header values as aiohttp hands them over: bytes decoded as UTF-8 with surrogateescape.
header_values = st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape"))
header_names = st.sampled_from(["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-x", "ce-Ab",
                                "content-type", "traceparent", "knative-x", "ce-", "x-other"])
content_types = st.sampled_from([STRUCTURED, BATCH, "application/json", "text/plain", "", "application/cloudevents",
                                 "application/cloudevents+xml"])
json_fragments = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                              | st.text(max_size=8),
                              lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                          max_size=3), max_leaves=12)


def _deliverable(event: CloudEvent) -> None:
    """What the sender and the Kafka writer do with an accepted event: none of it may raise."""
    headers, _ = to_binary(event)
    for key, value in headers.items():
        key.encode("latin-1")
        value.encode("utf-8")
    to_structured(event)
    to_kafka(event)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(header_names, header_values, max_size=8), st.binary(max_size=200))
def test_arbitrary_headers_and_body_raise_only_invalid_event(headers: dict[str, str], body: bytes) -> None:
    try:
        events = from_http(headers, body)
    except InvalidEvent:
        return
    for event in events:
        _deliverable(event)


@settings(max_examples=300)
@given(content_types, json_fragments)
def test_arbitrary_json_raises_only_invalid_event(content_type: str, document: object) -> None:
    if isinstance(document, dict):
        document.setdefault("specversion", "1.0")
    body = json.dumps(document).encode()
    try:
        events = from_http({"content-type": content_type}, body)
    except InvalidEvent:
        return
    for event in events:
        _deliverable(event)


attribute_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)
extension_names = st.from_regex(r"\A[a-z][a-z0-9]{0,9}\Z").filter(
    lambda n: n not in ("id", "source", "type", "specversion", "time", "datacontenttype", "data", "dataschema",
                        "subject", "datacontentencoding"))
extension_values = attribute_text | st.integers(min_value=-(2**31), max_value=2**31 - 1) | st.booleans()


@st.composite
def valid_events(draw: st.DrawFn) -> CloudEvent:
    attributes: dict[str, str | int | bool] = {"specversion": "1.0", "id": draw(attribute_text),
                                               "source": draw(attribute_text), "type": draw(attribute_text),
                                               "datacontenttype": "application/octet-stream"}
    attributes.update(draw(st.dictionaries(extension_names, extension_values, max_size=4)))
    if draw(st.booleans()):
        attributes["time"] = "2021-03-04T05:06:07.123Z"
    return CloudEvent(attributes, draw(st.binary(max_size=2000)))


def _same(a: CloudEvent, b: CloudEvent) -> None:
    assert a.text_attributes() == b.text_attributes()
    assert (a.data or b"") == (b.data or b"")


@settings(max_examples=300)
@given(valid_events())
def test_valid_events_round_trip_in_binary_structured_batch_and_kafka(event: CloudEvent) -> None:
    headers, body = to_binary(event)
    [back] = from_http(headers, body)
    _same(event, back)
    headers, body = to_structured(event)
    [back] = from_http(headers, body)
    _same(event, back)
    batch = json.dumps([to_json_object(event), to_json_object(event)]).encode()
    both = from_http({"content-type": BATCH}, batch)
    assert len(both) == 2
    _same(event, both[1])
    kafka_headers, value = to_kafka(event)
    _same(event, from_kafka(kafka_headers, value))
