"""The closures of CESQL operators and function invocations, built from their compiled operands.

Errors follow the rule the TCK encodes. An operator or function that fails by itself returns the
value the spec gives it: a failed implicit cast of an operand yields the zero value of the target
type and the computation goes on (``NOT 10`` is true, with a cast error), ``5 / 0`` is 0,
``ABS(-2147483648)`` is 2147483647, ``LEFT('abc', -2)`` is ``'abc'``. An operator or function
whose operand reported an error does not compute at all: it returns the zero value of its return
type, so ``1 != 1 / 0`` is false and ``missing / 0`` is 0 without a math error. A missing
attribute is such an operand error (spec section 3.2). AND and OR skip their right operand once
the left one decides the result, an erroneous left one included.

An operand reported an error when the error list grew while it was evaluated: every closure
compares the list's length before and after evaluating its operands.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

from eventferry.cesql.errors import MATH, MISSING_FUNCTION, CESQLError
from eventferry.cesql.functions import Function
from eventferry.cesql.nodes import Event, Node, caster, precast
from eventferry.cesql.values import (
    ZERO,
    Caster,
    Errors,
    Type,
    Value,
    implicit_cast,
    to_boolean,
    to_integer,
    to_string,
    type_of,
    wrap_int32,
)

# Unary operators


def logical_not(operand: Node) -> Node:
    fn = operand.fn

    def not_(event: Event, errors: Errors) -> Value:
        count = len(errors)
        value = fn(event, errors)
        if len(errors) != count:
            return False
        return not to_boolean(value, errors)

    return Node(not_, Type.BOOLEAN)


def negate(operand: Node) -> Node:
    fn = operand.fn

    def negate(event: Event, errors: Errors) -> Value:
        count = len(errors)
        value = fn(event, errors)
        if len(errors) != count:
            return 0
        return wrap_int32(-to_integer(value, errors), errors, "negation")

    return Node(negate, Type.INTEGER)


# LIKE and IN


def like(operand: Node, matcher: Callable[[str], bool], negated: bool) -> Node:
    fn = operand.fn

    def like(event: Event, errors: Errors) -> Value:
        count = len(errors)
        value = fn(event, errors)
        if len(errors) != count:
            return False
        return matcher(to_string(value)) != negated

    return Node(like, Type.BOOLEAN)


def in_set(left: Node, members: list[Node], negated: bool) -> Node:
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
    fn = left.fn

    def in_constants(event: Event, errors: Errors) -> Value:
        count = len(errors)
        value = fn(event, errors)
        if len(errors) != count:
            return False
        values, cast_errors = sets[type_of(value)]
        if cast_errors:
            errors.extend(cast_errors)
        return (value in values) != negated

    return Node(in_constants, Type.BOOLEAN)


def _in_expressions(left: Node, members: list[Node], negated: bool) -> Node:
    fn = left.fn
    member_fns = [member.fn for member in members]

    def in_expressions(event: Event, errors: Errors) -> Value:
        count = len(errors)
        value = fn(event, errors)
        candidates = [member_fn(event, errors) for member_fn in member_fns]
        if len(errors) != count:
            return False
        target = type_of(value)
        # Every member is cast, so that each cast error is reported, not only those before a match.
        found = [implicit_cast(candidate, target, errors) == value for candidate in candidates]
        return any(found) != negated

    return Node(in_expressions, Type.BOOLEAN)


# Comparisons


def equality(left: Node, right: Node, negated: bool) -> Node:
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

    cast_left = caster(left, right.type)
    literal = right.constant
    if literal is not None:

        def equal_literal(event: Event, errors: Errors) -> Value:
            count = len(errors)
            a = left_fn(event, errors)
            if len(errors) != count:
                return False
            return (cast_left(a, errors) == literal) != negated

        return Node(equal_literal, Type.BOOLEAN)

    def equal(event: Event, errors: Errors) -> Value:
        count = len(errors)
        a, b = left_fn(event, errors), right_fn(event, errors)
        if len(errors) != count:
            return False
        return (cast_left(a, errors) == b) != negated

    return Node(equal, Type.BOOLEAN)


ORDERINGS: dict[str, Callable[[int, int], bool]] = {
    "LT": operator.lt, "LE": operator.le, "GT": operator.gt, "GE": operator.ge,
}


def ordering(left: Node, right: Node, compare: Callable[[int, int], bool]) -> Node:
    """``<``, ``<=``, ``>`` and ``>=`` exist for Integers only: both operands are cast to Integer."""
    left_fn, right_fn = left.fn, right.fn
    literal = precast(right, Type.INTEGER)
    if literal is not None:
        bound = int(literal)

        def compare_literal(event: Event, errors: Errors) -> Value:
            count = len(errors)
            a = left_fn(event, errors)
            if len(errors) != count:
                return False
            return compare(to_integer(a, errors), bound)

        return Node(compare_literal, Type.BOOLEAN)

    def compare_values(event: Event, errors: Errors) -> Value:
        count = len(errors)
        a, b = left_fn(event, errors), right_fn(event, errors)
        if len(errors) != count:
            return False
        return compare(to_integer(a, errors), to_integer(b, errors))

    return Node(compare_values, Type.BOOLEAN)


# Arithmetic


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


ARITHMETIC: dict[str, Callable[[int, int, Errors], int]] = {
    "PLUS": lambda a, b, errors: wrap_int32(a + b, errors, "addition"),
    "MINUS": lambda a, b, errors: wrap_int32(a - b, errors, "subtraction"),
    "STAR": lambda a, b, errors: wrap_int32(a * b, errors, "multiplication"),
    "SLASH": _divide,
    "PERCENT": _modulo,
}


def arithmetic(left: Node, compute: Callable[[int, int, Errors], int], right: Node) -> Node:
    left_fn, right_fn = left.fn, right.fn

    def arithmetic(event: Event, errors: Errors) -> Value:
        count = len(errors)
        a, b = left_fn(event, errors), right_fn(event, errors)
        if len(errors) != count:
            return 0
        return compute(to_integer(a, errors), to_integer(b, errors), errors)

    return Node(arithmetic, Type.INTEGER)


# Logic: a run of ANDs or of ORs is one n-ary closure, which behaves exactly as the nested binary
# operators, errors included, but runs as one loop and does not nest deeply for long filters.


def _truth_tests(operands: list[Node]) -> list[tuple[Callable[[Event, Errors], Value], Caster]]:
    # Most operands are comparisons, already Boolean: no cast to call for them.
    return [(operand.fn, caster(operand, Type.BOOLEAN)) for operand in operands]


def logical_and(operands: list[Node]) -> Node:
    parts = _truth_tests(operands)

    def and_(event: Event, errors: Errors) -> Value:
        count = len(errors)
        for fn, truth in parts:
            value = fn(event, errors)
            # An operand error, or a false operand (a failed cast included): false, and stop there.
            if len(errors) != count or not truth(value, errors):
                return False
        return True

    return Node(and_, Type.BOOLEAN)


def logical_or(operands: list[Node]) -> Node:
    parts = _truth_tests(operands)
    last = len(parts) - 1

    def or_(event: Event, errors: Errors) -> Value:
        start = len(errors)
        for index, (fn, truth) in enumerate(parts):
            count = len(errors)
            value = fn(event, errors)
            if len(errors) != count:
                return False
            holds = truth(value, errors)
            # As in nested ORs: a failed cast of an operand makes it false, then every OR above it
            # has an erroneous left operand and yields false; only the last OR returns its result.
            if 0 < index < last and len(errors) != start:
                return False
            if holds:
                return True
        return False

    return Node(or_, Type.BOOLEAN)


def logical_xor(left: Node, right: Node) -> Node:
    left_fn, right_fn = left.fn, right.fn
    left_truth, right_truth = caster(left, Type.BOOLEAN), caster(right, Type.BOOLEAN)

    def xor(event: Event, errors: Errors) -> Value:
        count = len(errors)
        a, b = left_fn(event, errors), right_fn(event, errors)
        if len(errors) != count:
            return False
        return left_truth(a, errors) != right_truth(b, errors)

    return Node(xor, Type.BOOLEAN)


# Function invocations


def invocation(function: Function, arguments: list[Node]) -> Node:
    argument_fns = [argument.fn for argument in arguments]
    casts = [caster(argument, function.parameter(index)) for index, argument in enumerate(arguments)]
    zero, call = ZERO[function.returns], function.call

    def invoke(event: Event, errors: Errors) -> Value:
        count = len(errors)
        values = [fn(event, errors) for fn in argument_fns]
        if len(errors) != count:
            return zero
        return call([cast(value, errors) for cast, value in zip(casts, values, strict=True)], errors)

    return Node(invoke, function.returns)


def missing_function(name: str, arity: int) -> Node:
    # Reported per evaluation, not at compile time: the TCK expects a missingFunction error, and false.
    error = CESQLError(MISSING_FUNCTION, f"no function {name.upper()} takes {arity} argument(s)")

    def missing(event: Event, errors: Errors) -> Value:
        errors.append(error)
        return False

    return Node(missing, Type.BOOLEAN)
