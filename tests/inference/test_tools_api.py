"""Tools and structured outputs through ``/v1/chat/completions`` with the official SDK.

The tiny model's weights are random, so every structured reply here is the grammar's work:
whatever the model would say, ``tool_choice`` "required" or a named function gets a call
whose arguments match the tool's schema, and a ``json_schema`` response validates.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tests.fixtures.tiny_model import TINY_BASE_MODEL
from tuneforge.inference.tools import StreamedReply, read_reply
from tuneforge.providers.chat_format import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

pytestmark = pytest.mark.usefixtures("installed_tiny_model")

ORDER_ID = {"type": "integer", "minimum": 1, "maximum": 99_999}
ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": ORDER_ID, "express": {"type": "boolean"}},
    "required": ["order_id", "express"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "track_order",
            "description": "Where an order is.",
            "parameters": ORDER_SCHEMA,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "cancel_order",
            "parameters": {
                "type": "object",
                "properties": {"order_id": ORDER_ID},
                "required": ["order_id"],
                "additionalProperties": False,
            },
        },
    },
]
ASK: list[Any] = [{"role": "user", "content": "Where is order 42?"}]
TICKET = {
    "type": "object",
    "properties": {
        "priority": {"enum": ["low", "high"]},
        "summary": {"type": "string", "maxLength": 40},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
    },
    "required": ["priority", "summary", "tags"],
    "additionalProperties": False,
}


def schema_of(name: str) -> dict[str, Any]:
    return next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)


def test_a_required_call_names_a_tool_with_arguments_that_match_its_schema(
    sdk: openai.OpenAI,
) -> None:
    reply = sdk.chat.completions.create(
        model=TINY_BASE_MODEL,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        temperature=0,
        max_tokens=80,
    )

    [choice] = reply.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), schema_of(call.function.name))


def test_a_streamed_call_is_the_same_call(sdk: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": TINY_BASE_MODEL,
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "cancel_order"}},
        "temperature": 0,
        "max_tokens": 80,
    }
    whole = sdk.chat.completions.create(**request).choices[0].message.tool_calls or []

    names, arguments, finish = {}, {}, None
    for chunk in sdk.chat.completions.create(**request, stream=True):
        for delta in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
            names[delta.index] = names.get(delta.index, "") + (delta.function.name or "")
            arguments[delta.index] = arguments.get(delta.index, "") + delta.function.arguments
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason

    assert [c.function.name for c in whole] == ["cancel_order"] == list(names.values())
    assert [json.loads(c.function.arguments) for c in whole] == [
        json.loads(a) for a in arguments.values()
    ]
    assert finish == "tool_calls"


def test_tool_choice_none_answers_in_text_and_tool_turns_are_read_back(
    sdk: openai.OpenAI,
) -> None:
    history: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "track_order",
                        "arguments": '{"order_id": 42, "express": false}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "In transit, arriving Friday."},
    ]
    reply = sdk.chat.completions.create(
        model=TINY_BASE_MODEL, messages=history, tools=TOOLS, tool_choice="none", max_tokens=8
    )

    [choice] = reply.choices
    assert choice.message.tool_calls is None and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")


def test_a_json_schema_response_validates_every_time_at_temperature_1(
    sdk: openai.OpenAI,
) -> None:
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "ticket", "schema": TICKET, "strict": True},
    }
    for seed in range(20):
        reply = sdk.chat.completions.create(
            model=TINY_BASE_MODEL,
            messages=ASK,
            response_format=response_format,
            temperature=1,
            seed=seed,
            max_tokens=120,
        )
        jsonschema.validate(json.loads(reply.choices[0].message.content or ""), TICKET)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "no-such-type"}},
                }
            },
            400,
            "response_format",
        ),
        ({"response_format": {"type": "json_schema"}}, 422, "response_format"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "refund"}}},
            422,
            None,
        ),
        ({"tool_choice": "required"}, 422, None),
        ({"tools": [TOOLS[0], TOOLS[0]]}, 422, None),
        ({"messages": [{"role": "tool", "content": "orphan"}]}, 422, "messages.0"),
    ],
)
def test_bad_tool_and_format_requests_name_what_is_wrong(
    client: TestClient, account: Account, body: dict[str, Any], status: int, param: str | None
) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={"model": TINY_BASE_MODEL, "messages": ASK, **body},
        headers=account.headers,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert (error["param"] or "").startswith(param), error


def call_text(name: str, **arguments: Any) -> str:
    return f"{TOOL_CALL_OPEN}{json.dumps({'name': name, 'arguments': arguments})}{TOOL_CALL_CLOSE}"


def test_a_reply_reads_as_text_and_calls_whole_or_streamed_in_any_pieces() -> None:
    text = "Let me look.\n" + call_text("track_order", order_id=42, express=True)
    whole = read_reply(text, "stop", parallel=True)
    assert whole.content == "Let me look." and whole.finish_reason == "tool_calls"
    assert [c.function.name for c in whole.tool_calls or []] == ["track_order"]

    for size in (1, 3, 7, len(text)):
        reader = StreamedReply()
        sent = "".join(reader.feed(text[i : i + size]) for i in range(0, len(text), size))
        rest = reader.finish("stop", parallel=True)
        assert sent == "Let me look.\n" and rest.content is None
        assert [c.function.arguments for c in rest.tool_calls or []] == [
            '{"order_id": 42, "express": true}'
        ]
    plain = StreamedReply()
    assert (
        plain.feed("a < b <tool") == "a < b "
        and plain.finish("stop", parallel=True).content == "<tool"
    )
    two = read_reply(call_text("a") + "\n" + call_text("b"), "stop", parallel=False)
    assert [c.function.name for c in two.tool_calls or []] == ["a"]
