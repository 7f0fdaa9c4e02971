"""Chat-example checks and the streaming validation report.

The checks are those of OpenAI's "Data preparation and analysis for chat model
fine-tuning" cookbook, plus the ones its API applies that the cookbook leaves out (weights,
tool calls, tool definitions), so users see every problem before a job is created, each with
its line. ``ReportBuilder`` consumes examples one by one and keeps only fixed-size numbers per
example (token counts, 8-byte hashes in arrays), so a report over a large upload stays small.
"""

from __future__ import annotations

import string
from array import array
from dataclasses import dataclass
from itertools import islice
from typing import Any, NotRequired, TypedDict

import numpy as np
import orjson
from pydantic import BaseModel

from tuneforge.datasets.parsing import RawExample
from tuneforge.datasets.tables import ExampleSplit
from tuneforge.datasets.tokens import TokenCounter, count_chat_tokens
from tuneforge.providers.catalog import BaseModelInfo

ALLOWED_MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "weight", "tool_calls", "function_call", "tool_call_id", "refusal"}
)
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_STRING_FIELDS = ("name", "tool_call_id", "refusal")
_PLAIN_ROLES = frozenset({"system", "developer", "user", "assistant"})

# OpenAI's default-epochs heuristic, from the cookbook.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25

MAX_WARNING_SAMPLES = 100
MAX_LIST_SAMPLES = 100

# Near duplicates ignore letter case, ASCII punctuation and whitespace. bytes.translate
# lower-cases ASCII and drops the rest in one pass; str.casefold, ~5x slower, only runs on
# text that is not ASCII.
_ASCII_LOWER = bytes.maketrans(string.ascii_uppercase.encode(), string.ascii_lowercase.encode())
_IGNORED_FOR_NEAR = (string.punctuation + string.whitespace).encode()


class Issue(TypedDict):
    code: str
    message: str
    message_index: NotRequired[int]


def _issue(code: str, message: str, index: int | None = None) -> Issue:
    if index is None:
        return {"code": code, "message": message}
    return {"code": code, "message": message, "message_index": index}


def validate_chat_example(payload: Any) -> tuple[list[Issue], list[Issue]]:
    """(errors, warnings) of one example's format; token-based checks live in the builder."""
    if not isinstance(payload, dict):
        return [_issue("data_type", "Each example must be a JSON object")], []
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        return [_issue("missing_messages_list", 'Example needs a non-empty "messages" list')], []
    errors: list[Issue] = []
    roles: set[str] = set()
    trained = False
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            errors.append(_issue("data_type", "Each message must be a JSON object", index))
            continue
        role = message.get("role")
        content = message.get("content")
        if (  # fast path for the common {"role": ..., "content": "text"} message
            len(message) == 2
            and type(content) is str
            and content
            and type(role) is str
            and role in _PLAIN_ROLES
        ):
            roles.add(role)
            trained = trained or role == "assistant"
            continue
        if not message.keys() <= ALLOWED_MESSAGE_KEYS:
            unknown = ", ".join(sorted(message.keys() - ALLOWED_MESSAGE_KEYS))
            errors.append(
                _issue("message_unrecognized_key", f"Unrecognized key(s): {unknown}", index)
            )
        if "role" not in message:
            errors.append(_issue("message_missing_key", "Message has no 'role'", index))
        elif type(role) is not str or role not in ROLES:
            allowed = ", ".join(sorted(ROLES))
            errors.append(
                _issue("unrecognized_role", f"Role {role!r} is not one of {allowed}", index)
            )
        else:
            roles.add(role)
        errors.extend(_check_message(message, role, index))
        if role == "assistant" and message.get("weight", 1) != 0:
            trained = True
    if "assistant" not in roles:
        errors.append(
            _issue("example_missing_assistant_message", "Example has no assistant message")
        )
    tools = payload.get("tools")
    if tools is not None and not _valid_tools(tools):
        errors.append(_issue("invalid_tools", _BAD_TOOLS))
    warnings: list[Issue] = []
    if "system" not in roles and "developer" not in roles:
        warnings.append(_issue("missing_system_message", "Example has no system message"))
    if "user" not in roles:
        warnings.append(_issue("missing_user_message", "Example has no user message"))
    if "assistant" in roles and not trained:
        warnings.append(
            _issue("no_trained_assistant_message", "Every assistant message has weight 0")
        )
    return errors, warnings


