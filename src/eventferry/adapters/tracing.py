"""W3C trace context for the hop from the adapter to its sink.

Every event leaves with a ``traceparent``: a child span of the one the message carried (so that a
trace started by the producer continues through the broker to the subscribers), or a new trace.
"""

from __future__ import annotations

import re
import secrets

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_FORMAT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
# New traces are marked sampled, so that tracers downstream that follow their parent record them.
NEW_TRACE_FLAGS = "01"


def parse(value: str | None) -> tuple[str, str, str] | None:
    """(trace id, parent span id, flags) of a valid traceparent, None for anything else."""
    if not value:
        return None
    match = _FORMAT.match(value.strip().lower())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    # Version ff is forbidden; version 00 has nothing after the flags; all-zero ids are invalid.
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(span_id) == {"0"}:
        return None
    return trace_id, span_id, flags


def outgoing(incoming: str | None) -> str:
    """The traceparent to send: a new span in the incoming trace when it is valid, else a new trace."""
    parsed = parse(incoming)
    span_id = secrets.token_hex(8)
    if parsed is None:
        return f"00-{secrets.token_hex(16)}-{span_id}-{NEW_TRACE_FLAGS}"
    trace_id, _parent, flags = parsed
    return f"00-{trace_id}-{span_id}-{flags}"
