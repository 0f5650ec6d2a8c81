"""Compiles a CESQL parse tree, once, into nested closures; evaluating an event is calling the root.

Every compiled node is a function ``(event, errors) -> value`` that appends what goes wrong to
``errors`` and still returns a value of its type (CESQL is total: spec section 3.3). The work that
only depends on the expression is done here, not per event: operators are chosen by the static
types of their operands, literals are cast to the operand type they meet, LIKE patterns become
string tests and IN lists of literals become sets.

Errors follow the rule the TCK encodes. An operator or function that fails by itself returns the
value the spec gives it: a failed implicit cast of an operand yields the zero value of the target
type and the computation goes on (``NOT 10`` is true, with a cast error), ``5 / 0`` is 0,
``ABS(-2147483648)`` is 2147483647, ``LEFT('abc', -2)`` is ``'abc'``. An operator or function
whose operand reported an error does not compute at all: it returns the zero value of its return
type, so ``1 != 1 / 0`` is false and ``missing / 0`` is 0 without a math error. A missing
attribute is such an operand error (spec section 3.2); a bare one reads as false, Boolean being
the type assumed when none is known. AND and OR skip their right operand once the left one
decides the result, an erroneous left one included.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

from lark import Token, Tree

from eventferry.dataplane.cesql.errors import MATH, MISSING_ATTRIBUTE, MISSING_FUNCTION, CESQLError, CESQLParseError
from eventferry.dataplane.cesql.functions import resolve
from eventferry.dataplane.cesql.like import compile_like
from eventferry.dataplane.cesql.values import (
    IMPLICIT_CASTS,
    INT_MAX,
    INT_MIN,
    ZERO,
    Caster,
    Errors,
    Type,
    Value,
    from_event,
    identity,
    implicit_cast,
    to_boolean,
    to_integer,
    to_string,
    type_of,
    wrap_int32,
)

Event = Mapping[str, object]
Fn = Callable[[Event, Errors], Value]

_ATTRIBUTE_NAME = re.compile(r"[a-z0-9]+")
_FUNCTION_NAME = re.compile(r"[A-Za-z][A-Za-z_]*")
# CESQL v1 does not address the event payload, even when the mapping given to it carries one.
_UNADDRESSABLE = frozenset({"data"})


@dataclass(frozen=True, slots=True)
class Node:
    fn: Fn
    type: Type
    # Set for literals, so that operators can cast them once, here, rather than per event.
    constant: Value | None = None


def compile_tree(tree: Tree[Token]) -> Node:
    return _COMPILERS[tree.data](tree)


def _fail(token: Token, message: str) -> CESQLParseError:
    return CESQLParseError(message, token.line or 1, token.column or 1)


def _tree(child: object) -> Tree[Token]:
    assert isinstance(child, Tree)
    return cast(Tree[Token], child)


def _token(child: object) -> Token:
    assert isinstance(child, Token)
    return child


def _compile(child: object) -> Node:
    tree = _tree(child)
    return _COMPILERS[tree.data](tree)


def _constant(value: Value) -> Node:
    return Node(lambda event, errors: value, type_of(value), value)


def _caster(node: Node, target: Type) -> Caster:
    return identity if node.type is target or target is Type.ANY else IMPLICIT_CASTS[target]


def _precast(node: Node, target: Type) -> Value | None:
    """A literal operand cast to ``target``, or None when it is no literal or its cast fails (then per event)."""
    if node.constant is None:
        return None
    errors: Errors = []
    value = implicit_cast(node.constant, target, errors)
    return None if errors else value


# Literals and references


def _integer_literal(token: Token, value: int) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise _fail(token, f"integer literal {value} does not fit in 32 bits")
    return value


def _integer(tree: Tree[Token]) -> Node:
    token = _token(tree.children[-1])
    return _constant(_integer_literal(token, int(token)))


def _boolean(tree: Tree[Token]) -> Node:
    return _constant(_token(tree.children[0]).type == "TRUE")


def _string_value(tree: Tree[Token]) -> str:
    # Only the delimiting quote can be escaped; any other backslash is an ordinary character.
    token = _token(tree.children[0])
    quote = token[0]
    return token[1:-1].replace("\\" + quote, quote)


def _string(tree: Tree[Token]) -> Node:
    return _constant(_string_value(tree))


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
            errors.append(missing)
            return False
        return value

    return Node(read, Type.ANY)


def _exists(tree: Tree[Token]) -> Node:
    name = _attribute_name(_token(tree.children[1]))
    if name in _UNADDRESSABLE:
        return Node(lambda event, errors: False, Type.BOOLEAN)
    return Node(lambda event, errors: event.get(name) is not None, Type.BOOLEAN)


# Unary operators


def _not(tree: Tree[Token]) -> Node:
    operand = _compile(tree.children[1]).fn

    def not_(event: Event, errors: Errors) -> Value:
        count = len(errors)
        value = operand(event, errors)
        if len(errors) != count:
            return False
        return not to_boolean(value, errors)

    return Node(not_, Type.BOOLEAN)


def _negate(tree: Tree[Token]) -> Node:
    child = _tree(tree.children[1])
    if child.data == "integer":
        # Folded into the literal, so that -2147483648 is valid although 2147483648 is not.
        token = _token(child.children[-1])
        return _constant(_integer_literal(token, -int(token)))
    operand = compile_tree(child).fn

    def negate(event: Event, errors: Errors) -> Value:
        count = len(errors)
        value = operand(event, errors)
        if len(errors) != count:
            return 0
        return wrap_int32(-to_integer(value, errors), errors, "negation")

    return Node(negate, Type.INTEGER)


# LIKE and IN


def _like(tree: Tree[Token]) -> Node:
    operand = _compile(tree.children[0]).fn
    negated = tree.children[1] is not None
    matcher = compile_like(_string_value(_tree(tree.children[3])))

    def like(event: Event, errors: Errors) -> Value:
        count = len(errors)
        value = operand(event, errors)
        if len(errors) != count:
            return False
        return matcher(to_string(value)) != negated

    return Node(like, Type.BOOLEAN)


def _in_set(tree: Tree[Token]) -> Node:
    left = _compile(tree.children[0])
    negated = tree.children[1] is not None
    members = [_compile(child) for child in tree.children[3:]]
    constants = [member.constant for member in members if member.constant is not None]
    if len(constants) == len(members):
        return _in_constants(left, constants, negated)
    return _in_expressions(left, members, negated)


def _in_constants(left: Node, constants: list[Value], negated: bool) -> Node:
    # The list is cast to the type of the left operand (spec section 3.7), which for an attribute is
    # only known per event: prepare the set, and the cast errors to report, for each possible type.
    sets: dict[Type, tuple[frozenset[Value], tuple[CESQLError, ...]]] = {}
    for target in (Type.BOOLEAN, Type.INTEGER, Type.STRING):
        cast_errors: Errors = []
        values = frozenset(implicit_cast(constant, target, cast_errors) for constant in constants)
        sets[target] = (values, tuple(cast_errors))
    operand = left.fn

    def in_constants(event: Event, errors: Errors) -> Value:
        count = len(errors)
        value = operand(event, errors)
        if len(errors) != count:
            return False
        values, cast_errors = sets[type_of(value)]
        if cast_errors:
            errors.extend(cast_errors)
        return (value in values) != negated

    return Node(in_constants, Type.BOOLEAN)


def _in_expressions(left: Node, members: list[Node], negated: bool) -> Node:
    operand = left.fn
    member_fns = [member.fn for member in members]

    def in_expressions(event: Event, errors: Errors) -> Value:
        count = len(errors)
        value = operand(event, errors)
        candidates = [fn(event, errors) for fn in member_fns]
        if len(errors) != count:
            return False
        target = type_of(value)
        # Every member is cast, so that each cast error is reported, not only those before a match.
        found = [implicit_cast(candidate, target, errors) == value for candidate in candidates]
        return any(found) != negated

    return Node(in_expressions, Type.BOOLEAN)


# Binary operators


def _compare(tree: Tree[Token]) -> Node:
    left, right = _compile(tree.children[0]), _compile(tree.children[2])
    kind = _token(tree.children[1]).type
    if kind in ("EQ", "NE"):
        return _equality(left, right, negated=kind == "NE")
    return _ordering(left, right, _ORDERINGS[kind])


_ORDERINGS: dict[str, Callable[[int, int], bool]] = {
    "LT": operator.lt, "LE": operator.le, "GT": operator.gt, "GE": operator.ge,
}


def _equality(left: Node, right: Node, negated: bool) -> Node:
    """``=`` exists for each type, so the right operand's type picks one and the left is cast to it (3.7)."""
    left_fn, right_fn = left.fn, right.fn
    if right.type is Type.ANY:

        def equal_by_value(event: Event, errors: Errors) -> Value:
            count = len(errors)
            a, b = left_fn(event, errors), right_fn(event, errors)
            if len(errors) != count:
                return False
            return (implicit_cast(a, type_of(b), errors) == b) != negated

        return Node(equal_by_value, Type.BOOLEAN)

    cast_left = _caster(left, right.type)
    constant = right.constant
    if constant is not None:

        def equal_constant(event: Event, errors: Errors) -> Value:
            count = len(errors)
            a = left_fn(event, errors)
            if len(errors) != count:
                return False
            return (cast_left(a, errors) == constant) != negated

        return Node(equal_constant, Type.BOOLEAN)

    def equal(event: Event, errors: Errors) -> Value:
        count = len(errors)
        a, b = left_fn(event, errors), right_fn(event, errors)
        if len(errors) != count:
            return False
        return (cast_left(a, errors) == b) != negated

    return Node(equal, Type.BOOLEAN)


