"""The CloudEvent as the data plane holds it: attributes plus raw data bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SPEC_VERSIONS = ("1.0", "0.3")
REQUIRED = ("id", "source", "specversion", "type")
# CloudEvents attribute names: lower-case ASCII letters and digits only.
ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]+$")

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
        return self
