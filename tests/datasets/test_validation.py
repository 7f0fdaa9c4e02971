from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bpe_openai
import numpy as np
import pytest

from tuneforge.datasets.checks import validate_chat_example
from tuneforge.datasets.parsing import RawExample, read_examples
from tuneforge.datasets.tokens import BpeTokenCounter
from tuneforge.datasets.validation import (
    MAX_WARNING_SAMPLES,
    ReportBuilder,
    ValidationReport,
    default_epochs,
)
from tuneforge.db.tables.datasets import DatasetFormat
from tuneforge.providers.contract import BaseModelInfo

MODEL = BaseModelInfo("test-model", "openai", 65_536, "o200k_base")
SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "Hi there"}
ASSISTANT = {"role": "assistant", "content": "Hello!"}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


class LengthCounter:
    """Counts characters of text starting with 'x' and nothing else (roles cost 0)."""

    name = "length"

    def count(self, text: str) -> int:
        return len(text) if text.startswith("x") else 0


def _example(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"messages": list(messages), **extra}


def _sized(tokens: int) -> dict[str, Any]:
    """An example whose LengthCounter total is ``tokens`` (2 messages: 3 + 2 * 3 overhead)."""
    return _example({"role": "user", "content": "x" * (tokens - 9)}, ASSISTANT)


def _builder(
    model: BaseModelInfo = MODEL, price: float | None = None, **kwargs: Any
) -> ReportBuilder:
    return ReportBuilder(
        model=model, counter=BpeTokenCounter("o200k_base"), price_per_million=price, **kwargs
    )


def _report(
    lines: list[Any], tmp_path: Path, builder: ReportBuilder | None = None
) -> ValidationReport:
    path = tmp_path / "data.jsonl"
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    )
    builder = builder or _builder()
    for raw in read_examples(path, DatasetFormat.JSONL):
        builder.add(raw)
    return builder.finish()


GOOD = _example(SYSTEM, USER, ASSISTANT)

ERROR_CASES: list[tuple[Any, str, int | None]] = [
    ('{"messages": [', "invalid_json", None),
    ("[1, 2]", "data_type", None),
    (_example(SYSTEM, USER, ASSISTANT, "text"), "data_type", 3),
    ({"prompt": "hi"}, "missing_messages_list", None),
    ({"messages": []}, "missing_messages_list", None),
    ({"messages": "hi"}, "missing_messages_list", None),
    (_example({"content": "no role"}, ASSISTANT), "message_missing_key", 0),
    (_example(USER, {"role": "assistant"}), "message_missing_key", 1),
    (_example(USER, ASSISTANT, {"role": "tool", "content": "42"}), "message_missing_key", 2),
    (_example(USER | {"mood": "ok"}, ASSISTANT), "message_unrecognized_key", 0),
    (_example({"role": "bot", "content": "hi"}, ASSISTANT), "unrecognized_role", 0),
    (_example({"role": ["user"], "content": "hi"}, ASSISTANT), "unrecognized_role", 0),
    (_example(USER, {"role": "assistant", "content": ""}), "missing_content", 1),
    (_example(USER, {"role": "assistant", "content": None}), "missing_content", 1),
    (_example(SYSTEM, USER), "example_missing_assistant_message", None),
    (_example(USER, ASSISTANT | {"weight": 2}), "invalid_weight", 1),
    (_example(USER, ASSISTANT | {"weight": True}), "invalid_weight", 1),
    (_example(USER | {"weight": 1}, ASSISTANT), "invalid_weight", 0),
    (_example(USER, ASSISTANT, tools={"name": "f"}), "invalid_tools", None),
    (_example(USER, ASSISTANT, tools=[{"type": "function"}]), "invalid_tools", None),
    (_example(USER, {"role": "assistant", "tool_calls": [{"id": "c1"}]}), "invalid_tool_calls", 1),
    (_example(USER | {"tool_calls": [CALL]}, ASSISTANT), "invalid_tool_calls", 0),
    (
        _example(USER, {"role": "assistant", "function_call": {"name": "f"}}),
        "invalid_tool_calls",
        1,
    ),
    (_example({"role": "user", "content": 42}, ASSISTANT), "invalid_content", 0),
    (_example({"role": "user", "content": 0}, ASSISTANT), "invalid_content", 0),
    (
        _example(USER, ASSISTANT | {"function_call": {"name": 1}, "tool_calls": []}),
        "invalid_tool_calls",
        1,
    ),
    (_example({"role": "user", "content": [{"type": "audio"}]}, ASSISTANT), "invalid_content", 0),
    (_example({"role": "user", "content": "a\u0000b"}, ASSISTANT), "invalid_content", None),
    (_example(USER | {"name": "a\u0000"}, ASSISTANT), "invalid_content", None),
    (_example(USER | {"name": 7}, ASSISTANT), "invalid_field_type", 0),
]


