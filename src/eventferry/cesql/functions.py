"""The built-in functions of CESQL v1 (spec section 3.5) and their dispatch by name and arity.

Each function receives arguments already cast to its parameter types and returns a value of its
return type even when it fails, reporting the failure in ``errors`` (spec section 3.5.3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eventferry.cesql.errors import FUNCTION_EVALUATION, MATH, CESQLError
from eventferry.cesql.values import (
    INT_MAX,
    INT_MIN,
    Errors,
    Type,
    Value,
    parse_bool,
    parse_int,
    to_boolean_explicit,
    to_integer,
    to_string,
)

Implementation = Callable[[Sequence[Value], Errors], Value]

# Unicode's White_Space property; str.strip() would also remove U+001C..U+001F, which the spec keeps.
WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    parameters: tuple[Type, ...]
    # The type of the arguments after the fixed ones, for a variadic function.
    variadic: Type | None
    returns: Type
    call: Implementation

    def parameter(self, index: int) -> Type:
        if index < len(self.parameters):
            return self.parameters[index]
        assert self.variadic is not None
        return self.variadic


def _error(errors: Errors, message: str) -> None:
    errors.append(CESQLError(FUNCTION_EVALUATION, message))


def _abs(args: Sequence[Value], errors: Errors) -> Value:
    number = int(args[0])
    if number == INT_MIN:
        errors.append(CESQLError(MATH, f"ABS({INT_MIN}) overflows 32 bits"))
        return INT_MAX
    return abs(number)


def _length(args: Sequence[Value], errors: Errors) -> Value:
    return len(str(args[0]))


def _concat(args: Sequence[Value], errors: Errors) -> Value:
    return "".join(str(arg) for arg in args)


def _concat_ws(args: Sequence[Value], errors: Errors) -> Value:
    return str(args[0]).join(str(arg) for arg in args[1:])


def _lower(args: Sequence[Value], errors: Errors) -> Value:
    return str(args[0]).lower()


def _upper(args: Sequence[Value], errors: Errors) -> Value:
    return str(args[0]).upper()


def _trim(args: Sequence[Value], errors: Errors) -> Value:
    return str(args[0]).strip(WHITESPACE)


def _left(args: Sequence[Value], errors: Errors) -> Value:
    text, count = str(args[0]), int(args[1])
    if count < 0:
        _error(errors, f"LEFT: negative length {count}")
        return text
    return text[:count]


def _right(args: Sequence[Value], errors: Errors) -> Value:
    text, count = str(args[0]), int(args[1])
    if count < 0:
        _error(errors, f"RIGHT: negative length {count}")
        return text
    # text[-0:] would be the whole string, not the last zero characters.
    return text[len(text) - count :] if count < len(text) else text


def _substring(args: Sequence[Value], errors: Errors) -> Value:
    text, position = str(args[0]), int(args[1])
    length = int(args[2]) if len(args) > 2 else None
    if position > len(text) or position < -len(text):
        _error(errors, f"SUBSTRING: position {position} is outside a string of length {len(text)}")
        return ""
    if length is not None and length < 0:
        _error(errors, f"SUBSTRING: negative length {length}")
        return ""
    if position == 0:
        return ""
    # Positions count from 1; a negative one counts back from the end.
    start = position - 1 if position > 0 else len(text) + position
    return text[start:] if length is None else text[start : start + length]


def _int(args: Sequence[Value], errors: Errors) -> Value:
    return to_integer(args[0], errors)


def _bool(args: Sequence[Value], errors: Errors) -> Value:
    return to_boolean_explicit(args[0], errors)


def _string(args: Sequence[Value], errors: Errors) -> Value:
    return to_string(args[0])


# The IS_ tests tell what a value holds, as the SDKs do with a String parameter: an Integer, or a
# String that is one; a Boolean, or a String spelling true or false. IS_STRING is true for Strings,
# hence for every attribute of an event in HTTP binary mode.
def _is_int(args: Sequence[Value], errors: Errors) -> Value:
    value = args[0]
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or parse_int(value) is not None


def _is_bool(args: Sequence[Value], errors: Errors) -> Value:
    value = args[0]
    return isinstance(value, bool) or (isinstance(value, str) and parse_bool(value) is not None)


def _is_string(args: Sequence[Value], errors: Errors) -> Value:
    return isinstance(args[0], str)


_S, _I, _B, _ANY = Type.STRING, Type.INTEGER, Type.BOOLEAN, Type.ANY

BUILTINS: tuple[Function, ...] = (
    Function("ABS", (_I,), None, _I, _abs),
    Function("LENGTH", (_S,), None, _I, _length),
    Function("CONCAT", (), _S, _S, _concat),
    Function("CONCAT_WS", (_S,), _S, _S, _concat_ws),
    Function("LOWER", (_S,), None, _S, _lower),
    Function("UPPER", (_S,), None, _S, _upper),
    Function("TRIM", (_S,), None, _S, _trim),
    Function("LEFT", (_S, _I), None, _S, _left),
    Function("RIGHT", (_S, _I), None, _S, _right),
    Function("SUBSTRING", (_S, _I), None, _S, _substring),
    Function("SUBSTRING", (_S, _I, _I), None, _S, _substring),
    Function("INT", (_ANY,), None, _I, _int),
    Function("BOOL", (_ANY,), None, _B, _bool),
    Function("STRING", (_ANY,), None, _S, _string),
    Function("IS_INT", (_ANY,), None, _B, _is_int),
    Function("IS_BOOL", (_ANY,), None, _B, _is_bool),
    Function("IS_STRING", (_ANY,), None, _B, _is_string),
)

_BY_NAME: dict[str, list[Function]] = {}
for _function in BUILTINS:
    _BY_NAME.setdefault(_function.name, []).append(_function)


def resolve(name: str, arity: int) -> Function | None:
    """The overload of ``name`` (any case) taking ``arity`` arguments: a fixed arity first, then a variadic one."""
    overloads = _BY_NAME.get(name.upper(), [])
    for function in overloads:
        if function.variadic is None and len(function.parameters) == arity:
            return function
    for function in overloads:
        if function.variadic is not None and len(function.parameters) <= arity:
            return function
    return None
