"""ISO 8601 durations, the format of every time field of the API (as Knative's DeliverySpec)."""

from __future__ import annotations

import re

# Years and months are refused: they have no fixed length in seconds, and Knative's delivery
# durations never need them.
_NUMBER = r"\d+(?:[.,]\d+)?"
_DURATION = re.compile(
    rf"^P(?:(?P<weeks>{_NUMBER})W)?(?:(?P<days>{_NUMBER})D)?"
    rf"(?:T(?:(?P<hours>{_NUMBER})H)?(?:(?P<minutes>{_NUMBER})M)?(?:(?P<seconds>{_NUMBER})S)?)?$"
)
_SECONDS_PER_UNIT = {"weeks": 604800.0, "days": 86400.0, "hours": 3600.0, "minutes": 60.0, "seconds": 1.0}

# The same grammar for the CRD schema. The API server's regular expressions (RE2) have no
# look-ahead, so "P" and "PT" pass there; parse_duration refuses them when the model is read.
DURATION_PATTERN = re.sub(r"\?P<\w+>", "", _DURATION.pattern)


def parse_duration(text: str) -> float:
    """Seconds in an ISO 8601 duration such as ``PT0.2S``, ``PT1M``, ``P1D`` or ``P1DT2H30M``.

    Raises ValueError, saying what is wrong, for anything else (including negative durations,
    years and months).
    """
    if not isinstance(text, str):
        raise ValueError(f"duration must be a string like 'PT0.2S', got {type(text).__name__}")
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"invalid ISO 8601 duration {text!r}: {_why_invalid(text)}")
    parts = {unit: value for unit, value in match.groupdict().items() if value is not None}
    if not parts:
        raise ValueError(f"invalid ISO 8601 duration {text!r}: it has no component (e.g. 'PT1S')")
    if text.endswith("T"):
        raise ValueError(f"invalid ISO 8601 duration {text!r}: 'T' must be followed by hours, minutes or seconds")
    return sum(float(value.replace(",", ".")) * _SECONDS_PER_UNIT[unit] for unit, value in parts.items())


def _why_invalid(text: str) -> str:
    if text.startswith("-"):
        return "negative durations are not allowed"
    if not text.startswith("P"):
        return "it must start with 'P' (e.g. 'PT0.2S', 'PT1M', 'P1D')"
    date_part = text[1:].split("T", 1)[0]
    if "Y" in date_part or "M" in date_part:
        return "years and months have no fixed length; use weeks (W), days (D) or a time part (T...)"
    return "expected PnWnDTnHnMnS with designators in that order (e.g. 'PT0.2S', 'PT1M', 'P1DT12H')"