@pytest.mark.parametrize(("line", "code", "message_index"), ERROR_CASES)
def test_each_error_kind_has_its_code_and_line(
    tmp_path: Path, line: Any, code: str, message_index: int | None
) -> None:
    report = _report([GOOD, "", GOOD, line, GOOD], tmp_path)
    assert report.error_counts == {code: 1}
    (error,) = report.errors
    assert (error.line, error.code, error.message_index) == (4, code, message_index)
    assert (report.total_examples, report.valid_examples, report.invalid_examples) == (4, 3, 1)
    assert not report.is_valid


def test_invalid_encoding_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"messages": "caf\xe9"}\n')
    builder = _builder()
    for raw in read_examples(path, DatasetFormat.JSONL):
        builder.add(raw)
    report = builder.finish()
    assert [(error.line, error.code) for error in report.errors] == [(2, "invalid_encoding")]


@pytest.mark.parametrize(
    "example",
    [
        GOOD,
        _example(USER, {"role": "assistant", "content": None, "tool_calls": [CALL]}, tools=[TOOL]),
        _example(USER, {"role": "assistant", "tool_calls": [CALL]}),
        _example(USER, {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}),
        _example(USER, ASSISTANT | {"weight": 0}, ASSISTANT | {"weight": 1}),
        _example({"role": "developer", "content": "rules"}, USER, ASSISTANT | {"name": "bot"}),
        _example(USER, {"role": "tool", "tool_call_id": "c1", "content": "ok"}, ASSISTANT),
        _example({"role": "user", "content": [{"type": "text", "text": "hi"}]}, ASSISTANT),
        _example(
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
            ASSISTANT,
        ),
    ],
)
def test_valid_examples_have_no_errors(example: dict[str, Any]) -> None:
    errors, _ = validate_chat_example(example)
    assert errors == []


def test_escaped_backslash_u0000_text_is_not_a_nul(tmp_path: Path) -> None:
    report = _report(
        [_example(USER | {"content": "JSON writes NUL as \\u0000"}, ASSISTANT)], tmp_path
    )
    assert report.is_valid


def test_one_example_can_report_several_errors() -> None:
    errors, _ = validate_chat_example(_example({"role": "bot", "content": "", "x": 1}))
    codes = [error["code"] for error in errors]
    assert codes == [
        "message_unrecognized_key",
        "unrecognized_role",
        "missing_content",
        "example_missing_assistant_message",
    ]


@pytest.mark.parametrize(
    ("example", "code"),
    [
        (_example(USER, ASSISTANT), "missing_system_message"),
        (_example(SYSTEM, ASSISTANT), "missing_user_message"),
        (_example(SYSTEM, USER, ASSISTANT | {"weight": 0}), "no_trained_assistant_message"),
    ],
)
def test_format_warnings(example: dict[str, Any], code: str) -> None:
    errors, warnings = validate_chat_example(example)
    assert errors == []
    assert [warning["code"] for warning in warnings] == [code]