def _ordering(left: Node, right: Node, compare: Callable[[int, int], bool]) -> Node:
    left_fn, right_fn = left.fn, right.fn
    constant = _precast(right, Type.INTEGER)
    if constant is not None:
        bound = int(constant)

        def compare_constant(event: Event, errors: Errors) -> Value:
            count = len(errors)
            a = left_fn(event, errors)
            if len(errors) != count:
                return False
            return compare(to_integer(a, errors), bound)

        return Node(compare_constant, Type.BOOLEAN)

    def compare_values(event: Event, errors: Errors) -> Value:
        count = len(errors)
        a, b = left_fn(event, errors), right_fn(event, errors)
        if len(errors) != count:
            return False
        return compare(to_integer(a, errors), to_integer(b, errors))

    return Node(compare_values, Type.BOOLEAN)


def _divide(a: int, b: int, errors: Errors) -> int:
    if b == 0:
        errors.append(CESQLError(MATH, "division by zero"))
        return 0
    # Truncated division: the quotient is rounded towards zero, where Python's // floors.
    quotient = abs(a) // abs(b)
    return wrap_int32(quotient if (a < 0) == (b < 0) else -quotient, errors, "division")


def _modulo(a: int, b: int, errors: Errors) -> int:
    if b == 0:
        errors.append(CESQLError(MATH, "modulo by zero"))
        return 0
    # The remainder of the truncated division takes the sign of the dividend.
    remainder = abs(a) % abs(b)
    return -remainder if a < 0 else remainder


