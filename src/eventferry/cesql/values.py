"""The three CESQL types and the casts between them (spec section 3.7).

Values are plain Python ``bool``, ``int`` and ``str``. ``bool`` is a subclass of ``int`` in Python,
so every type test here checks ``bool`` before ``int``.

Casts come in two strengths. Explicit casts (``INT``, ``BOOL``, ``STRING``) follow the spec's cast
table, Integer -> Boolean included. Implicit casts, made when an operator or function receives an
operand of another type, refuse Integer -> Boolean with a cast error: the TCK requires ``NOT 10``
to fail rather than treat a number as a truth value, while ``BOOL(10)`` and ``5 + TRUE`` succeed.
A failed cast yields the zero value of the target type, and evaluation goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Final

from eventferry.cesql.errors import CAST, MATH, CESQLError

Value = bool | int | str
Errors = list[CESQLError]

INT_MIN: Final = -(2**31)
INT_MAX: Final = 2**31 - 1


class Type(Enum):
    BOOLEAN = "Boolean"
    INTEGER = "Integer"
    STRING = "String"
    # Only attribute references have it: their type is the one of the value found in the event.
    ANY = "Any"


ZERO: Final[dict[Type, Value]] = {Type.BOOLEAN: False, Type.INTEGER: 0, Type.STRING: "", Type.ANY: False}


def type_of(value: Value) -> Type:
    if isinstance(value, bool):
        return Type.BOOLEAN
    if isinstance(value, int):
        return Type.INTEGER
    return Type.STRING


def in_range(number: int) -> bool:
    return INT_MIN <= number <= INT_MAX


def wrap_int32(number: int, errors: Errors, what: str) -> int:
    """Two's complement wrap-around, as 32-bit hardware does, with a math error so it never goes unnoticed."""
    if INT_MIN <= number <= INT_MAX:
        return number
    errors.append(CESQLError(MATH, f"integer overflow in {what}: {number} does not fit in 32 bits"))
    return (number - INT_MIN) % 2**32 + INT_MIN


def parse_int(text: str) -> int | None:
    """A 32-bit base 10 integer with an optional sign, nothing else (no blanks, no ``_``, ASCII digits)."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not (digits.isascii() and digits.isdigit()):
        return None
    number = int(text)
    return number if INT_MIN <= number <= INT_MAX else None


def parse_bool(text: str) -> bool | None:
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    return None


def to_string(value: Value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_integer(value: Value, errors: Errors) -> int:
    """Implicit and explicit cast to Integer: both accept Booleans (``5 + TRUE`` is 6)."""
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int):
        return value
    number = parse_int(value)
    if number is None:
        errors.append(CESQLError(CAST, f"cannot cast {value!r} to Integer"))
        return 0
    return number


def to_boolean(value: Value, errors: Errors) -> bool:
    """Implicit cast to Boolean: only from a String spelling true or false, in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        parsed = parse_bool(value)
        if parsed is not None:
            return parsed
        errors.append(CESQLError(CAST, f"cannot cast {value!r} to Boolean"))
        return False
    errors.append(CESQLError(CAST, f"cannot cast Integer {value} to Boolean implicitly; use BOOL()"))
    return False


def to_boolean_explicit(value: Value, errors: Errors) -> bool:
    """``BOOL(x)``: the full cast table, where a non-zero Integer is true."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value != 0
    return to_boolean(value, errors)


def _string_cast(value: Value, errors: Errors) -> Value:
    # The common case inline: attribute values already are strings in binary mode.
    return value if isinstance(value, str) else to_string(value)


def identity(value: Value, errors: Errors) -> Value:
    return value


Caster = Callable[[Value, Errors], Value]

IMPLICIT_CASTS: Final[dict[Type, Caster]] = {
    Type.BOOLEAN: to_boolean,
    Type.INTEGER: to_integer,
    Type.STRING: _string_cast,
    Type.ANY: identity,
}


def implicit_cast(value: Value, target: Type, errors: Errors) -> Value:
    return IMPLICIT_CASTS[target](value, errors)


def from_event(raw: object) -> Value | None:
    """An attribute value as CESQL sees it; ``None`` when absent.

    Binary mode delivers every attribute as a ``str`` and structured mode may deliver ``bool`` or
    ``int``; both are kept as they are and the operators cast them. Anything else, including an
    integer beyond 32 bits, is not a CESQL primitive and so is represented as a String (spec 3.2).
    """
    if isinstance(raw, str | bool):
        return raw
    if raw is None:
        return None
    if isinstance(raw, int):
        number = int(raw)
        return number if in_range(number) else str(number)
    if isinstance(raw, datetime):
        return raw.isoformat()
    return str(raw)
