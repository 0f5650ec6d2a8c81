"""Trigger filters and the trigger index (design section 5)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from eventferry.apis.trigger import SubscriptionsAPIFilter
from eventferry.dataplane.filters import (
    InvalidFilter,
    TriggerIndex,
    compile_attributes,
    compile_filter,
    compile_filters,
    required_exact,
)

pytestmark = pytest.mark.unit



def typed(spec: dict[str, Any]) -> SubscriptionsAPIFilter:
    """A filter as the contract holds it: validated once, by the API model."""
    return SubscriptionsAPIFilter.model_validate(spec)


EVENT = {"specversion": "1.0", "id": "1", "source": "/live/room-7", "type": "com.live.gift", "room": "r7", "n": 5}


def test_attributes_need_every_key_and_match_exactly_and_case_sensitively() -> None:
    assert compile_attributes({"type": "com.live.gift", "room": "r7"})(EVENT)
    assert not compile_attributes({"type": "com.live.Gift"})(EVENT)
    assert not compile_attributes({"type": "com.live.gift", "missing": "x"})(EVENT)


def test_empty_value_matches_any_value_of_a_present_key() -> None:
    assert compile_attributes({"room": ""})(EVENT)
    assert not compile_attributes({"subject": ""})(EVENT)


def test_no_attributes_match_everything() -> None:
    assert compile_attributes({})(EVENT)


@pytest.mark.parametrize(("spec", "expected"), [
    ({"exact": {"type": "com.live.gift"}}, True),
    ({"exact": {"type": "com.live"}}, False),
    ({"prefix": {"type": "com.live."}}, True),
    ({"prefix": {"type": "org."}}, False),
    ({"suffix": {"source": "room-7"}}, True),
    ({"suffix": {"source": "room-8"}}, False),
    ({"exact": {"n": "5"}}, True),  # typed values compare by their canonical text
    ({"all": [{"prefix": {"type": "com."}}, {"exact": {"room": "r7"}}]}, True),
    ({"all": [{"prefix": {"type": "com."}}, {"exact": {"room": "r8"}}]}, False),
    ({"any": [{"exact": {"room": "r8"}}, {"exact": {"room": "r7"}}]}, True),
    ({"any": [{"exact": {"room": "r8"}}, {"exact": {"room": "r9"}}]}, False),
    ({"not": {"exact": {"room": "r8"}}}, True),
    ({"not": {"exact": {"room": "r7"}}}, False),
    ({"cesql": "room = 'r7' AND n > 3"}, True),
    ({"cesql": "n > 30"}, False),
    ({"cesql": "missing = 'x'"}, False),
    ({"prefix": {"subject": ""}}, False),  # a missing attribute fails every dialect
])
def test_subscriptions_api_dialects(spec: dict, expected: bool) -> None:
    assert compile_filter(typed(spec))(EVENT) is expected


def test_filters_and_together() -> None:
    assert compile_filters([typed({"prefix": {"type": "com."}}), typed({"exact": {"room": "r7"}})])(EVENT)
    assert not compile_filters([typed({"prefix": {"type": "com."}}), typed({"exact": {"room": "r1"}})])(EVENT)


@pytest.mark.parametrize(("spec", "message"), [
    ({"exact": {"type": "a"}, "prefix": {"type": "b"}}, "exactly one dialect"),
    ({}, "exactly one dialect"),
    ({"regex": {"type": "a"}}, "Extra inputs are not permitted"),  # the API model's words (test_apis.py)
    ({"exact": {"type": 1}}, "Input should be a valid string"),
    ({"cesql": "type = "}, "cesql: line 1, column"),
])
def test_invalid_filters_are_refused_with_a_reason(spec: dict, message: str) -> None:
    # Refused once: by the API model (shape, names, values), or the CESQL compiler (expressions).
    with pytest.raises((ValidationError, InvalidFilter), match=message):
        compile_filter(typed(spec))


def test_required_exact_pairs() -> None:
    assert required_exact({"type": "a", "room": ""}, []) == {"type": "a"}
    filters = [typed(f) for f in ({"exact": {"type": "a"}}, {"all": [{"exact": {"room": "r"}}, {"prefix": {"x": "y"}}]},
                                  {"any": [{"exact": {"z": "1"}}]})]
    assert required_exact({"ignored": "x"}, filters) == {"type": "a", "room": "r"}


def test_index_evaluates_each_trigger_once_and_only_candidates() -> None:
    evaluated: list[str] = []

    def counting(name: str, predicate):  # type: ignore[no-untyped-def]
        def wrapped(attributes):  # type: ignore[no-untyped-def]
            evaluated.append(name)
            return predicate(attributes)
        return wrapped

    index: TriggerIndex[str] = TriggerIndex()
    for i in range(1000):
        spec = {"type": f"com.live.other{i}"}
        index.add(f"other{i}", counting(f"other{i}", compile_attributes(spec)), spec)
    index.add("gift", counting("gift", compile_attributes({"type": "com.live.gift"})), {"type": "com.live.gift"})
    index.add("room", counting("room", compile_attributes({"room": "r7"})), {"room": "r7"})
    index.add("all", counting("all", compile_attributes({})), {})
    assert sorted(index.match(EVENT)) == ["all", "gift", "room"]
    assert sorted(evaluated) == ["all", "gift", "room"]  # the 1000 non-matching Triggers cost nothing
    assert len(index) == 1003