_BAD_CONTENT = "Content must be a string or a list of text/image parts"
_BAD_TOOL_CALLS = (
    '"tool_calls" must be [{"id", "type": "function", "function": {"name", "arguments"}}]'
)
_BAD_FUNCTION_CALL = '"function_call" must be {"name", "arguments"} strings'
_BAD_TOOLS = '"tools" must be [{"type": "function", "function": {"name", "parameters"?}}]'


def _check_message(message: dict[str, Any], role: Any, index: int) -> list[Issue]:
    issues: list[tuple[str, str]] = []
    calls = message.get("tool_calls")
    function_call = message.get("function_call")
    content = message.get("content")
    calls_only = calls is not None or function_call is not None
    if type(content) is str:
        if not content and not calls_only:
            issues.append(("missing_content", "Message content is empty"))
    elif "content" not in message:
        if not calls_only:
            issues.append(("message_missing_key", "Message has no 'content'"))
    elif content is None or content == []:
        if not calls_only:
            issues.append(("missing_content", "Message content is empty"))
    elif not _valid_content_parts(content):
        issues.append(("invalid_content", _BAD_CONTENT))
    for field in _STRING_FIELDS:
        value = message.get(field)
        if value is not None and type(value) is not str:
            issues.append(("invalid_field_type", f"'{field}' must be a string"))
    if role == "tool" and type(message.get("tool_call_id")) is not str:
        issues.append(("message_missing_key", "Tool message has no 'tool_call_id'"))
    if "weight" in message:
        weight = message["weight"]
        if role != "assistant":
            issues.append(("invalid_weight", "Only assistant messages take a weight"))
        elif type(weight) not in (int, float) or weight not in (0, 1):
            issues.append(("invalid_weight", f"Weight must be 0 or 1, not {weight!r}"))
    if calls_only and role != "assistant":
        issues.append(("invalid_tool_calls", "Only assistant messages make tool calls"))
    if calls is not None and not (isinstance(calls, list) and all(map(_valid_tool_call, calls))):
        issues.append(("invalid_tool_calls", _BAD_TOOL_CALLS))
    if function_call is not None and not _valid_function(function_call):
        issues.append(("invalid_tool_calls", _BAD_FUNCTION_CALL))
    return [_issue(code, text, index) for code, text in issues]


def _valid_content_parts(content: Any) -> bool:
    if not isinstance(content, list):
        return False
    for part in content:
        if not isinstance(part, dict):
            return False
        kind = part.get("type")
        if kind == "text":
            if type(part.get("text")) is not str:
                return False
        elif kind != "image_url" or not isinstance(part.get("image_url"), dict):
            return False
    return True


def _valid_function(function: Any) -> bool:
    return (
        isinstance(function, dict)
        and type(function.get("name")) is str
        and bool(function["name"])
        and type(function.get("arguments")) is str
    )


def _valid_tool_call(call: Any) -> bool:
    return (
        isinstance(call, dict)
        and type(call.get("id")) is str
        and call.get("type") == "function"
        and _valid_function(call.get("function"))
    )


def _valid_tools(tools: Any) -> bool:
    if not isinstance(tools, list):
        return False
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            return False
        function = tool.get("function")
        if not isinstance(function, dict) or type(function.get("name")) is not str:
            return False
        if not isinstance(function.get("parameters", {}), dict):
            return False
    return True


