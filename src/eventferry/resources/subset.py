"""Whether a stored object already holds what a manifest asks for, so that nothing needs writing."""

from __future__ import annotations

from typing import Any


def holds(actual: Any, desired: Any) -> bool:
    """True when every field of ``desired`` is in ``actual`` with the same value.

    Mappings may hold more (the API server adds defaults such as ``imagePullPolicy`` or a volume's
    ``defaultMode``); lists must have the same length and hold their items in the same order.
    """
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(k in actual and holds(actual[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(actual, list) and len(actual) == len(desired)
                and all(holds(a, d) for a, d in zip(actual, desired, strict=True)))
    return bool(actual == desired)
