"""The streaming validation report over a dataset's examples.

``ReportBuilder`` runs the format checks of ``tuneforge.datasets.checks`` on each example
and counts its tokens, one example at a time, keeping only fixed-size numbers per example
(token counts, 8-byte hashes in arrays), so a report over a large upload stays small.
"""

from __future__ import annotations

import hashlib
import string
from array import array
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel

from tuneforge.datasets.checks import (
    Issue,
    is_preference_example,
    make_issue,
    validate_chat_example,
    validate_preference_example,
)
from tuneforge.datasets.parsing import RawExample
from tuneforge.datasets.preference import PreferenceTally, example_messages, example_tools
from tuneforge.datasets.tokens import TokenCounter, count_chat_tokens, count_preference_tokens
from tuneforge.db.tables.datasets import DatasetKind, ExampleSplit
from tuneforge.providers.catalog import training_cost_usd
from tuneforge.providers.chat_format import UnrepresentableMessage, calls_of
from tuneforge.providers.contract import BaseModelInfo, default_epochs

MAX_WARNING_SAMPLES = 100
MAX_LIST_SAMPLES = 100

# Near duplicates ignore letter case, ASCII punctuation and whitespace. bytes.translate
# lower-cases ASCII and drops the rest in one pass; str.casefold, ~5x slower, only runs on
# text that is not ASCII.
_ASCII_LOWER = bytes.maketrans(string.ascii_uppercase.encode(), string.ascii_lowercase.encode())
_IGNORED_FOR_NEAR = (string.punctuation + string.whitespace).encode()


class IssueSample(BaseModel):
    line: int
    code: str
    message: str
    message_index: int | None = None


class Distribution(BaseModel):
    min: int
    max: int
    mean: float
    median: float
    p5: float
    p95: float


class LineTokens(BaseModel):
    line: int
    tokens: int


class OverContextLimit(BaseModel):
    count: int
    context_length: int
    examples: list[LineTokens]


class DuplicatePair(BaseModel):
    line: int
    duplicate_of: int


class Duplicates(BaseModel):
    count: int
    pairs: list[DuplicatePair]


class ValidationReport(BaseModel):
    """Everything a user needs to fix a dataset and predict a job; statistics cover valid
    examples, epochs and billing the valid training split."""

    model: str
    tokenizer: str
    context_length: int
    is_valid: bool
    total_examples: int
    valid_examples: int
    invalid_examples: int
    train_examples: int
    validation_examples: int
    total_tokens: int
    errors: list[IssueSample]
    error_counts: dict[str, int]
    warnings: list[IssueSample]
    warning_counts: dict[str, int]
    messages_per_example: Distribution | None
    tokens_per_example: Distribution | None
    assistant_tokens_per_example: Distribution | None
    over_context_limit: OverContextLimit
    exact_duplicates: Duplicates
    near_duplicates: Duplicates
    train_validation_overlap: int
    examples_with_tools: int = 0
    examples_with_tool_calls: int = 0
    n_epochs: int | None
    billed_tokens_per_epoch: int
    total_billed_tokens: int
    price_per_million_tokens: float | None
    estimated_cost_usd: float | None
    kind: DatasetKind = DatasetKind.CHAT
    # Preference pairs only: their prompts and replies (tokens_per_example counts what
    # training reads, the prompt once with each reply).
    prompt_tokens_per_example: Distribution | None = None
    preferred_tokens_per_example: Distribution | None = None
    non_preferred_tokens_per_example: Distribution | None = None


@dataclass(slots=True)
class ExampleResult:
    line_number: int
    errors: list[Issue]
    warnings: list[Issue]
    token_count: int
    assistant_token_count: int

    @property
    def is_valid(self) -> bool:
        return not self.errors


