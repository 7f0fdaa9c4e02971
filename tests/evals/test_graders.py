"""Graders on known cases: exact and fuzzy text, JSON (malformed too), unicode."""

from __future__ import annotations

import json

import pytest
from pydantic import TypeAdapter, ValidationError

from tuneforge.evals.graders import (
    Contains,
    Grader,
    JsonMatch,
    RegexMatch,
    Similarity,
    StringCheck,
    ToolCallMatch,
    ValidJson,
    grader_for,
)


@pytest.mark.parametrize(
    ("operation", "reply", "expected", "passed"),
    [
        ("eq", "billing\n", "billing", True),
        ("eq", "Billing", "billing", False),
        ("ne", "billing", "shipping", True),
        ("like", "it is billing.", "billing", True),
        ("like", "it is Billing.", "billing", False),
        ("ilike", "it is BILLING.", "billing", True),
        ("eq", "Größe", "Größe", True),
        ("ilike", "STRASSE", "straße", True),  # casefold: ß is ss
    ],
)
def test_string_check_follows_openais_operations(
    operation: str, reply: str, expected: str, passed: bool
) -> None:
    grade = StringCheck(operation=operation).grade(reply, expected)  # type: ignore[arg-type]
    assert (grade.passed, grade.score) == (passed, float(passed))


def test_json_match_scores_whole_objects_and_each_key() -> None:
    grader = JsonMatch()
    expected = '{"order_id": "42", "issue": "damaged", "urgent": true, "note": "café ☕"}'
    assert grader.grade(
        '{"note":"café ☕","urgent":true,"issue":"damaged","order_id":"42"}', expected
    ).passed
    partial = grader.grade('{"order_id": "42", "issue": "missing", "urgent": true}', expected)
    assert not partial.passed and partial.score == 0.5
    assert partial.detail == "keys differ: issue, note"
    malformed = grader.grade('{"order_id": "42", "issue": ', expected)
    assert (malformed.passed, malformed.score) == (False, 0.0)
    assert malformed.detail and malformed.detail.startswith("not JSON")
    assert grader.grade("[1, 2]", "[1, 2]").passed
    assert grader.grade("[2, 1]", "[1, 2]").score == 0.0
    assert grader.grade("{}", "not json").detail == "the expected reply is not JSON"


def test_valid_json_contains_and_regex() -> None:
    assert ValidJson().grade('{"a": [1, "ü"]}', "").passed
    assert not ValidJson().grade("{'a': 1}", "").passed
    assert Contains(text="[EMAIL]").grade("write to [EMAIL] now", "").passed
    assert Contains().grade("Answer: 42.", "42").passed
    assert Contains(text="ÉTÉ", ignore_case=True).grade("un bel été", "").passed
    assert RegexMatch(pattern=r"^\d{5}$").grade("12345", "").passed
    assert not RegexMatch(pattern=r"^\d{5}$").grade("1234", "").passed
    with pytest.raises(ValidationError, match="regular expression"):
        RegexMatch(pattern="(")


def test_similarity_is_a_normalized_ratio_with_a_threshold() -> None:
    grader = Similarity(pass_threshold=0.9)
    assert grader.grade("Hello [NAME]!", "Hello [NAME]!").score == 1.0
    close = grader.grade("Hello [NAME].", "Hello [NAME]!")
    assert 0.9 <= close.score < 1.0 and close.passed
    assert not grader.grade("something else", "Hello [NAME]!").passed


def test_graders_parse_from_their_json_spec_by_type() -> None:
    adapter = TypeAdapter(list[Grader])
    graders = adapter.validate_python(
        [{"type": "string_check", "operation": "ilike"}, {"type": "similarity", "name": "sim"}]
    )
    assert isinstance(graders[0], StringCheck) and graders[0].operation == "ilike"
    assert graders[1].label == "sim" and graders[0].label == "string ilike"
    with pytest.raises(ValidationError):
        adapter.validate_python([{"type": "bleu"}])


def test_the_data_picks_the_grader() -> None:
    assert isinstance(grader_for(['{"a": 1}', '[{"b": 2}]']), JsonMatch)
    assert isinstance(grader_for(["billing", "shipping"]), StringCheck)
    assert isinstance(grader_for(["A long rewritten sentence with [NAME] in it, " * 2]), Similarity)
    assert isinstance(grader_for(['{"a": 1}', "billing"]), StringCheck)


def call(name: str, **arguments: object) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


@pytest.mark.parametrize(
    ("reply", "expected", "score", "passed"),
    [
        (call("get_order", id=42), call("get_order", id=42), 1.0, True),
        ("Sure.\n" + call("get_order", id=42), call("get_order", id=42), 1.0, True),
        (
            call("get_order", id=41, verbose=True),
            call("get_order", id=42, verbose=True),
            0.5,
            False,
        ),
        (call("refund", id=42), call("get_order", id=42), 0.0, False),
        ("It is on its way.", call("get_order", id=42), 0.0, False),
        ("<tool_call>{not json</tool_call>", call("get_order", id=42), 0.0, False),
        (call("get_order", id=42), call("get_order", id=42) + call("refund", id=42), 0.5, False),
        ("Hello!", "Hi there", 1.0, True),  # no call was due and none was made
        (call("get_order", id=1), "Hi there", 0.0, False),
        (call("lookup", city="Zürich"), call("lookup", city="Zürich"), 1.0, True),
    ],
)
def test_tool_call_match_compares_names_and_parsed_arguments(
    reply: str, expected: str, score: float, passed: bool
) -> None:
    grade = ToolCallMatch().grade(reply, expected)
    assert (grade.score, grade.passed) == (pytest.approx(score), passed)


def test_replies_that_make_calls_are_graded_by_tool_call_match() -> None:
    assert isinstance(grader_for([call("f", a=1), "No tool needed."]), ToolCallMatch)