def test_over_context_examples_are_warned_listed_and_billed_at_the_limit(tmp_path: Path) -> None:
    model = BaseModelInfo("small", "openai", 50, "o200k_base")
    builder = ReportBuilder(model=model, counter=LengthCounter(), price_per_million=2.0)
    results = [
        builder.add(RawExample(n + 1, _sized(size), None, None))
        for n, size in enumerate([20, 80, 50, 51])
    ]
    assert [result.token_count for result in results] == [20, 80, 50, 51]
    assert [result.is_valid for result in results] == [True] * 4
    assert [w["code"] for w in results[1].warnings] == [
        "missing_system_message",
        "over_context_length",
    ]
    report = builder.finish()
    assert report.over_context_limit.count == 2
    assert [(e.line, e.tokens) for e in report.over_context_limit.examples] == [(2, 80), (4, 51)]
    assert report.warning_counts["over_context_length"] == 2
    assert report.billed_tokens_per_epoch == 20 + 50 + 50 + 50
    assert report.n_epochs == 25
    assert report.total_billed_tokens == 170 * 25
    assert report.estimated_cost_usd == pytest.approx(170 * 25 / 1e6 * 2.0)
    assert report.is_valid


def test_distributions_use_real_percentiles(tmp_path: Path) -> None:
    builder = ReportBuilder(model=MODEL, counter=LengthCounter(), price_per_million=None)
    sizes = list(range(10, 110))
    for line, size in enumerate(sizes, 1):
        builder.add(RawExample(line, _sized(size), None, None))
    report = builder.finish()
    tokens = report.tokens_per_example
    assert tokens is not None
    assert (tokens.min, tokens.max, tokens.mean, tokens.median) == (10, 109, 59.5, 59.5)
    assert tokens.p5 == pytest.approx(14.95)
    assert tokens.p95 == pytest.approx(104.05)
    assert tokens.p5 == pytest.approx(np.percentile(sizes, 5))
    messages = report.messages_per_example
    assert messages is not None and (messages.min, messages.max, messages.p95) == (2, 2, 2.0)
    assert report.total_tokens == sum(sizes)
    assert report.estimated_cost_usd is None and report.price_per_million_tokens is None


def test_duplicates_near_duplicates_and_overlap() -> None:
    builder = _builder()
    base = _example(SYSTEM, USER, ASSISTANT)
    reordered = {
        "messages": [{"content": m["content"], "role": m["role"]} for m in base["messages"]]
    }
    shouted = _example(SYSTEM, USER | {"content": "HI,   there!!"}, ASSISTANT)
    other = _example(SYSTEM, USER | {"content": "Straße, ПРИВЕТ"}, ASSISTANT)
    other_folded = _example(SYSTEM, USER | {"content": "STRASSE привет."}, ASSISTANT)
    rows = [(1, base, "train"), (2, other, "train"), (3, reordered, "train"), (4, shouted, "train")]
    rows += [(5, shouted, "validation"), (6, _example(USER, ASSISTANT), "validation")]
    rows += [(7, other_folded, "train")]
    for line, payload, split in rows:
        builder.add(RawExample(line, payload, None, None), split)
    report = builder.finish()
    assert report.exact_duplicates.count == 2
    exact = [(pair.line, pair.duplicate_of) for pair in report.exact_duplicates.pairs]
    assert exact == [(3, 1), (5, 4)]
    assert report.near_duplicates.count == 2
    assert [(p.line, p.duplicate_of) for p in report.near_duplicates.pairs] == [(4, 1), (7, 2)]
    assert report.train_validation_overlap == 1
    assert (report.train_examples, report.validation_examples) == (5, 2)


def test_epochs_and_billing_use_only_the_training_split() -> None:
    builder = ReportBuilder(model=MODEL, counter=LengthCounter(), price_per_million=10.0)
    builder.add(RawExample(1, _sized(30), None, None), "train")
    builder.add(RawExample(2, _sized(40), None, None), "validation")
    report = builder.finish()
    assert report.n_epochs == 25
    assert report.billed_tokens_per_epoch == 30
    assert report.total_billed_tokens == 750
    assert report.estimated_cost_usd == pytest.approx(0.0075)


