"""The CloudEvents HTTP binding: binary, structured and batched modes, both directions."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

from eventferry.events.event import AttributeValue, CloudEvent, InvalidEvent, attribute_text

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
# Headers that belong to the request, not to the event, yet must follow the event to its subscribers.
FORWARDED_HEADERS = ("traceparent", "tracestate", "x-request-id")
FORWARDED_PREFIX = "knative-"

# Percent-encode what the binding says must be (space, '"', '%', anything outside printable ASCII).
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json_media_type(content_type: str | None) -> bool:
    media = _media_type(content_type)
    return media in ("", "application/json", "text/json") or media.endswith("+json")


def claims_cloudevent(headers: Mapping[str, str]) -> bool:
    """True when a response says it carries a CloudEvent (ce- headers or a cloudevents media type)."""
    if any(key.lower().startswith("ce-") for key in headers):
        return True
    return _media_type(headers.get("content-type")).startswith("application/cloudevents")


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()
            if key.lower() in FORWARDED_HEADERS or key.lower().startswith(FORWARDED_PREFIX)}


def from_http(headers: Mapping[str, str], body: bytes) -> list[CloudEvent]:
    """Parses a request or response; a batch gives several events, other modes one. Raises InvalidEvent."""
    media = _media_type(headers.get("content-type"))
    if media == BATCH:
        items = _json_document(body, "batch body")
        if not isinstance(items, list):
            raise InvalidEvent("a batch must be a JSON array of structured CloudEvents")
        if not items:
            raise InvalidEvent("the batch is empty")
        events = []
        for position, item in enumerate(items):
            try:
                events.append(from_json_object(item))
            except InvalidEvent as error:
                raise InvalidEvent(f"batch item {position}: {error}") from None
        return events
    if media.startswith("application/cloudevents"):
        if not media.endswith("+json"):
            raise InvalidEvent(f"unsupported structured format {media!r}: only JSON is supported")
        return [from_structured(body)]
    if any(key.lower() == "ce-specversion" for key in headers):
        return [from_binary(headers, body)]
    raise InvalidEvent("not a CloudEvent: no ce-specversion header, and the content type is neither "
                       f"{STRUCTURED} nor {BATCH}")


def from_binary(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    attributes: dict[str, AttributeValue] = {}
    for key, value in headers.items():
        lower = key.lower()
        if lower.startswith("ce-"):
            attributes[lower[3:]] = unquote(value)
    content_type = headers.get("content-type")
    if content_type:
        attributes["datacontenttype"] = content_type
    event = CloudEvent(attributes, body if body or content_type else None, forwarded_headers(headers))
    return event.validate()


def from_structured(body: bytes) -> CloudEvent:
    return from_json_object(_json_document(body, "structured body"))


def _json_document(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidEvent(f"{what} is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidEvent(f"{what} nests JSON too deeply") from None


def from_json_object(document: Any) -> CloudEvent:
    if not isinstance(document, dict):
        raise InvalidEvent("a structured CloudEvent must be a JSON object")
    attributes: dict[str, AttributeValue] = {}
    data: bytes | None = None
    for name, value in document.items():
        if name in ("data", "data_base64"):
            continue
        if value is None:
            continue
        if isinstance(value, float):
            raise InvalidEvent(f"attribute {name!r}: {value} is not an integer (CloudEvents has no floats)")
        if not isinstance(value, str | int | bool):
            raise InvalidEvent(f"attribute {name!r} must be a string, integer or boolean")
        attributes[name] = value
    if "data_base64" in document and document["data_base64"] is not None:
        try:
            data = base64.b64decode(document["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise InvalidEvent("data_base64 is not valid base64") from None
    elif "data" in document:
        data = _data_from_json(document["data"], attributes)
    event = CloudEvent(attributes, data)
    return event.validate()


def _data_from_json(value: Any, attributes: dict[str, AttributeValue]) -> bytes | None:
    content_type = attributes.get("datacontenttype")
    content_type = None if content_type is None else attribute_text(content_type)
    if attributes.get("datacontentencoding") == "base64" and isinstance(value, str):  # CloudEvents 0.3
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidEvent("data is marked base64 (datacontentencoding) but is not valid base64") from None
    if value is None:
        return None
    try:
        if isinstance(value, str) and not is_json_media_type(content_type):
            return value.encode()
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InvalidEvent("data holds a lone UTF-16 surrogate: not valid Unicode text") from None
    except RecursionError:
        raise InvalidEvent("data nests JSON too deeply") from None


def to_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    headers = dict(event.headers)
    for name, value in event.attributes.items():
        if name == "datacontenttype":
            headers["content-type"] = attribute_text(value)
        else:
            headers[f"ce-{name}"] = quote(attribute_text(value), safe=_SAFE)
    return headers, event.data or b""


def to_structured(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    headers = dict(event.headers)
    headers["content-type"] = f"{STRUCTURED}; charset=utf-8"
    return headers, json.dumps(to_json_object(event), separators=(",", ":"), ensure_ascii=False).encode()


def to_batch(events: list[CloudEvent]) -> tuple[dict[str, str], bytes]:
    """A CloudEvents JSON batch (``application/cloudevents-batch+json``), each event's data as ``data_base64``
    whatever its type, so that the receiver gets the very bytes (embedding JSON data would re-serialize it).
    HTTP headers of the events (a traceparent) do not travel: a batch is one request."""
    body = json.dumps([to_json_object(event, exact=True) for event in events], separators=(",", ":"),
                      ensure_ascii=False)
    return {"content-type": f"{BATCH}; charset=utf-8"}, body.encode()


def to_json_object(event: CloudEvent, exact: bool = False) -> dict[str, Any]:
    """The event as a structured JSON object; ``exact``: its data as base64 always (the bytes kept as they are)."""
    document: dict[str, Any] = dict(event.attributes)
    if event.data is None:
        return document
    content_type = event.datacontenttype
    if exact:
        return _with_base64_data(document, event)
    if is_json_media_type(content_type):
        try:
            document["data"] = json.loads(event.data)
            return document
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass  # not JSON after all (or too deep to embed): it goes as data_base64
    elif _media_type(content_type).startswith("text/"):
        try:
            document["data"] = event.data.decode()
            return document
        except UnicodeDecodeError:
            pass
    return _with_base64_data(document, event)


def _with_base64_data(document: dict[str, Any], event: CloudEvent) -> dict[str, Any]:
    assert event.data is not None
    encoded = base64.b64encode(event.data).decode()
    if event.specversion == "0.3":
        document["datacontentencoding"] = "base64"
        document["data"] = encoded
    else:
        document["data_base64"] = encoded
    return document