class ReportBuilder:
    """Validates and counts examples as they stream by, then builds the report once."""

    def __init__(
        self,
        *,
        model: BaseModelInfo,
        counter: TokenCounter,
        price_per_million: float | None,
        max_error_samples: int = 100,
    ) -> None:
        self._model = model
        self._counter = counter
        self._price = price_per_million
        self._max_error_samples = max_error_samples
        self._total = 0
        self._train = 0
        self._billed_per_epoch = 0
        self._errors: list[dict[str, Any]] = []
        self._warnings: list[dict[str, Any]] = []
        self._error_counts: dict[str, int] = {}
        self._warning_counts: dict[str, int] = {}
        self._over_context_count = 0
        self._over_context: list[LineTokens] = []
        # One entry per valid example, in arrival order.
        self._lines = array("I")
        self._message_counts = array("I")
        self._tokens = array("I")
        self._assistant_tokens = array("I")
        self._exact_hashes = array("q")
        self._near_hashes = array("q")
        self._in_validation = array("B")
        self._with_tools = 0
        self._with_tool_calls = 0
        self._pairs = PreferenceTally()

    def add(self, raw: RawExample, split: str = "train") -> ExampleResult:
        in_validation = split == ExampleSplit.VALIDATION
        if not in_validation and split != ExampleSplit.TRAIN:
            raise ValueError(f"Unknown split {split!r}")
        self._total += 1
        line = raw.line_number
        payload = raw.payload
        pair = is_preference_example(payload)
        if payload is None:
            code = raw.error_code or "invalid_json"
            errors, warnings = [make_issue(code, raw.parse_error or "Unreadable line")], []
        elif pair:
            errors, warnings = validate_preference_example(payload)
        else:
            errors, warnings = validate_chat_example(payload)
        tokens = assistant = 0
        canonical = b""
        if payload is not None and not errors:
            canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
            # PostgreSQL cannot store NUL in text or JSONB; the byte test is a cheap filter.
            if b"\\u0000" in canonical and _contains_nul(payload):
                errors.append(make_issue("invalid_content", "Example contains a NUL character"))
        if payload is not None and not errors:
            errors += _unrepresentable(example_messages(payload), self._model)
        if payload is not None and not errors:
            messages = example_messages(payload)
            tools = example_tools(payload)
            self._with_tools += bool(tools)
            self._with_tool_calls += any(
                m.get("tool_calls") or m.get("function_call") for m in messages
            )
            pair_tokens = count_preference_tokens(self._counter, payload) if pair else None
            if pair_tokens is not None:
                tokens, longest = pair_tokens.total, pair_tokens.longest
                assistant = pair_tokens.preferred + pair_tokens.non_preferred
            else:
                tokens, assistant = count_chat_tokens(self._counter, messages, tools)
                longest = tokens
            context = self._model.context_length
            if longest > context:
                warnings.append(
                    make_issue(
                        "over_context_length",
                        f"Example has {longest} tokens, over {self._model.name}'s {context}; "
                        "it will be truncated",
                    )
                )
                self._over_context_count += 1
                if len(self._over_context) < MAX_LIST_SAMPLES:
                    self._over_context.append(LineTokens(line=line, tokens=longest))
            if not in_validation:
                self._train += 1
                # A pair bills both of its sequences, each up to the context.
                self._billed_per_epoch += min(tokens, context * (2 if pair else 1))
            self._pairs.add(pair_tokens)
            self._lines.append(line)
            self._message_counts.append(len(payload["input"]["messages"] if pair else messages))
            self._tokens.append(tokens)
            self._assistant_tokens.append(assistant)
            self._exact_hashes.append(_hash64(canonical))
            self._near_hashes.append(_hash64(_normalised_text(messages)))
            self._in_validation.append(in_validation)
        if errors:
            _record(errors, line, self._errors, self._error_counts, self._max_error_samples)
        if warnings:
            _record(warnings, line, self._warnings, self._warning_counts, MAX_WARNING_SAMPLES)
        return ExampleResult(line, errors, warnings, tokens, assistant)

    def merge(self, later: ReportBuilder) -> None:
        """Take in the tallies of a builder that saw the examples right after this one's (a
        chunk checked in another process); the report is then the one a single builder over
        all of them would make: same samples, counts, order and duplicates."""
        self._total += later._total
        self._train += later._train
        self._billed_per_epoch += later._billed_per_epoch
        self._errors += later._errors[: self._max_error_samples - len(self._errors)]
        self._warnings += later._warnings[: MAX_WARNING_SAMPLES - len(self._warnings)]
        for counts, more in (
            (self._error_counts, later._error_counts),
            (self._warning_counts, later._warning_counts),
        ):
            for code, count in more.items():
                counts[code] = counts.get(code, 0) + count
        self._over_context_count += later._over_context_count
        self._over_context += later._over_context[: MAX_LIST_SAMPLES - len(self._over_context)]
        self._lines += later._lines
        self._message_counts += later._message_counts
        self._tokens += later._tokens
        self._assistant_tokens += later._assistant_tokens
        self._exact_hashes += later._exact_hashes
        self._near_hashes += later._near_hashes
        self._in_validation += later._in_validation
        self._with_tools += later._with_tools
        self._with_tool_calls += later._with_tool_calls
        self._pairs.merge(later._pairs)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for ``merge`` (from a worker process) without the token counter, which
        holds a native tokenizer and is only needed to ``add``."""
        return {**self.__dict__, "_counter": None}

    def finish(self) -> ValidationReport:
        valid = len(self._lines)
        epochs = default_epochs(self._train)
        billed_total = self._billed_per_epoch * (epochs or 0)
        cost = None if epochs is None else training_cost_usd(billed_total, self._price)
        lines = _numpy(self._lines)
        exact = _repeats(_numpy(self._exact_hashes))
        near = {
            position: first
            for position, first in _repeats(_numpy(self._near_hashes)).items()
            if position not in exact
        }
        errors, error_counts = list(self._errors), dict(self._error_counts)
        kind = self._pairs.verdict(lines, self._max_error_samples - len(errors))
        for line, issue in kind.strays:
            errors.append({"line": line, **issue})
        if kind.stray_count:
            error_counts["mixed_kinds"] = kind.stray_count
        return ValidationReport(
            model=self._model.name,
            tokenizer=self._counter.name,
            context_length=self._model.context_length,
            is_valid=not error_counts and valid > 0,
            total_examples=self._total,
            valid_examples=valid,
            invalid_examples=self._total - valid,
            train_examples=self._train,
            validation_examples=valid - self._train,
            total_tokens=int(_numpy(self._tokens).sum()),
            errors=[IssueSample(**sample) for sample in sorted(errors, key=_by_line)],
            error_counts=error_counts,
            warnings=[IssueSample(**sample) for sample in self._warnings],
            warning_counts=dict(self._warning_counts),
            messages_per_example=_distribution(self._message_counts),
            tokens_per_example=_distribution(self._tokens),
            assistant_tokens_per_example=_distribution(self._assistant_tokens),
            over_context_limit=OverContextLimit(
                count=self._over_context_count,
                context_length=self._model.context_length,
                examples=self._over_context,
            ),
            exact_duplicates=_duplicates(exact, lines),
            near_duplicates=_duplicates(near, lines),
            train_validation_overlap=self._overlap(),
            examples_with_tools=self._with_tools,
            examples_with_tool_calls=self._with_tool_calls,
            n_epochs=epochs,
            billed_tokens_per_epoch=self._billed_per_epoch,
            total_billed_tokens=billed_total,
            price_per_million_tokens=self._price,
            estimated_cost_usd=cost,
            kind=kind.kind,
            prompt_tokens_per_example=_distribution(self._pairs.prompt_tokens),
            preferred_tokens_per_example=_distribution(self._pairs.preferred_tokens),
            non_preferred_tokens_per_example=_distribution(self._pairs.non_preferred_tokens),
        )

    def _overlap(self) -> int:
        """Validation examples whose normalised text also appears in the training split."""
        in_validation = _numpy(self._in_validation).view(bool)
        if not in_validation.any() or in_validation.all():
            return 0
        near = _numpy(self._near_hashes)
        return int(np.isin(near[in_validation], near[~in_validation]).sum())


def _by_line(sample: dict[str, Any]) -> int:
    return sample["line"]


def _unrepresentable(messages: list[dict[str, Any]], model: BaseModelInfo) -> list[Issue]:
    """What the model cannot be trained on: images for a text-only model, tool calls whose
    arguments are not a JSON object (nothing to render them as)."""
    issues = []
    for index, message in enumerate(messages):
        content = message.get("content")
        has_image = isinstance(content, list) and any(
            part.get("type") == "image_url" for part in content
        )
        if has_image and not model.reads_images:
            issues.append(
                make_issue(
                    "unsupported_content",
                    f"Message has an image; {model.name} is trained on text only",
                    index,
                )
            )
        try:
            calls_of(message)
        except UnrepresentableMessage as exc:
            issues.append(make_issue("invalid_tool_calls", str(exc), index))
    return issues


def _record(
    issues: list[Issue],
    line: int,
    samples: list[dict[str, Any]],
    counts: dict[str, int],
    max_samples: int,
) -> None:
    for issue in issues:
        code = issue["code"]
        counts[code] = counts.get(code, 0) + 1
        if len(samples) < max_samples:
            samples.append({"line": line, **issue})


def _contains_nul(value: Any) -> bool:
    if type(value) is str:
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(key) or _contains_nul(item) for key, item in value.items())
    return isinstance(value, list) and any(map(_contains_nul, value))


def _hash64(data: bytes) -> int:
    """A 64-bit digest that is the same in every process (``hash()`` is seeded per process),
    so duplicates are found across chunks checked by different workers."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big", signed=True)


