"""Compiles a CESQL parse tree, once, into nested closures; evaluating an event is calling the root.

The work that only depends on the expression is done here, not per event: names are checked,
literals folded, operators chosen by the static types of their operands, LIKE patterns turned into
string tests, IN lists of literals into sets and functions resolved. ``operators`` builds the
closures and describes how errors shape their values.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import cast

from lark import Token, Tree

from eventferry.cesql import operators
from eventferry.cesql.errors import MISSING_ATTRIBUTE, CESQLError, CESQLParseError
from eventferry.cesql.functions import resolve
from eventferry.cesql.like import compile_like
from eventferry.cesql.nodes import Event, Node, constant
from eventferry.cesql.values import INT_MAX, INT_MIN, Errors, Type, Value, from_event

_ATTRIBUTE_NAME = re.compile(r"[a-z0-9]+")
_FUNCTION_NAME = re.compile(r"[A-Za-z][A-Za-z_]*")
# CESQL v1 does not address the event payload, even when the mapping given to it carries one.
_UNADDRESSABLE = frozenset({"data"})


def compile_tree(tree: Tree[Token]) -> Node:
    return _COMPILERS[tree.data](tree)


def _compile(child: object) -> Node:
    return compile_tree(_tree(child))


def _tree(child: object) -> Tree[Token]:
    assert isinstance(child, Tree)
    return cast(Tree[Token], child)


def _token(child: object) -> Token:
    assert isinstance(child, Token)
    return child


def _fail(token: Token, message: str) -> CESQLParseError:
    return CESQLParseError(message, token.line or 1, token.column or 1)


# Literals and attributes


def _integer_literal(token: Token, value: int) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise _fail(token, f"integer literal {value} does not fit in 32 bits")
    return value


def _integer(tree: Tree[Token]) -> Node:
    token = _token(tree.children[-1])
    return constant(_integer_literal(token, int(token)))


def _boolean(tree: Tree[Token]) -> Node:
    return constant(_token(tree.children[0]).type == "TRUE")


def _string_value(tree: Tree[Token]) -> str:
    # Only the delimiting quote can be escaped; any other backslash is an ordinary character.
    token = _token(tree.children[0])
    quote = token[0]
    return token[1:-1].replace("\\" + quote, quote)


def _string(tree: Tree[Token]) -> Node:
    return constant(_string_value(tree))


def _attribute_name(token: Token) -> str:
    # Attribute names are lowercase in CloudEvents; the TCK accepts EXISTS SOURCE, so case is folded.
    name = token.lower()
    if not _ATTRIBUTE_NAME.fullmatch(name):
        raise _fail(token, f"invalid attribute name {str(token)!r}: only letters and digits are allowed")
    return name


def _attribute(tree: Tree[Token]) -> Node:
    name = _attribute_name(_token(tree.children[0]))
    missing = CESQLError(MISSING_ATTRIBUTE, f"attribute {name!r} is missing")
    if name in _UNADDRESSABLE:

        def unaddressable(event: Event, errors: Errors) -> Value:
            errors.append(missing)
            return False

        return Node(unaddressable, Type.ANY)

    def read(event: Event, errors: Errors) -> Value:
        raw = event.get(name)
        if isinstance(raw, str):
            return raw
        value = from_event(raw)
        if value is None:
            # The value is never used: the operator receiving it sees the error and yields its zero
            # value. A bare reference has no operator; then false, Boolean being the assumed type.
            errors.append(missing)
            return False
        return value

    return Node(read, Type.ANY)


def _exists(tree: Tree[Token]) -> Node:
    name = _attribute_name(_token(tree.children[1]))
    if name in _UNADDRESSABLE:
        return Node(lambda event, errors: False, Type.BOOLEAN)
    return Node(lambda event, errors: event.get(name) is not None, Type.BOOLEAN)


# Operators


def _not(tree: Tree[Token]) -> Node:
    return operators.logical_not(_compile(tree.children[1]))


def _negate(tree: Tree[Token]) -> Node:
    child = _tree(tree.children[1])
    if child.data == "integer":
        # Folded into the literal, so that -2147483648 is valid although 2147483648 is not.
        token = _token(child.children[-1])
        return constant(_integer_literal(token, -int(token)))
    return operators.negate(compile_tree(child))


def _like(tree: Tree[Token]) -> Node:
    matcher = compile_like(_string_value(_tree(tree.children[3])))
    return operators.like(_compile(tree.children[0]), matcher, negated=tree.children[1] is not None)


def _in_set(tree: Tree[Token]) -> Node:
    members = [_compile(child) for child in tree.children[3:]]
    return operators.in_set(_compile(tree.children[0]), members, negated=tree.children[1] is not None)


def _operator_run(tree: Tree[Token]) -> tuple[list[Node], list[str]]:
    """The operands and the operator kinds of a flat run of one precedence level, such as ``a + b - c``."""
    operands = [_compile(child) for child in tree.children[0::2]]
    return operands, [_token(child).type for child in tree.children[1::2]]


def _compare(tree: Tree[Token]) -> Node:
    operands, kinds = _operator_run(tree)
    node = operands[0]
    for kind, right in zip(kinds, operands[1:], strict=True):
        if kind in ("EQ", "NE"):
            node = operators.equality(node, right, negated=kind == "NE")
        else:
            node = operators.ordering(node, right, operators.ORDERINGS[kind])
    return node


def _arithmetic(tree: Tree[Token]) -> Node:
    operands, kinds = _operator_run(tree)
    node = operands[0]
    for kind, right in zip(kinds, operands[1:], strict=True):
        node = operators.arithmetic(node, operators.ARITHMETIC[kind], right)
    return node


def _logic(tree: Tree[Token]) -> Node:
    """AND, OR and XOR grouped left to right; each run of ANDs, or of ORs, becomes one n-ary closure."""
    operands, kinds = _operator_run(tree)
    node, index = operands[0], 0
    while index < len(kinds):
        kind = kinds[index]
        if kind == "XOR":
            node, index = operators.logical_xor(node, operands[index + 1]), index + 1
            continue
        run = [node]
        while index < len(kinds) and kinds[index] == kind:
            run.append(operands[index + 1])
            index += 1
        node = operators.logical_and(run) if kind == "AND" else operators.logical_or(run)
    return node


def _call(tree: Tree[Token]) -> Node:
    name = _token(tree.children[0])
    if not _FUNCTION_NAME.fullmatch(name):
        raise _fail(name, f"invalid function name {str(name)!r}: only letters and '_' are allowed")
    arguments = [_compile(child) for child in tree.children[1:] if child is not None]
    function = resolve(name, len(arguments))
    if function is None:
        return operators.missing_function(name, len(arguments))
    return operators.invocation(function, arguments)


_COMPILERS: dict[str, Callable[[Tree[Token]], Node]] = {
    "integer": _integer,
    "boolean": _boolean,
    "string": _string,
    "attribute": _attribute,
    "exists": _exists,
    "not_": _not,
    "negate": _negate,
    "like": _like,
    "in_set": _in_set,
    "compare": _compare,
    "arithmetic": _arithmetic,
    "logic": _logic,
    "call": _call,
}
