"""Graders: how one model reply is scored against the expected one.

Each grader gives a score in [0, 1] and a pass/fail verdict. ``string_check`` follows
OpenAI's grader of that name (``eq``, ``ne``, ``like`` = contains, ``ilike`` = contains
ignoring case); replies are compared with surrounding whitespace stripped, since a
generated reply often ends in a newline its reference lacks. ``json_match`` parses both
sides: whole-object equality passes, and the score is the share of expected keys whose
values match, so a reply with one wrong field out of five scores 0.8. Similarity uses
rapidfuzz's normalized Indel ratio, which is well tested and fast on long text.
``tool_call_match`` reads calls out of both sides in the format models are trained on
(``providers/chat_format.py``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from rapidfuzz import fuzz

from tuneforge.providers.chat_format import ToolCall, split_tool_calls

StringOperation = Literal["eq", "ne", "like", "ilike"]


@dataclass(frozen=True)
class Grade:
    score: float
    passed: bool
    detail: str | None = None


class _Grader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, max_length=100, description="Label in results.")

    @property
    def label(self) -> str:
        return self.name or self.describe()

    def describe(self) -> str:
        raise NotImplementedError

    def grade(self, reply: str, expected: str) -> Grade:
        raise NotImplementedError


class StringCheck(_Grader):
    type: Literal["string_check"] = "string_check"
    operation: StringOperation = "eq"

    def describe(self) -> str:
        return "exact match" if self.operation == "eq" else f"string {self.operation}"

    def grade(self, reply: str, expected: str) -> Grade:
        reply, expected = reply.strip(), expected.strip()
        if self.operation == "eq":
            passed = reply == expected
        elif self.operation == "ne":
            passed = reply != expected
        elif self.operation == "like":
            passed = expected in reply
        else:
            passed = expected.casefold() in reply.casefold()
        return Grade(float(passed), passed)


class JsonMatch(_Grader):
    type: Literal["json_match"] = "json_match"

    def describe(self) -> str:
        return "JSON match"

    def grade(self, reply: str, expected: str) -> Grade:
        try:
            want = json.loads(expected)
        except ValueError:
            return Grade(0.0, False, "the expected reply is not JSON")
        try:
            got = json.loads(reply)
        except ValueError as exc:
            return Grade(0.0, False, f"not JSON: {exc}")
        if got == want:
            return Grade(1.0, True)
        if isinstance(want, dict) and isinstance(got, dict) and want:
            matching = [key for key, value in want.items() if key in got and got[key] == value]
            wrong = sorted(set(want) - set(matching))
            return Grade(len(matching) / len(want), False, f"keys differ: {', '.join(wrong)}")
        return Grade(0.0, False, "different JSON value")


class ValidJson(_Grader):
    type: Literal["valid_json"] = "valid_json"

    def describe(self) -> str:
        return "valid JSON"

    def grade(self, reply: str, expected: str) -> Grade:
        try:
            json.loads(reply)
        except ValueError as exc:
            return Grade(0.0, False, str(exc))
        return Grade(1.0, True)


class Contains(_Grader):
    """Passes when the reply contains ``text``, or the expected reply when ``text`` is unset."""

    type: Literal["contains"] = "contains"
    text: str | None = Field(default=None, max_length=10_000)
    ignore_case: bool = False

    def describe(self) -> str:
        return f"contains {self.text!r}" if self.text else "contains the expected reply"

    def grade(self, reply: str, expected: str) -> Grade:
        needle = self.text if self.text is not None else expected.strip()
        passed = needle.casefold() in reply.casefold() if self.ignore_case else needle in reply
        return Grade(float(passed), passed)


class RegexMatch(_Grader):
    type: Literal["regex"] = "regex"
    pattern: str = Field(min_length=1, max_length=1_000)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return pattern

    def describe(self) -> str:
        return f"matches /{self.pattern}/"

    def grade(self, reply: str, expected: str) -> Grade:
        passed = re.search(self.pattern, reply) is not None
        return Grade(float(passed), passed)


class Similarity(_Grader):
    type: Literal["similarity"] = "similarity"
    pass_threshold: float = Field(default=0.8, ge=0, le=1, allow_inf_nan=False)

    def describe(self) -> str:
        return "text similarity"

    def grade(self, reply: str, expected: str) -> Grade:
        score = fuzz.ratio(reply.strip(), expected.strip()) / 100.0
        return Grade(score, score >= self.pass_threshold)


class ToolCallMatch(_Grader):
    """The same calls (function names, in order) with the same parsed arguments. The score
    is the share of expected calls made, each weighted by the share of its arguments that
    match; a reply that should be plain text scores 1 when it makes no call."""

    type: Literal["tool_call_match"] = "tool_call_match"

    def describe(self) -> str:
        return "tool call match"

    def grade(self, reply: str, expected: str) -> Grade:
        _, got = split_tool_calls(reply)
        _, want = split_tool_calls(expected)
        if not want:
            passed = not got
            return Grade(float(passed), passed, None if passed else "made a call; none was due")
        if not got:
            return Grade(0.0, False, "made no tool call")
        scores = []
        for wanted, made in zip(want, got, strict=False):
            if made.name != wanted.name:
                scores.append(0.0)
                continue
            keys = set(wanted.arguments) | set(made.arguments)
            same = [k for k in keys if wanted.arguments.get(k) == made.arguments.get(k)]
            scores.append(len(same) / len(keys) if keys else 1.0)
        score = sum(scores) / max(len(want), len(got))
        passed = got == want
        detail = None if passed else f"expected {_names(want)}, got {_names(got)}"
        return Grade(score, passed, detail)


def _names(calls: list[ToolCall]) -> str:
    return ", ".join(
        f"{call.name}({json.dumps(call.arguments, ensure_ascii=False)})" for call in calls
    )


Grader = Annotated[
    StringCheck | JsonMatch | ValidJson | Contains | RegexMatch | Similarity | ToolCallMatch,
    Field(discriminator="type"),
]

SHORT_LABEL_CHARACTERS = 40


def grader_for(
    expected_replies: list[str],
) -> StringCheck | JsonMatch | Similarity | ToolCallMatch:
    """The grader the data calls for: tool call match when replies make calls, JSON match
    when every expected reply is a JSON object or array, exact match when they are short
    labels, similarity otherwise."""
    replies = [reply.strip() for reply in expected_replies if reply.strip()]
    if any(split_tool_calls(reply)[1] for reply in replies):
        return ToolCallMatch()
    if replies and all(_is_json_document(reply) for reply in replies):
        return JsonMatch()
    if replies and all(
        len(reply) <= SHORT_LABEL_CHARACTERS and "\n" not in reply for reply in replies
    ):
        return StringCheck(operation="eq")
    return Similarity()


def _is_json_document(text: str) -> bool:
    if not text.startswith(("{", "[")):
        return False
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        return False
    return isinstance(parsed, dict | list)
