"""Trigger filters compiled into predicates, and an index that skips Triggers that cannot match.

Semantics as Knative's: ``filter.attributes`` needs every key present, a non-empty value matching
exactly (case-sensitive) and ``""`` matching any value; a non-empty ``filters`` list (the
CloudEvents Subscriptions API dialects) overrides it, its entries AND together, and a missing
attribute fails every dialect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from eventferry.apis.trigger import SubscriptionsAPIFilter
from eventferry.cesql import compile_expression
from eventferry.events.event import AttributeValue, attribute_text

Attributes = Mapping[str, AttributeValue]
Predicate = Callable[[Attributes], bool]


class InvalidFilter(ValueError):
    """A CESQL expression that does not compile (in a contract that did not come from compile_contract)."""


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


def compile_filter(spec: SubscriptionsAPIFilter) -> Predicate:
    """One Subscriptions API filter. The API model checked its shape (one dialect, one attribute per
    exact/prefix/suffix, string values) and the contract compiler its CESQL: nothing is checked twice."""
    if spec.exact is not None:
        return _all([_attribute_predicate(n, v.__eq__) for n, v in spec.exact.items()])
    if spec.prefix is not None:
        return _all([_attribute_predicate(n, _starts(v)) for n, v in spec.prefix.items()])
    if spec.suffix is not None:
        return _all([_attribute_predicate(n, _ends(v)) for n, v in spec.suffix.items()])
    if spec.all_ is not None:
        return _all([compile_filter(item) for item in spec.all_])
    if spec.any_ is not None:
        predicates = [compile_filter(item) for item in spec.any_]
        return lambda attributes: any(p(attributes) for p in predicates)
    if spec.not_ is not None:
        inner = compile_filter(spec.not_)
        return lambda attributes: not inner(attributes)
    assert spec.cesql is not None
    try:
        expression = compile_expression(spec.cesql)
    except ValueError as error:  # a contract that did not come from compile_contract
        raise InvalidFilter(f"cesql: {error}") from None
    return expression.matches


def compile_filters(specs: Iterable[SubscriptionsAPIFilter]) -> Predicate:
    return _all([compile_filter(spec) for spec in specs])


def _starts(prefix: str) -> Callable[[str], bool]:
    return lambda text: text.startswith(prefix)


def _ends(suffix: str) -> Callable[[str], bool]:
    return lambda text: text.endswith(suffix)


def required_exact(attributes: Mapping[str, str], filters: Sequence[SubscriptionsAPIFilter]) -> dict[str, str]:
    """Exact (name, value) pairs that every matching event must carry: the keys the index may use."""
    if filters:
        found: dict[str, str] = {}
        _collect_exact(filters, found)
        return found
    return {name: value for name, value in attributes.items() if value != ""}


def _collect_exact(filters: Sequence[SubscriptionsAPIFilter], found: dict[str, str]) -> None:
    for spec in filters:
        if spec.exact is not None:
            found.update(spec.exact)
        elif spec.all_ is not None:
            _collect_exact(spec.all_, found)


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
