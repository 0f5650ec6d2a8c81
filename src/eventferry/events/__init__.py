"""CloudEvents: the in-memory event, and its HTTP and Kafka bindings.

Shared by the broker data plane and the source adapters. Hand-written rather than the
``cloudevents`` SDK's converters because it sits on the hot path of every event: an event here is
a plain dict of attributes plus the data bytes, parsed once and forwarded without re-encoding.
"""

from eventferry.events.event import (
    CloudEvent,
    InvalidEvent,
    attribute_text,
)

__all__ = ["CloudEvent", "InvalidEvent", "attribute_text"]
