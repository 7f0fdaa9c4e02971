"""Constrained decoding: what a grammar lets a model say, sampled, greedy, and fed by hand.

The tiny model is random, so every reply that parses and validates does so because the
grammar masked everything else. Schemas keep strings and numbers bounded so a random model
reaches the end of its JSON within the token budget.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tuneforge.config import Settings
from tuneforge.inference.constrained import (
    ConstrainedDecoding,
    Grammar,
    SchemaError,
    response_format_grammar,
    tokenizer_info,
    tool_call_grammar,
)
from tuneforge.providers.chat_format import split_tool_calls
from tuneforge.store.base_models import DEFAULT_MODEL, pull_builtin_model

PROFILE = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tier": {"enum": ["free", "pro", "team"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 3},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "tier", "active"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 6},
        "unit": {"enum": ["c", "f"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
CLOCK = {
    "type": "object",
    "properties": {"zone": {"enum": ["utc", "cet"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": CLOCK}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": CLOCK}
CALL = '<tool_call>{"name": "get_time", "arguments": {"zone": "utc"}}</tool_call>'


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Iterator[tuple[PreTrainedModel, PreTrainedTokenizerBase]]:
    """The tiny model on one thread: token by token, a second thread only waits (40x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    yield AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), tokenizer
    torch.set_num_threads(threads)


def prompt_ids(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    messages = [{"role": "user", "content": "Reply, please."}]
    rendered = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    return rendered["input_ids"]


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    grammar: Grammar,
    generator: torch.Generator,
    max_new_tokens: int = 200,
) -> str:
    """A reply drawn at temperature 1 from what the processor leaves, as the project's
    sampler does; fails unless it ends on the end-of-turn token within the budget."""
    ids = prompt_ids(tokenizer)
    eos = tokenizer.eos_token_id
    processor = ConstrainedDecoding(tokenizer, grammar, prompt_length=ids.shape[1], eos_ids=[eos])
    start = ids.shape[1]
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            scores = processor(ids, model(ids).logits[:, -1, :])
            token = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)
            ids = torch.cat([ids, token], dim=1)
            if int(token) == eos:
                return tokenizer.decode(ids[0, start:-1])
    raise AssertionError(f"no end of turn within {max_new_tokens} tokens")


def accepts(tokenizer: PreTrainedTokenizerBase, grammar: Grammar, reply: str) -> bool:
    """Whether ``reply`` is a whole reply the grammar allows: each token can be fed and the
    end-of-turn token may follow."""
    eos = tokenizer.eos_token_id
    processor = ConstrainedDecoding(tokenizer, grammar, prompt_length=0, eos_ids=[eos])
    ids = torch.tensor([tokenizer.encode(reply, add_special_tokens=False)])
    try:
        scores = processor(ids, torch.zeros(1, len(tokenizer)))
    except RuntimeError:
        return False
    return bool(scores[0, eos] == 0)


def test_json_object_replies_parse_as_objects(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    grammar = response_format_grammar({"type": "json_object"})
    assert grammar is not None
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        assert isinstance(json.loads(sample(model, tokenizer, grammar, generator)), dict)
    assert accepts(tokenizer, grammar, '{"a": [1, {"b": null}], "c": "d"}')
    assert not accepts(tokenizer, grammar, "[1, 2]")
    assert not accepts(tokenizer, grammar, '{"a": 1} and more')
    assert not accepts(tokenizer, grammar, '{"a": 1')


def test_json_schema_replies_validate_at_temperature_one(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "profile", "schema": PROFILE, "strict": True},
    }
    grammar = response_format_grammar(response_format)
    assert grammar is not None
    generator = torch.Generator().manual_seed(1)
    for _ in range(30):
        jsonschema.validate(json.loads(sample(model, tokenizer, grammar, generator)), PROFILE)


def test_greedy_generate_with_the_processor_validates(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    grammar = response_format_grammar({"type": "json_schema", "json_schema": {"schema": PROFILE}})
    assert grammar is not None
    ids = prompt_ids(tokenizer)
    eos = [tokenizer.eos_token_id]
    processor = ConstrainedDecoding(tokenizer, grammar, prompt_length=ids.shape[1], eos_ids=eos)
    output = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=200,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        logits_processor=LogitsProcessorList([processor]),
    )
    new_tokens = output[0, ids.shape[1] :].tolist()
    assert new_tokens[-1] == tokenizer.eos_token_id
    jsonschema.validate(json.loads(tokenizer.decode(new_tokens[:-1])), PROFILE)


def test_a_complete_reply_leaves_only_the_end_tokens(tiny: tuple[Any, Any]) -> None:
    _, tokenizer = tiny
    grammar = response_format_grammar({"type": "json_object"})
    assert grammar is not None
    ends = [tokenizer.eos_token_id, tokenizer.pad_token_id]
    processor = ConstrainedDecoding(tokenizer, grammar, prompt_length=0, eos_ids=ends)
    ids = torch.tensor([tokenizer.encode('{"a": 1}', add_special_tokens=False)])
    scores = processor(ids, torch.zeros(1, len(tokenizer)))
    assert torch.isfinite(scores[0]).nonzero().flatten().tolist() == sorted(ends)


def test_text_format_constrains_nothing() -> None:
    assert response_format_grammar({"type": "text"}) is None


