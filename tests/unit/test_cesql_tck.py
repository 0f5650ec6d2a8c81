"""The CESQL evaluator against every case of the CloudEvents SQL conformance kit (TCK), and our own cases.

The kit lives in ``shared/`` beside the repository; a missing or empty kit fails these tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from eventferry.cesql import CESQLParseError, compile_expression

pytestmark = pytest.mark.unit

TCK = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "cesql-tck"

# Any valid event will do when a case gives none (README of the kit); overrides are merged into it.
DEFAULT_EVENT = {"specversion": "1.0", "id": "id", "source": "source", "type": "type"}


class _JSONLikeLoader(yaml.SafeLoader):
    """YAML without timestamps: the kit's events are JSON, where ``time`` is a string."""


_JSONLikeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class TckCase(NamedTuple):
    id: str
    expression: str
    has_result: bool
    result: Any
    error: str | None
    event: dict[str, Any]


def load_cases() -> tuple[list[Path], list[TckCase]]:
    files = sorted(TCK.glob("*.yaml"))
    cases = []
    for path in files:
        suite = yaml.load(path.read_text(encoding="utf-8"), Loader=_JSONLikeLoader)
        for test in suite["tests"]:
            event = dict(test["event"]) if "event" in test else dict(DEFAULT_EVENT)
            event.update(test.get("eventOverrides") or {})
            cases.append(
                TckCase(
                    id=f"{path.stem}: {test['name']}",
                    expression=str(test["expression"]),
                    has_result="result" in test,
                    result=test.get("result"),
                    error=test.get("error"),
                    event=event,
                )
            )
    return files, cases


FILES, CASES = load_cases()


def test_the_conformance_kit_is_there() -> None:
    assert len(FILES) > 0, f"no CESQL TCK file under {TCK}"
    assert len(CASES) > 100, f"only {len(CASES)} CESQL TCK cases under {TCK}"


# With no case at all, one failing placeholder rather than pytest's silent skip of an empty parameter set.
@pytest.mark.parametrize(
    "case", CASES or [pytest.param(None, id="no-tck-case")], ids=lambda case: case.id if case else "none"
)
def test_tck_case(case: TckCase | None) -> None:
    assert case is not None, f"no CESQL TCK case under {TCK}"
    if case.error == "parse":
        with pytest.raises(CESQLParseError):
            compile_expression(case.expression)
        return
    value, errors = compile_expression(case.expression).evaluate(case.event)
    if case.has_result:
        # The type matters too: in Python True == 1 and False == 0.
        assert (type(value), value) == (type(case.result), case.result)
    assert [error.kind for error in errors] == ([case.error] if case.error else [])


# Our own cases


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("type = 'a' AND\n  myint >> 5", 2, 10),
        ("ABC(", 1, 5),
        ("subject = 'unterminated", 1, 11),
        ("x LIKE 123", 1, 8),
        ("n = 2147483648", 1, 5),
        ("EXISTS my_ext", 1, 8),
        ("", 1, 1),
    ],
)
def test_parse_errors_point_at_the_offending_token(text: str, line: int, column: int) -> None:
    with pytest.raises(CESQLParseError) as caught:
        compile_expression(text)
    error = caught.value
    assert (error.line, error.column) == (line, column)
    assert str(error) == f"line {line}, column {column}: {error.message}"
    assert isinstance(error, ValueError)


def test_the_most_negative_integer_is_a_valid_literal() -> None:
    assert compile_expression("-2147483648").evaluate({}) == (-(2**31), [])


@pytest.mark.parametrize(
    ("text", "event"),
    [
        ("myint > 5", {"myint": "10"}),
        ("myint > 5", {"myint": 10}),
        ("sequence = 5", {"sequence": "5"}),
        ("5 = sequence", {"sequence": "5"}),
        ("mybool", {"mybool": "true"}),
        ("mybool", {"mybool": True}),
        ("mybool = TRUE", {"mybool": "TRUE"}),
        ("type = 'com.example.a' AND myint > 5", {"type": "com.example.a", "myint": "10"}),
        ("hop < ttl", {"hop": "5", "ttl": "10"}),
        ("myint IN (1, 10, 100)", {"myint": "10"}),
        ("time LIKE '2018-%'", {"time": "2018-04-26T14:48:09Z"}),
    ],
)
def test_matches_binary_and_structured_mode_attributes(text: str, event: dict[str, object]) -> None:
    assert compile_expression(text).matches(event)


