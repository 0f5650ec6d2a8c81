"""Compiled expression nodes: a closure evaluating an event, with what is known about it statically."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from eventferry.cesql.values import (
    IMPLICIT_CASTS,
    Caster,
    Errors,
    Type,
    Value,
    identity,
    implicit_cast,
    type_of,
)

Event = Mapping[str, object]
# Appends the errors it meets to the list, and always returns a value (CESQL is total).
Fn = Callable[[Event, Errors], Value]


@dataclass(frozen=True, slots=True)
class Node:
    fn: Fn
    # The type of every value fn returns; ANY only for attribute references.
    type: Type
    # Set for literals, so that operators can cast them once, at compile time, rather than per event.
    constant: Value | None = None


def constant(value: Value) -> Node:
    return Node(lambda event, errors: value, type_of(value), value)


def caster(node: Node, target: Type) -> Caster:
    """The implicit cast of the node's values to ``target``, or a no-op when they have that type already."""
    return identity if node.type is target or target is Type.ANY else IMPLICIT_CASTS[target]


def precast(node: Node, target: Type) -> Value | None:
    """A literal cast to ``target``; None when the node is no literal or the cast fails (then it is done per event)."""
    if node.constant is None:
        return None
    errors: Errors = []
    value = implicit_cast(node.constant, target, errors)
    return None if errors else value