@pytest.mark.parametrize(
    ("response_format", "problem"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}}, "foo"),
        ({"type": "json_schema", "json_schema": {"schema": {"$ref": "#/$defs/gone"}}}, "gone"),
        (
            {"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "("}}},
            "unclosed group",
        ),
        ({"type": "json_schema", "json_schema": {"schema": [1]}}, "must be an object"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "schema is required"),
        ({"type": "yaml"}, "'yaml'"),
    ],
)
def test_an_uncompilable_response_format_says_why(
    response_format: dict[str, Any], problem: str
) -> None:
    with pytest.raises(SchemaError, match=problem):
        response_format_grammar(response_format)


def test_a_required_tool_call_parses_and_matches_its_schema(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    grammar = tool_call_grammar(TOOLS, required=True, parallel=False, named=None)
    generator = torch.Generator().manual_seed(2)
    for _ in range(20):
        text, [call] = split_tool_calls(sample(model, tokenizer, grammar, generator))
        assert text == ""
        jsonschema.validate(call.arguments, SCHEMAS[call.name])


def test_a_named_tool_is_the_one_call(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    grammar = tool_call_grammar(TOOLS, required=False, parallel=False, named="get_weather")
    generator = torch.Generator().manual_seed(3)
    for _ in range(10):
        text, [call] = split_tool_calls(sample(model, tokenizer, grammar, generator))
        assert (text, call.name) == ("", "get_weather")
        jsonschema.validate(call.arguments, WEATHER)
    assert not accepts(tokenizer, grammar, CALL)


def test_what_each_tool_mode_accepts(tiny: tuple[Any, Any]) -> None:
    _, tokenizer = tiny
    optional = tool_call_grammar(TOOLS, required=False, parallel=True, named=None)
    single = tool_call_grammar(TOOLS, required=True, parallel=False, named=None)
    assert accepts(tokenizer, optional, "Plain text, no call.")
    assert accepts(tokenizer, optional, f"Checking the clock.\n{CALL}\n{CALL}")
    assert not accepts(tokenizer, optional, f"{CALL} then text")
    assert not accepts(tokenizer, optional, "Text <tool_call>not json</tool_call>")
    assert not accepts(tokenizer, optional, CALL.replace("get_time", "get_date"))
    assert not accepts(tokenizer, optional, CALL.replace('"utc"', '"pst"'))
    assert accepts(tokenizer, single, CALL)
    assert not accepts(tokenizer, single, f"{CALL}\n{CALL}")
    assert not accepts(tokenizer, single, "Plain text, no call.")


def test_tool_lists_that_cannot_constrain_say_why() -> None:
    with pytest.raises(SchemaError, match="'lookup'"):
        tool_call_grammar(TOOLS, required=True, parallel=False, named="lookup")
    with pytest.raises(SchemaError, match="at least one function"):
        tool_call_grammar([], required=True, parallel=False, named=None)
    bad = [{"type": "function", "function": {"name": "f", "parameters": {"type": "foo"}}}]
    with pytest.raises(SchemaError, match="foo"):
        tool_call_grammar(bad, required=True, parallel=False, named=None)
    with pytest.raises(SchemaError, match="parameters must be"):
        tool_call_grammar(
            [{"name": "f", "parameters": [1]}], required=True, parallel=False, named=None
        )


def test_tool_parameters_resolve_their_own_refs(tiny: tuple[Any, Any]) -> None:
    """Pydantic-style ``$defs`` resolve: each tool's parameters are the root of their schema."""
    _, tokenizer = tiny
    parameters = {
        "$defs": {"Unit": {"enum": ["c", "f"]}},
        "type": "object",
        "properties": {"unit": {"$ref": "#/$defs/Unit"}},
        "required": ["unit"],
    }
    grammar = tool_call_grammar(
        [{"name": "set_unit", "parameters": parameters}], required=True, parallel=False, named=None
    )
    call = '<tool_call>{"name": "set_unit", "arguments": {"unit": "%s"}}</tool_call>'
    assert accepts(tokenizer, grammar, call % "c")
    assert not accepts(tokenizer, grammar, call % "k")


def test_tokenizer_info_is_built_once_per_tokenizer(tiny: tuple[Any, Any]) -> None:
    _, tokenizer = tiny
    assert tokenizer_info(tokenizer) is tokenizer_info(tokenizer)


@pytest.mark.slow  # converts the real model's files
def test_smollm2_answers_a_json_object_greedily(tmp_path: Path) -> None:
    path = pull_builtin_model(Settings(data_dir=tmp_path), DEFAULT_MODEL, lambda _: None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    grammar = response_format_grammar({"type": "json_object"})
    assert grammar is not None
    messages = [
        {"role": "user", "content": "Describe Paris as JSON: its name, country and population."}
    ]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    start = inputs["input_ids"].shape[1]
    eos = [tokenizer.eos_token_id]
    processor = ConstrainedDecoding(tokenizer, grammar, prompt_length=start, eos_ids=eos)
    output = model.generate(
        **inputs,
        max_new_tokens=96,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=eos[0],
        logits_processor=LogitsProcessorList([processor]),
    )
    new_tokens = output[0, start:].tolist()
    assert new_tokens[-1] in eos
    assert isinstance(json.loads(tokenizer.decode(new_tokens[:-1])), dict)