@pytest.mark.parametrize(
    ("text", "event"),
    [
        ("myint > 5", {"myint": "abc"}),  # false with a cast error
        ("INT(myint) = 0", {"myint": "abc"}),  # a cast error
        ("(missing = 1) OR TRUE", {}),  # a missing attribute error
        ("1 / 0 = 0", {}),  # a math error
        ("LEFT('abc', -1) = 'abc'", {}),  # a function evaluation error
        ("NOWHERE(1)", {}),  # missing function
        ("missing", {}),
    ],
)
def test_matches_is_false_on_evaluation_errors(text: str, event: dict[str, object]) -> None:
    expression = compile_expression(text)
    assert expression.evaluate(event)[1], "the case should raise an evaluation error"
    assert not expression.matches(event)


@pytest.mark.parametrize(
    ("text", "event"),
    [("1", {}), ("'true'", {}), ("LENGTH(type)", {"type": "a"}), ("myint", {"myint": 1}), ("mybool", {"mybool": "no"})],
)
def test_matches_is_false_for_non_boolean_results(text: str, event: dict[str, object]) -> None:
    assert not compile_expression(text).matches(event)


@pytest.mark.parametrize(
    ("text", "value", "kinds"),
    [
        # AND, OR and XOR share one precedence level and group left to right (spec 3.6).
        ("TRUE OR TRUE AND FALSE", False, []),
        # Unary operators bind tighter than binary ones: this is (NOT 'a') = 'b'.
        ("NOT 'a' = 'b'", False, ["cast"]),
        ("NOT ('a' = 'b')", True, []),
        ("2147483647 + 1", -(2**31), ["math"]),
        ("-7 / 2", -3, []),
        ("-7 % 2", -1, []),
        ("7 % -2", 1, []),
        ("'a%c' LIKE 'a\\%c'", True, []),
        ("'abc' LIKE 'a\\%c'", False, []),
        ("TRIM('\u00a0 x \u3000')", "x", []),
        ("RIGHT('abc', 0)", "", []),
        ("IS_INT('-12') AND IS_BOOL('False') AND IS_STRING('x') AND NOT IS_INT('1.5')", True, []),
        ("IS_INT(TRUE) OR IS_BOOL(1) OR IS_STRING(1)", False, []),
        ("1 IN ('a', 1)", True, ["cast"]),
        ("CONCAT_WS('-', 1, TRUE, 'x')", "1-true-x", []),
        ("LENGTH(missing) + 1", 0, ["missingAttribute"]),
        ("ABS(-5) * 2 = 10 AND lower('ABC') = 'abc'", True, []),
    ],
)
def test_semantics(text: str, value: object, kinds: list[str]) -> None:
    result, errors = compile_expression(text).evaluate({"id": "x"})
    assert (type(result), result) == (type(value), value)
    assert [error.kind for error in errors] == kinds


def test_the_data_attribute_is_not_addressable() -> None:
    event = {"id": "x", "data": "payload"}
    assert compile_expression("EXISTS data").evaluate(event) == (False, [])
    value, errors = compile_expression("data = 'payload'").evaluate(event)
    assert (value, [error.kind for error in errors]) == (False, ["missingAttribute"])


def test_other_attribute_types_are_strings() -> None:
    event = {"big": 2**40, "ratio": 1.5}
    assert compile_expression("big = '1099511627776' AND ratio = '1.5'").evaluate(event) == (True, [])


def test_long_and_or_runs_compile_flat_while_deep_nesting_is_a_parse_error() -> None:
    chain = " OR ".join(f"id = 'id{n}'" for n in range(2000))
    assert compile_expression(chain).matches({"id": "id1999"})
    with pytest.raises(CESQLParseError, match="nested more than"):
        compile_expression("NOT " * 1000 + "TRUE")


def test_keywords_and_function_names_ignore_case() -> None:
    expression = compile_expression("NoT (LoWeR(Type) lIkE 'a%' aNd exists ID) Or Length(id) In (2)")
    assert expression.evaluate({"id": "ab", "type": "Abc"}) == (True, [])


def test_a_keyword_is_never_read_as_an_attribute() -> None:
    with pytest.raises(CESQLParseError) as raised:
        compile_expression("type = 'a' AND AND")
    assert (raised.value.line, raised.value.column) == (1, 16)
    assert compile_expression("android = 'x' OR notes = 'y'").matches({"android": "x"})