@pytest.mark.parametrize(
    ("examples", "epochs"),
    [
        (0, None),
        (1, 25),
        (4, 25),
        (20, 5),
        (33, 3),
        (34, 3),
        (8_333, 3),
        (8_334, 2),
        (12_500, 2),
        (25_000, 1),
        (100_000, 1),
    ],
)
def test_default_epochs_heuristic(examples: int, epochs: int | None) -> None:
    assert default_epochs(examples) == epochs


def test_empty_dataset_is_not_valid() -> None:
    report = _builder(price=3.0).finish()
    assert not report.is_valid
    assert report.tokens_per_example is None
    assert (report.n_epochs, report.total_billed_tokens, report.estimated_cost_usd) == (
        None,
        0,
        None,
    )


def test_samples_are_capped_but_counts_are_complete(tmp_path: Path) -> None:
    lines = ["not json"] * 7 + [_example(USER, ASSISTANT)] * (MAX_WARNING_SAMPLES + 5)
    report = _report(lines, tmp_path, _builder(max_error_samples=3))
    assert report.error_counts == {"invalid_json": 7}
    assert [error.line for error in report.errors] == [1, 2, 3]
    assert report.warning_counts == {"missing_system_message": MAX_WARNING_SAMPLES + 5}
    assert len(report.warnings) == MAX_WARNING_SAMPLES


def test_report_counts_real_tokens_and_serialises(tmp_path: Path) -> None:
    encode = bpe_openai.get_encoding("o200k_base").encode
    report = _report(
        [GOOD, GOOD | {"messages": [SYSTEM, USER, ASSISTANT, USER, ASSISTANT]}], tmp_path
    )
    per_message = [
        3 + len(encode(m["role"])) + len(encode(m["content"])) for m in (SYSTEM, USER, ASSISTANT)
    ]
    first = 3 + sum(per_message)
    second = first + per_message[1] + per_message[2]
    assert report.total_tokens == first + second
    assert report.tokenizer == "o200k_base" and report.model == "test-model"
    dumped = report.model_dump(mode="json")
    assert ValidationReport.model_validate(json.loads(json.dumps(dumped))) == report


def test_add_returns_the_example_result() -> None:
    builder = _builder()
    good = builder.add(RawExample(7, GOOD, None, None))
    bad = builder.add(RawExample(8, None, "{", "Invalid JSON: x", "invalid_json"))
    assert (
        good.is_valid
        and good.line_number == 7
        and good.token_count > good.assistant_token_count > 0
    )
    assert not bad.is_valid
    assert bad.errors == [{"code": "invalid_json", "message": "Invalid JSON: x"}]
    assert (bad.token_count, bad.assistant_token_count) == (0, 0)


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="split"):
        _builder().add(RawExample(1, GOOD, None, None), "test")


def test_what_a_model_cannot_be_trained_on_is_an_error_naming_line_and_message(
    tmp_path: Path,
) -> None:
    local = BaseModelInfo("local-model", "local", 8_192, "local")
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    listed_arguments = {**CALL, "function": {"name": "f", "arguments": "[1, 2]"}}
    lines = [
        _example(USER, {"role": "assistant", "content": None, "tool_calls": [CALL]}, tools=[TOOL]),
        _example(
            {"role": "user", "content": [{"type": "text", "text": "What is it?"}, image]}, ASSISTANT
        ),
        _example(USER, {"role": "assistant", "content": None, "tool_calls": [listed_arguments]}),
        GOOD,
    ]
    builder = ReportBuilder(model=local, counter=LengthCounter(), price_per_million=None)

    report = _report(lines, tmp_path, builder)

    assert [(e.line, e.code, e.message_index) for e in report.errors] == [
        (2, "unsupported_content", 0),
        (3, "invalid_tool_calls", 1),
    ]
    assert "local-model is trained on text only" in report.errors[0].message
    assert (report.examples_with_tools, report.examples_with_tool_calls) == (1, 1)
    vision = BaseModelInfo("vision-model", "openai", 65_536, "o200k_base", reads_images=True)
    builder = ReportBuilder(model=vision, counter=LengthCounter(), price_per_million=None)
    assert _report(lines[1:2], tmp_path, builder).is_valid