def _normalised_text(messages: list[dict[str, Any]]) -> bytes:
    """The example's roles and text, case-folded, without ASCII punctuation or whitespace."""
    parts: list[str] = []
    for message in messages:
        parts.append(message["role"])
        content = message.get("content")
        if type(content) is str:
            parts.append(content)
        elif content:
            parts.append(orjson.dumps(content).decode())
        for call in message.get("tool_calls") or ():
            parts.append(call["function"]["name"])
            parts.append(call["function"]["arguments"])
        if function_call := message.get("function_call"):
            parts.append(function_call["name"])
            parts.append(function_call["arguments"])
    text = "\x00".join(parts)
    if not text.isascii():
        text = text.casefold()
    return text.encode("utf-8", "surrogatepass").translate(_ASCII_LOWER, _IGNORED_FOR_NEAR)


def _numpy(values: array) -> np.ndarray:
    return np.frombuffer(values, dtype=values.typecode) if values else np.zeros(0, values.typecode)


def _repeats(hashes: np.ndarray) -> dict[int, int]:
    """Positions whose hash appeared earlier, each mapped to the first position with it.

    A sorted copy finds the repeated values; only their positions are walked in Python.
    """
    ordered = np.sort(hashes)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    del ordered
    first_seen: dict[int, int] = {}
    repeats: dict[int, int] = {}
    if len(repeated):
        members = np.flatnonzero(np.isin(hashes, repeated))
        for position, value in zip(members.tolist(), hashes[members].tolist(), strict=True):
            first = first_seen.setdefault(value, position)
            if first != position:
                repeats[position] = first
    return repeats


def _duplicates(repeats: dict[int, int], lines: np.ndarray) -> Duplicates:
    pairs = [
        DuplicatePair(line=int(lines[position]), duplicate_of=int(lines[first]))
        for position, first in islice(repeats.items(), MAX_LIST_SAMPLES)
    ]
    return Duplicates(count=len(repeats), pairs=pairs)


def _distribution(values: array) -> Distribution | None:
    if not values:
        return None
    data = _numpy(values)
    p5, median, p95 = np.percentile(data, [5, 50, 95])
    return Distribution(
        min=int(data.min()),
        max=int(data.max()),
        mean=float(data.mean()),
        median=float(median),
        p5=float(p5),
        p95=float(p95),
    )
