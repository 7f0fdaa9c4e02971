"""Tools and tool calls render the same way for training and for inference, and read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tuneforge.config import Settings
from tuneforge.providers.chat_format import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    ToolCall,
    chat_for_template,
    split_tool_calls,
    template_knows_tools,
)
from tuneforge.providers.local.data import IGNORE_INDEX, encode_chat_example
from tuneforge.store.base_models import DEFAULT_MODEL, pull_builtin_model

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "Look an order up.",
            "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}},
        },
    },
    {"type": "function", "function": {"name": "refund", "parameters": {"type": "object"}}},
]
CALLS = [ToolCall("get_order", {"id": 42}), ToolCall("refund", {"reason": "late ✈"})]
CONVERSATION: dict[str, Any] = {
    "tools": TOOLS,
    "messages": [
        {"role": "user", "content": "Where is order 42? Refund it if it is late."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for i, c in enumerate(CALLS)
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "late by 3 days"},
        {"role": "tool", "tool_call_id": "call_1", "content": "refunded"},
        {"role": "assistant", "content": "It was late, so I refunded it."},
    ],
}
TOOL_AWARE_TEMPLATE = (
    "{% if tools %}TOOLS:{{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}"
    "{% for c in m.get('tool_calls') or [] %}CALL:{{ c['function'] | tojson }}{% endfor %}"
    "</{{ m['role'] }}>\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture
def tiny_tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def assert_round_trip(tokenizer: PreTrainedTokenizerBase) -> None:
    """The calls render into the learned tokens, and those tokens parse back to the calls."""
    assert not template_knows_tools(tokenizer)
    encoded = encode_chat_example(tokenizer, CONVERSATION, 4096)
    text = tokenizer.decode(encoded.input_ids)
    assert '"name": "get_order"' in text and "late by 3 days" in text and "refunded" in text
    assert text.count("get_order") == 2  # its definition in the system turn, and the call
    learned = tokenizer.decode([t for t in encoded.targets if t != IGNORE_INDEX])
    call_turn = learned.split(tokenizer.eos_token)[0]
    assert call_turn.startswith(TOOL_CALL_OPEN)
    assert split_tool_calls(call_turn) == ("", CALLS)

    chat, tools = chat_for_template(tokenizer, CONVERSATION["messages"][:1], TOOLS)
    prompt = tokenizer.apply_chat_template(chat, tools=tools, tokenize=False)
    assert prompt in text  # inference renders the prompt exactly as training did


def test_the_fallback_format_round_trips_on_the_tiny_model(
    tiny_tokenizer: PreTrainedTokenizerBase,
) -> None:
    assert_round_trip(tiny_tokenizer)


@pytest.mark.slow  # converts the real model's files
def test_the_fallback_format_round_trips_on_smollm2s_template(tmp_path: Path) -> None:
    path = pull_builtin_model(Settings(data_dir=tmp_path), DEFAULT_MODEL, lambda _: None)
    assert_round_trip(AutoTokenizer.from_pretrained(path))


def test_a_template_that_knows_tools_renders_them_itself(
    tiny_tokenizer: PreTrainedTokenizerBase,
) -> None:
    tiny_tokenizer.chat_template = TOOL_AWARE_TEMPLATE
    assert template_knows_tools(tiny_tokenizer)
    chat, tools = chat_for_template(tiny_tokenizer, CONVERSATION["messages"], TOOLS)
    assert tools == TOOLS
    assert chat[1]["tool_calls"][0]["function"] == {"name": "get_order", "arguments": {"id": 42}}
    text = tiny_tokenizer.apply_chat_template(chat, tools=tools, tokenize=False)
    assert TOOL_CALL_OPEN not in text
    assert 'CALL:{"name": "get_order", "arguments": {"id": 42}}' in text


def test_generated_text_gives_its_calls_and_keeps_what_is_not_a_call() -> None:
    text = (
        f'Checking.\n{TOOL_CALL_OPEN}{{"name": "get_order", "arguments": {{"id": 7}}}}'
        f"{TOOL_CALL_CLOSE}\n{TOOL_CALL_OPEN}not json{TOOL_CALL_CLOSE}"
    )
    content, calls = split_tool_calls(text)
    assert calls == [ToolCall("get_order", {"id": 7})]
    assert content == f"Checking.\n\n{TOOL_CALL_OPEN}not json{TOOL_CALL_CLOSE}"
    assert split_tool_calls("no calls here ") == ("no calls here ", [])
    string_arguments = f'{TOOL_CALL_OPEN}{{"name": "f", "arguments": "{{}}"}}{TOOL_CALL_CLOSE}'
    assert split_tool_calls(string_arguments) == ("", [ToolCall("f", {})])