def default_epochs(train_examples: int) -> int | None:
    """OpenAI's default epoch count for a training set of this size; None when it is empty."""
    if train_examples <= 0:
        return None
    if train_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // train_examples)
    if train_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // train_examples)
    return TARGET_EPOCHS


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
    n_epochs: int | None
    billed_tokens_per_epoch: int
    total_billed_tokens: int
    price_per_million_tokens: float | None
    estimated_cost_usd: float | None


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

    def add(self, raw: RawExample, split: str = "train") -> ExampleResult:
        in_validation = split == ExampleSplit.VALIDATION
        if not in_validation and split != ExampleSplit.TRAIN:
            raise ValueError(f"Unknown split {split!r}")
        self._total += 1
        line = raw.line_number
        payload = raw.payload
        if payload is None:
            code = raw.error_code or "invalid_json"
            errors, warnings = [_issue(code, raw.parse_error or "Unreadable line")], []
        else:
            errors, warnings = validate_chat_example(payload)
        tokens = assistant = 0
        canonical = b""
        if payload is not None and not errors:
            canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
            # PostgreSQL cannot store NUL in text or JSONB; the byte test is a cheap filter.
            if b"\\u0000" in canonical and _contains_nul(payload):
                errors.append(_issue("invalid_content", "Example contains a NUL character"))
        if payload is not None and not errors:
            messages = payload["messages"]
            tokens, assistant = count_chat_tokens(self._counter, messages, payload.get("tools"))
            context = self._model.context_length
            if tokens > context:
                warnings.append(
                    _issue(
                        "over_context_length",
                        f"Example has {tokens} tokens, over {self._model.name}'s {context}; "
                        "it will be truncated",
                    )
                )
                self._over_context_count += 1
                if len(self._over_context) < MAX_LIST_SAMPLES:
                    self._over_context.append(LineTokens(line=line, tokens=tokens))
            if not in_validation:
                self._train += 1
                self._billed_per_epoch += min(tokens, context)
            self._lines.append(line)
            self._message_counts.append(len(messages))
            self._tokens.append(tokens)
            self._assistant_tokens.append(assistant)
            # hash() of bytes is a 64-bit SipHash, ~5x faster than blake2b; values only
            # meet others from the same builder, so its per-process seed does not matter.
            self._exact_hashes.append(hash(canonical))
            self._near_hashes.append(hash(_normalised_text(messages)))
            self._in_validation.append(in_validation)
        if errors:
            _record(errors, line, self._errors, self._error_counts, self._max_error_samples)
        if warnings:
            _record(warnings, line, self._warnings, self._warning_counts, MAX_WARNING_SAMPLES)
        return ExampleResult(line, errors, warnings, tokens, assistant)

    def finish(self) -> ValidationReport:
        valid = len(self._lines)
        epochs = default_epochs(self._train)
        billed_total = self._billed_per_epoch * (epochs or 0)
        cost = None
        if self._price is not None and epochs is not None:
            cost = round(billed_total / 1_000_000 * self._price, 6)
        lines = _numpy(self._lines)
        exact = _repeats(_numpy(self._exact_hashes))
        near = {
            position: first
            for position, first in _repeats(_numpy(self._near_hashes)).items()
            if position not in exact
        }
        return ValidationReport(
            model=self._model.name,
            tokenizer=self._counter.name,
            context_length=self._model.context_length,
            is_valid=not self._error_counts and valid > 0,
            total_examples=self._total,
            valid_examples=valid,
            invalid_examples=self._total - valid,
            train_examples=self._train,
            validation_examples=valid - self._train,
            total_tokens=int(_numpy(self._tokens).sum()),
            errors=[IssueSample(**sample) for sample in self._errors],
            error_counts=dict(self._error_counts),
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
            n_epochs=epochs,
            billed_tokens_per_epoch=self._billed_per_epoch,
            total_billed_tokens=billed_total,
            price_per_million_tokens=self._price,
            estimated_cost_usd=cost,
        )

    def _overlap(self) -> int:
        """Validation examples whose normalised text also appears in the training split."""
        in_validation = _numpy(self._in_validation).view(bool)
        if not in_validation.any() or in_validation.all():
            return 0
        near = _numpy(self._near_hashes)
        return int(np.isin(near[in_validation], near[~in_validation]).sum())


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
