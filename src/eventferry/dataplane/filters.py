"""Trigger filters compiled into predicates, and an index that skips Triggers that cannot match.

Semantics as Knative's: ``filter.attributes`` needs every key present, a non-empty value matching
exactly (case-sensitive) and ``""`` matching any value; a non-empty ``filters`` list (the
CloudEvents Subscriptions API dialects) overrides it, its entries AND together, and a missing
attribute fails every dialect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from eventferry.cesql import compile_expression
from eventferry.events.event import AttributeValue, attribute_text

Attributes = Mapping[str, AttributeValue]
Predicate = Callable[[Attributes], bool]


class InvalidFilter(ValueError):
    """A filter that cannot be compiled; the message names the dialect and the problem."""


def _always(_: Attributes) -> bool:
    return True


def _attribute_predicate(name: str, test: Callable[[str], bool]) -> Predicate:
    def predicate(attributes: Attributes) -> bool:
        value = attributes.get(name)
        return value is not None and test(attribute_text(value))
    return predicate


def _all(predicates: Sequence[Predicate]) -> Predicate:
    if not predicates:
        return _always
    if len(predicates) == 1:
        return predicates[0]
    return lambda attributes: all(p(attributes) for p in predicates)


def compile_attributes(attributes: Mapping[str, str]) -> Predicate:
    predicates: list[Predicate] = []
    for name, expected in attributes.items():
        if expected == "":
            predicates.append(_attribute_predicate(name, _always_text))
        else:
            predicates.append(_attribute_predicate(name, expected.__eq__))
    return _all(predicates)


def _always_text(_: str) -> bool:
    return True


def compile_filter(spec: Mapping[str, Any]) -> Predicate:
    """One Subscriptions API filter object: exactly one dialect."""
    dialects = [key for key in spec if key in DIALECTS]
    unknown = [key for key in spec if key not in DIALECTS]
    if unknown:
        raise InvalidFilter(f"unknown filter dialect(s) {unknown}: use one of {sorted(DIALECTS)}")
    if len(dialects) != 1:
        raise InvalidFilter(f"a filter must have exactly one dialect, found {dialects or 'none'}")
    dialect = dialects[0]
    return DIALECTS[dialect](spec[dialect])


def compile_filters(specs: Iterable[Mapping[str, Any]]) -> Predicate:
    return _all([compile_filter(spec) for spec in specs])


def _string_map(dialect: str, value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping) or not value:
        raise InvalidFilter(f"{dialect}: expected a non-empty map of attribute name to value")
    for name, expected in value.items():
        if not isinstance(expected, str):
            raise InvalidFilter(f"{dialect}: the value of {name!r} must be a string")
    return value


def _exact(value: Any) -> Predicate:
    return _all([_attribute_predicate(n, v.__eq__) for n, v in _string_map("exact", value).items()])


def _prefix(value: Any) -> Predicate:
    return _all([_attribute_predicate(n, _starts(v)) for n, v in _string_map("prefix", value).items()])


def _suffix(value: Any) -> Predicate:
    return _all([_attribute_predicate(n, _ends(v)) for n, v in _string_map("suffix", value).items()])


def _starts(prefix: str) -> Callable[[str], bool]:
    return lambda text: text.startswith(prefix)


def _ends(suffix: str) -> Callable[[str], bool]:
    return lambda text: text.endswith(suffix)


def _list(dialect: str, value: Any) -> list[Predicate]:
    if not isinstance(value, list):
        raise InvalidFilter(f"{dialect}: expected a list of filters")
    return [compile_filter(item) for item in value]


def _all_dialect(value: Any) -> Predicate:
    return _all(_list("all", value))


def _any_dialect(value: Any) -> Predicate:
    predicates = _list("any", value)
    return lambda attributes: any(p(attributes) for p in predicates)


def _not_dialect(value: Any) -> Predicate:
    if not isinstance(value, Mapping):
        raise InvalidFilter("not: expected one filter object")
    inner = compile_filter(value)
    return lambda attributes: not inner(attributes)


def _cesql(value: Any) -> Predicate:
    if not isinstance(value, str) or not value.strip():
        raise InvalidFilter("cesql: expected a non-empty expression")
    try:
        expression = compile_expression(value)
    except ValueError as error:
        raise InvalidFilter(f"cesql: {error}") from None
    return expression.matches


DIALECTS: dict[str, Callable[[Any], Predicate]] = {
    "exact": _exact, "prefix": _prefix, "suffix": _suffix,
    "all": _all_dialect, "any": _any_dialect, "not": _not_dialect, "cesql": _cesql,
}


def required_exact(attributes: Mapping[str, str], filters: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Exact (name, value) pairs that every matching event must carry: the keys the index may use."""
    if filters:
        found: dict[str, str] = {}
        _collect_exact(filters, found)
        return found
    return {name: value for name, value in attributes.items() if value != ""}


def _collect_exact(filters: Sequence[Mapping[str, Any]], found: dict[str, str]) -> None:
    for spec in filters:
        if isinstance(spec.get("exact"), Mapping):
            found.update(spec["exact"])
        elif isinstance(spec.get("all"), list):
            _collect_exact(spec["all"], found)


T = TypeVar("T")


@dataclass(slots=True)
class _Entry(Generic[T]):
    item: T
    predicate: Predicate


class TriggerIndex(Generic[T]):
    """Finds the items (Triggers) whose filter matches an event.

    Each item is filed under one exact (name, value) pair its filter requires, preferring ``type``;
    an event then only evaluates the items filed under its own values, plus those without any exact
    requirement. The cost per event does not grow with the number of Triggers that cannot match.
    """

    def __init__(self) -> None:
        self._by_attribute: dict[str, dict[str, list[_Entry[T]]]] = {}
        self._unindexed: list[_Entry[T]] = []

    def add(self, item: T, predicate: Predicate, required: Mapping[str, str]) -> None:
        entry = _Entry(item, predicate)
        if not required:
            self._unindexed.append(entry)
            return
        name = "type" if "type" in required else sorted(required)[0]
        self._by_attribute.setdefault(name, {}).setdefault(required[name], []).append(entry)

    def match(self, attributes: Attributes) -> list[T]:
        matched = [e.item for e in self._unindexed if e.predicate(attributes)]
        for name, by_value in self._by_attribute.items():
            value = attributes.get(name)
            if value is None:
                continue
            for entry in by_value.get(attribute_text(value), ()):
                if entry.predicate(attributes):
                    matched.append(entry.item)
        return matched

    def __len__(self) -> int:
        return len(self._unindexed) + sum(len(v) for by in self._by_attribute.values() for v in by.values())
