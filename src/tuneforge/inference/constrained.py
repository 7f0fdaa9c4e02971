"""Structured outputs: decoding that can only produce what a JSON schema or tool list allows.

OpenAI's ``response_format`` (``json_object``, ``json_schema``) and strict tools promise
output that parses and validates; sampling alone cannot keep that promise, so each step
masks every token the grammar would reject. The grammars are llguidance Lark grammars
(JSON schemas embedded with ``%json``); why llguidance and not xgrammar, with the measured
cost (under 1% of tokens/s), is in docs/decisions.md. JSON is written the way
``json.dumps`` writes it (``", "`` and ``": "``, no other whitespace): the tool-call
format models are trained on here is ``json.dumps`` output, and a model cannot pad a
reply with endless whitespace. llguidance and torch are imported where used: the API
process starts without them.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NewType

from tuneforge.providers.chat_format import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

if TYPE_CHECKING:
    import torch
    from llguidance import LLTokenizer
    from transformers import PreTrainedTokenizerBase

Grammar = NewType("Grammar", str)
"""A compiled, validated llguidance grammar; build one with the functions below."""

_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_tokenizers: weakref.WeakKeyDictionary[PreTrainedTokenizerBase, LLTokenizer] = (
    weakref.WeakKeyDictionary()
)
_tokenizers_lock = threading.Lock()


class SchemaError(ValueError):
    """A response format or tool list that cannot become a grammar; the text says why."""


def _json(schema: Any) -> str:
    """A Lark ``%json`` rule body for ``schema``, in the one JSON style replies use."""
    if not isinstance(schema, dict):
        raise SchemaError(f"a JSON schema must be an object, not {type(schema).__name__}")
    return "%json " + json.dumps({**schema, "x-guidance": _JSON_STYLE})


def _literal(text: str) -> str:
    """``text`` as a Lark string literal (Lark reads JSON string escapes)."""
    return json.dumps(text)


def _compile(lark: str, what: str) -> Grammar:
    """Validate now, so a bad schema is the request's 400 rather than a failed generation."""
    from llguidance import LLMatcher

    grammar = LLMatcher.grammar_from_lark(lark)
    error = LLMatcher.validate_grammar(grammar)
    if error:
        raise SchemaError(f"{what}: {error}")
    return Grammar(grammar)


def response_format_grammar(response_format: dict[str, Any]) -> Grammar | None:
    """The grammar for OpenAI's ``response_format``; None for ``text``, which constrains nothing."""
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return _compile(f"start: {_json({'type': 'object'})}", "response_format")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise SchemaError("response_format.json_schema.schema is required")
        name = spec.get("name", "")
        return _compile(f"start: {_json(spec['schema'])}", f"response_format schema {name!r}")
    raise SchemaError(f"response_format.type {kind!r} is not one of text, json_object, json_schema")


def tool_call_grammar(
    tools: list[dict[str, Any]], *, required: bool, parallel: bool, named: str | None
) -> Grammar:
    """Replies in chat_format's fallback tool-call format whose calls match the tools' schemas.

    Each call is ``<tool_call>{"name": <a tool's name>, "arguments": <its parameters>}
    </tool_call>`` (one per line when ``parallel``, else exactly one). Free text may come
    first, or be the whole reply, unless ``required``; ``named`` (tool_choice naming a
    function) allows only that function and implies ``required``. Tools are OpenAI's
    ``{"type": "function", "function": {...}}`` or the bare function objects.
    """
    functions = [tool.get("function", tool) for tool in tools]
    if named is not None:
        functions = [f for f in functions if f.get("name") == named]
        if not functions:
            raise SchemaError(f"tool_choice names {named!r}, which is not among the tools")
    if not functions:
        raise SchemaError("tools: at least one function is needed to constrain tool calls")
    rules = []
    for index, function in enumerate(functions):
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise SchemaError(f"tools[{index}]: a function needs a name")
        parameters = function.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise SchemaError(f"tools[{index}] ({name}): parameters must be a JSON schema object")
        head = f'{{"name": {json.dumps(name)}, "arguments": '
        rules.append(f"call_{index}: {_literal(head)} args_{index} {_literal('}')}")
        rules.append(f"args_{index}: {_json({'type': 'object', **parameters})}")
    next_call = _literal("\n" + TOOL_CALL_OPEN)
    calls = f"call ({next_call} call)*" if parallel else "call"
    if required or named is not None:
        start = f"start: {_literal(TOOL_CALL_OPEN)} {calls}"
    else:
        # A lazy lexeme ends at the first call tag, so text cannot swallow a call.
        tag = TOOL_CALL_OPEN
        start = (
            f"start: TEXT | text_then_tag {calls}\n"
            f"TEXT: /(?s:.*)/ & ~/(?s:.*){tag}(?s:.*)/\n"
            f"text_then_tag[lazy]: /(?s:.*){tag}/"
        )
    alternatives = " | ".join(f"call_{index}" for index in range(len(functions)))
    lark = "\n".join([start, f"call: ({alternatives}) {_literal(TOOL_CALL_CLOSE)}", *rules])
    return _compile(lark, "tools")


def tokenizer_info(tokenizer: PreTrainedTokenizerBase) -> LLTokenizer:
    """llguidance's view of a tokenizer, built once per tokenizer object (it takes ~0.3 s).

    Weak keys: the entry goes when its model (and tokenizer) leaves the engine's cache.
    """
    from llguidance.hf import from_tokenizer

    with _tokenizers_lock:
        info = _tokenizers.get(tokenizer)
        if info is None:
            info = _tokenizers[tokenizer] = from_tokenizer(tokenizer)
        return info


class ConstrainedDecoding:
    """Masks, at each step of one sequence's generation, every token the grammar rejects.

    It reads the tokens generated since the last step from ``input_ids`` past
    ``prompt_length`` and feeds them to the grammar. Once the grammar is complete only
    ``eos_ids`` remain; while it may end, they are allowed beside what may continue. Put it
    before temperature, top-p and the sampler, so they only see allowed tokens. One instance
    per generation. A plain callable with transformers' ``LogitsProcessor`` signature, so
    ``generate()`` takes it too, without importing transformers here.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        grammar: Grammar,
        *,
        prompt_length: int,
        eos_ids: Sequence[int],
    ) -> None:
        import torch
        from llguidance import LLMatcher

        if not eos_ids:
            raise ValueError("eos_ids: a constrained reply needs a token to end on")
        self._matcher = LLMatcher(tokenizer_info(tokenizer), grammar, log_level=0)
        if self._matcher.is_error():
            raise SchemaError(self._matcher.get_error())
        self._next = prompt_length
        self._eos_ids = torch.tensor(list(eos_ids))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        import numpy as np
        import torch

        if input_ids.shape[0] != 1:
            raise ValueError("constrained decoding runs one sequence at a time")
        new_tokens = input_ids[0, self._next :].tolist()
        self._next += len(new_tokens)
        if not self._matcher.consume_tokens(new_tokens):
            raise RuntimeError(
                f"a token the grammar rejects was generated: {self._matcher.get_error()}"
            )
        allowed = torch.zeros(scores.shape[-1], dtype=torch.bool)
        if not self._matcher.is_stopped():
            bits = np.unpackbits(
                np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8), bitorder="little"
            )
            width = min(len(bits), scores.shape[-1])
            allowed[:width] = torch.from_numpy(bits[:width]).bool()
        allowed[self._eos_ids] = self._matcher.is_stopped() or self._matcher.is_accepting()
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))  # type: ignore[return-value]
