"""LIKE patterns, turned into a string test once at compile time.

``%`` matches any run of characters, ``_`` exactly one, and a backslash makes the ``%`` or ``_`` that
follows it literal. A backslash before any other character is an ordinary character, as it is in
string literals (``'ab\\c' LIKE 'ab\\c'`` is true). Matching is case-sensitive.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_LITERAL = "literal"
_ANY_RUN = "%"
_ANY_CHAR = "_"


def _tokens(pattern: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and pattern[index + 1 : index + 2] in ("%", "_"):
            tokens.append((_LITERAL, pattern[index + 1]))
            index += 2
            continue
        tokens.append((char, char) if char in (_ANY_RUN, _ANY_CHAR) else (_LITERAL, char))
        index += 1
    return tokens


def compile_like(pattern: str) -> Callable[[str], bool]:
    tokens = _tokens(pattern)
    kinds = [kind for kind, _ in tokens]
    text = "".join(char for _, char in tokens)
    # Trigger filters are mostly exact, prefix, suffix or infix matches: plain str methods beat a regex.
    if _ANY_CHAR not in kinds and _ANY_RUN not in kinds:
        return text.__eq__
    if _ANY_CHAR not in kinds and kinds.count(_ANY_RUN) == 1:
        if kinds[-1] == _ANY_RUN:
            return lambda value: value.startswith(text[:-1])
        if kinds[0] == _ANY_RUN:
            return lambda value: value.endswith(text[1:])
    if _ANY_CHAR not in kinds and kinds.count(_ANY_RUN) == 2 and kinds[0] == kinds[-1] == _ANY_RUN:
        middle = text[1:-1]
        return lambda value: middle in value
    regex = "".join(
        ".*" if kind == _ANY_RUN else "." if kind == _ANY_CHAR else re.escape(char) for kind, char in tokens
    )
    return _fullmatch(re.compile(regex, re.DOTALL))


def _fullmatch(compiled: re.Pattern[str]) -> Callable[[str], bool]:
    match = compiled.fullmatch
    return lambda value: match(value) is not None