_ARITHMETIC: dict[str, Callable[[int, int, Errors], int]] = {
    "PLUS": lambda a, b, errors: wrap_int32(a + b, errors, "addition"),
    "MINUS": lambda a, b, errors: wrap_int32(a - b, errors, "subtraction"),
    "STAR": lambda a, b, errors: wrap_int32(a * b, errors, "multiplication"),
    "SLASH": _divide,
    "PERCENT": _modulo,
}


def _arithmetic(tree: Tree[Token]) -> Node:
    left_fn, right_fn = _compile(tree.children[0]).fn, _compile(tree.children[2]).fn
    compute = _ARITHMETIC[_token(tree.children[1]).type]

    def arithmetic(event: Event, errors: Errors) -> Value:
        count = len(errors)
        a, b = left_fn(event, errors), right_fn(event, errors)
        if len(errors) != count:
            return 0
        return compute(to_integer(a, errors), to_integer(b, errors), errors)

    return Node(arithmetic, Type.INTEGER)


def _logic(tree: Tree[Token]) -> Node:
    left, right = _compile(tree.children[0]), _compile(tree.children[2])
    left_fn, right_fn = left.fn, right.fn
    # Most operands are comparisons, already Boolean: no cast to call for them.
    left_bool, right_bool = _caster(left, Type.BOOLEAN), _caster(right, Type.BOOLEAN)
    kind = _token(tree.children[1]).type

    def and_(event: Event, errors: Errors) -> Value:
        count = len(errors)
        a = left_fn(event, errors)
        if len(errors) != count or not left_bool(a, errors):
            return False
        b = right_fn(event, errors)
        return len(errors) == count and right_bool(b, errors)

    def or_(event: Event, errors: Errors) -> Value:
        count = len(errors)
        a = left_fn(event, errors)
        if len(errors) != count:
            return False
        if left_bool(a, errors):
            return True
        count = len(errors)
        b = right_fn(event, errors)
        return len(errors) == count and right_bool(b, errors)

    def xor(event: Event, errors: Errors) -> Value:
        count = len(errors)
        a, b = left_fn(event, errors), right_fn(event, errors)
        if len(errors) != count:
            return False
        return left_bool(a, errors) != right_bool(b, errors)

    return Node({"AND": and_, "OR": or_, "XOR": xor}[kind], Type.BOOLEAN)


# Function invocations


def _call(tree: Tree[Token]) -> Node:
    name_token = _token(tree.children[0])
    if not _FUNCTION_NAME.fullmatch(name_token):
        raise _fail(name_token, f"invalid function name {str(name_token)!r}: only letters and '_' are allowed")
    arguments = [_compile(child) for child in tree.children[1:] if child is not None]
    function = resolve(name_token, len(arguments))
    if function is None:
        # Reported per evaluation, not at compile time: the TCK expects a missingFunction error.
        message = f"no function {name_token.upper()} takes {len(arguments)} argument(s)"

        def missing_function(event: Event, errors: Errors) -> Value:
            errors.append(CESQLError(MISSING_FUNCTION, message))
            return False

        return Node(missing_function, Type.BOOLEAN)

    argument_fns = [argument.fn for argument in arguments]
    casts = [_caster(argument, function.parameter(index)) for index, argument in enumerate(arguments)]
    zero, invoke = ZERO[function.returns], function.call

    def call(event: Event, errors: Errors) -> Value:
        count = len(errors)
        values = [fn(event, errors) for fn in argument_fns]
        if len(errors) != count:
            return zero
        return invoke([cast_(value, errors) for cast_, value in zip(casts, values, strict=True)], errors)

    return Node(call, function.returns)


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
