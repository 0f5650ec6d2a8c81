"""The CESQL v1 grammar (spec section 2) for lark's LALR(1) parser, and syntax errors with positions.

Precedence follows spec section 3.6, tightest first: function invocations and literals, the unary
``NOT`` and ``-``, the postfix ``LIKE`` and ``IN``, ``* / %``, ``+ -``, comparisons, then ``AND``,
``OR`` and ``XOR`` together. Equal precedence groups left to right. The unary operators bind
tighter than every binary one, so ``NOT a = b`` reads ``(NOT a) = b``: write ``NOT (a = b)``.

``LIKE`` and ``IN`` share a level: both are postfix with an operand that cannot hold another
operator (a string literal, a parenthesised list), so one level parses every input the same way
as two would, and it spares LALR(1) the choice after ``x NOT`` between ``NOT LIKE`` and ``NOT IN``.
"""

from __future__ import annotations

from functools import cache

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from eventferry.cesql.errors import CESQLParseError

# Keywords are case-insensitive and outrank NAME; ``\b`` keeps ``android`` or ``INT`` a NAME.
# NAME needs one non-digit, so ``123`` lexes as an INTEGER while ``1abc`` stays an identifier.
GRAMMAR = r"""
?start: expr

// A run of binary operators of one level is one flat node: operand, operator, operand, ...
?expr: comparison | logic
logic: comparison ((AND | OR | XOR) comparison)+
?comparison: additive | compare
compare: additive ((EQ | NE | LE | GE | LT | GT) additive)+
?additive: multiplicative | sum
sum: multiplicative ((PLUS | MINUS) multiplicative)+                   -> arithmetic
?multiplicative: postfix | product
product: postfix ((STAR | SLASH | PERCENT) postfix)+                   -> arithmetic

?postfix: unary
     | postfix [NOT] LIKE string                            -> like
     | postfix [NOT] IN "(" expr ("," expr)* ")"            -> in_set

?unary: primary
     | NOT unary                                            -> not_
     | MINUS unary                                          -> negate

?primary: INTEGER                                           -> integer
     | PLUS INTEGER                                         -> integer
     | (TRUE | FALSE)                                       -> boolean
     | string
     | NAME                                                 -> attribute
     | EXISTS NAME                                          -> exists
     | NAME "(" [expr ("," expr)*] ")"                      -> call
     | "(" expr ")"

string: SQ_STRING | DQ_STRING

AND.3: /and\b/i
OR.3: /or\b/i
XOR.3: /xor\b/i
NOT.3: /not\b/i
LIKE.3: /like\b/i
IN.3: /in\b/i
EXISTS.3: /exists\b/i
TRUE.3: /true\b/i
FALSE.3: /false\b/i
NAME.2: /[0-9]*[A-Za-z_][A-Za-z0-9_]*/
INTEGER: /[0-9]+/
SQ_STRING: /'(?:[^'\\]|\\.)*'/s
DQ_STRING: /"(?:[^"\\]|\\.)*"/s

EQ: "="
NE: "!=" | "<>"
LE: "<="
GE: ">="
LT: "<"
GT: ">"
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
PERCENT: "%"

%ignore /\s+/
"""

# Compiled expressions are closures calling one another, a Python frame or two per level of nesting,
# and compiling recurses too: a bound keeps both far from the interpreter's recursion limit.
MAX_DEPTH = 100

# How terminals read in error messages.
_DISPLAY = {
    "AND": "AND", "OR": "OR", "XOR": "XOR", "NOT": "NOT", "LIKE": "LIKE", "IN": "IN", "EXISTS": "EXISTS",
    "TRUE": "TRUE", "FALSE": "FALSE", "NAME": "an identifier", "INTEGER": "an integer",
    "SQ_STRING": "a string", "DQ_STRING": "a string", "EQ": "'='", "NE": "'!='", "LE": "'<='", "GE": "'>='",
    "LT": "'<'", "GT": "'>'", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'",
    "PERCENT": "'%'", "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "$END": "the end of the expression",
}


@cache
def _parser() -> Lark:
    # Built on first use: the LALR tables take a few tens of milliseconds, once per process.
    # The basic lexer: a keyword is always a keyword, so "a = 1 AND AND" is a parse error, not an attribute "and".
    return Lark(GRAMMAR, parser="lalr", lexer="basic", maybe_placeholders=True)


def parse(text: str) -> Tree[Token]:
    """The parse tree of ``text``; raises CESQLParseError at the first offending token."""
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as error:
        raise _parse_error(error, text) from None
    _check_depth(tree)
    return tree


def _check_depth(tree: Tree[Token]) -> None:
    """Reject trees whose compiled closures would nest more than MAX_DEPTH calls deep."""
    pending: list[tuple[Tree[Token], int]] = [(tree, 0)]
    while pending:
        node, depth = pending.pop()
        depth += _levels(node)
        if depth > MAX_DEPTH:
            token = next(node.scan_values(lambda value: isinstance(value, Token)))
            raise CESQLParseError(
                f"expression nested more than {MAX_DEPTH} levels deep", token.line or 1, token.column or 1
            )
        pending.extend((child, depth) for child in node.children if isinstance(child, Tree))


def _levels(node: Tree[Token]) -> int:
    """The nested calls a node compiles to: a run of operators folds into one call per operator,
    except that a run of ANDs, or of ORs, is a single n-ary call."""
    if node.data in ("compare", "arithmetic"):
        return len(node.children) // 2
    if node.data == "logic":
        kinds = [child.type for child in node.children[1::2] if isinstance(child, Token)]
        return sum(1 for index, kind in enumerate(kinds) if kind == "XOR" or kinds[index - 1 : index] != [kind])
    return 1


def _parse_error(error: UnexpectedInput, text: str) -> CESQLParseError:
    if isinstance(error, UnexpectedToken):
        token = error.token
        expected = _expected(error.accepts or error.expected)
        if token.type == "$END":
            # Lark gives the end marker the position of the last token; point just past that token.
            line, column = token.end_line or 1, token.end_column or 1
            return CESQLParseError(f"unexpected end of expression; expected {expected}", line, column)
        return CESQLParseError(f"unexpected {str(token)!r}; expected {expected}", token.line or 1, token.column or 1)
    if isinstance(error, UnexpectedCharacters):
        position = error.pos_in_stream or 0
        char = text[position : position + 1]
        problem = "unterminated string" if char in ("'", '"') else f"unexpected character {char!r}"
        return CESQLParseError(problem, error.line, error.column)
    return CESQLParseError(str(error), error.line or 1, error.column or 1)


def _expected(terminals: set[str]) -> str:
    names = sorted({_DISPLAY.get(name, name) for name in terminals})
    return names[0] if len(names) == 1 else "one of " + ", ".join(names)

