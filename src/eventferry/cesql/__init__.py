"""CloudEvents SQL (CESQL) v1: compile an expression once, evaluate it against many events.

``compile_expression`` parses and compiles; the resulting ``Expression`` evaluates an event's
attributes, given as a mapping of lowercase names to values. Values may be ``str`` (HTTP binary
mode delivers nothing else), ``bool`` or ``int`` (structured mode); the operators cast them as the
spec says, so ``myint > 5`` holds for ``{"myint": "10"}`` as for ``{"myint": 10}``.

Evaluation never raises: it returns a value with the errors met on the way (``operators`` tells
how an error shapes the value). ``matches`` is the Trigger filter view: true only for a Boolean
true and no error.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from eventferry.cesql.errors import CESQLError, CESQLParseError, ErrorKind
from eventferry.cesql.evaluator import compile_tree
from eventferry.cesql.grammar import parse
from eventferry.cesql.nodes import Fn, Node
from eventferry.cesql.values import Errors, Type, Value, to_boolean

__all__ = ["CESQLError", "CESQLParseError", "ErrorKind", "Expression", "Value", "compile_expression"]


class Expression:
    """A compiled CESQL expression; immutable, so one instance may serve many Triggers and threads."""

    __slots__ = ("_fn", "_predicate", "source", "type")

    def __init__(self, source: str, root: Node) -> None:
        self.source = source
        # The static result type; Any for a bare attribute reference, whose type is the value's.
        self.type = root.type
        self._fn = root.fn
        self._predicate = _predicate(root)

    def evaluate(self, event: Mapping[str, object]) -> tuple[Value, list[CESQLError]]:
        """The value of the expression and the errors met, in evaluation order."""
        errors: list[CESQLError] = []
        value = self._fn(event, errors)
        return value, errors

    def matches(self, event: Mapping[str, object]) -> bool:
        """Whether the event passes this expression as a filter: a Boolean true, and no error (spec 1.2)."""
        errors: list[CESQLError] = []
        return self._predicate(event, errors) is True and not errors

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _predicate(root: Node) -> Fn:
    if root.type is not Type.ANY:
        return root.fn
    # A filter that is a bare attribute, such as ``mybool``, wants a Boolean: cast the attribute
    # implicitly as an operator would, so that binary mode's "true" passes like structured mode's true.
    fn = root.fn

    def predicate(event: Mapping[str, object], errors: Errors) -> Value:
        return to_boolean(fn(event, errors), errors)

    return predicate


@lru_cache(maxsize=1024)
def compile_expression(text: str) -> Expression:
    """Parse and compile ``text``; raises CESQLParseError (a ValueError) for invalid syntax.

    Compiled expressions are cached by text, as Triggers are reconciled again and again.
    """
    return Expression(text, compile_tree(parse(text)))
