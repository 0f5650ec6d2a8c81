"""The errors of CESQL: one exception for invalid syntax, plain values for evaluation errors.

Evaluation never raises: CESQL is total, so an operator or function that fails still yields a value
(the zero value of its type, unless the spec names another) and the failure is collected beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

ErrorKind = Literal[
    "parse", "math", "cast", "missingFunction", "functionEvaluation", "missingAttribute", "generic",
]

PARSE: Final = "parse"
MATH: Final = "math"
CAST: Final = "cast"
MISSING_FUNCTION: Final = "missingFunction"
FUNCTION_EVALUATION: Final = "functionEvaluation"
MISSING_ATTRIBUTE: Final = "missingAttribute"
GENERIC: Final = "generic"


@dataclass(frozen=True, slots=True)
class CESQLError:
    """One error met while evaluating an expression; ``kind`` uses the names of the CESQL TCK."""

    kind: ErrorKind
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class CESQLParseError(ValueError):
    """Invalid syntax, located at the offending token (1-based line and column)."""

    kind: Final = PARSE

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.message = message
        self.line = line
        self.column = column
