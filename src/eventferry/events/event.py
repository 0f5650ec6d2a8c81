"""The CloudEvent as the data plane holds it: attributes plus raw data bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

SPEC_VERSIONS = ("1.0", "0.3")
REQUIRED = ("id", "source", "specversion", "type")
# CloudEvents attribute names: lower-case ASCII letters and digits only.
ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]+$")
# RFC 3339 date-time (section 5.6): full date, "T", full time with seconds and an offset, nothing else.
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
# Characters that cannot travel in an HTTP header value, where datacontenttype goes as Content-Type.
HEADER_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

AttributeValue = str | int | bool


class InvalidEvent(ValueError):
    """The input is not a valid CloudEvent; the message says why (sent back as the 400 body)."""


def attribute_text(value: AttributeValue) -> str:
    """The canonical string form of an attribute value, as in the HTTP binary binding."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(slots=True)
class CloudEvent:
    attributes: dict[str, AttributeValue]
    data: bytes | None = None
    # Transport headers that travel with the event (trace context, x-request-id, knative-*).
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return attribute_text(self.attributes["id"])

    @property
    def type(self) -> str:
        return attribute_text(self.attributes["type"])

    @property
    def source(self) -> str:
        return attribute_text(self.attributes["source"])

    @property
    def specversion(self) -> str:
        return attribute_text(self.attributes["specversion"])

    @property
    def datacontenttype(self) -> str | None:
        value = self.attributes.get("datacontenttype")
        return None if value is None else attribute_text(value)

    def text_attributes(self) -> dict[str, str]:
        return {name: attribute_text(value) for name, value in self.attributes.items()}

    def copy(self) -> CloudEvent:
        return CloudEvent(dict(self.attributes), self.data, dict(self.headers))

    def validate(self) -> CloudEvent:
        """Checks what CloudEvents requires of every event; returns self for chaining."""
        missing = [name for name in REQUIRED if name not in self.attributes]
        if missing:
            raise InvalidEvent(f"missing required attribute(s): {', '.join(missing)}")
        version = self.specversion
        if version not in SPEC_VERSIONS:
            raise InvalidEvent(f"unsupported specversion {version!r}: use one of {', '.join(SPEC_VERSIONS)}")
        for name in ("id", "source", "type"):
            if attribute_text(self.attributes[name]) == "":
                raise InvalidEvent(f"attribute {name!r} must not be empty")
        for name, value in self.attributes.items():
            if not ATTRIBUTE_NAME.match(name):
                raise InvalidEvent(f"invalid attribute name {name!r}: only lower-case letters a-z and digits 0-9")
            if not isinstance(value, str | int | bool):
                raise InvalidEvent(f"attribute {name!r} must be a string, integer or boolean")
            if isinstance(value, str) and not is_unicode_text(value):
                # A lone surrogate (JSON "\\ud800") or bytes that are not UTF-8 (a binary-mode header):
                # such a value cannot be written to any subscriber, so it is refused here, not lost later.
                raise InvalidEvent(f"attribute {name!r} is not valid UTF-8 text")
        time = self.attributes.get("time")
        if time is not None and not is_rfc3339(attribute_text(time)):
            raise InvalidEvent(f"attribute 'time' is not an RFC 3339 timestamp (like 2020-01-01T10:00:00Z): {time!r}")
        content_type = self.attributes.get("datacontenttype")
        if isinstance(content_type, str) and HEADER_UNSAFE.search(content_type):
            raise InvalidEvent("attribute 'datacontenttype' holds control characters")
        for header, value in self.headers.items():
            if not is_unicode_text(value) or HEADER_UNSAFE.search(value):
                raise InvalidEvent(f"header {header!r} is not valid UTF-8 text")
        return self


def is_unicode_text(value: str) -> bool:
    """True when ``value`` encodes as UTF-8: no lone surrogates (which also stand for undecodable bytes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_rfc3339(text: str) -> bool:
    if not RFC3339.match(text):
        return False
    try:  # the shape is right; the values must be too (no month 13, no 25 o'clock)
        datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
