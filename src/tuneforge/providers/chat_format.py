"""How a conversation with tools reaches a local model, the same at training and at inference.

A chat template that knows tools (probed once per template: a rendered tool definition, call
and result all show up in its text) renders them itself. For a template that does not, such
as SmolLM2's, which would silently drop them, TuneForge renders one fallback format:

- the tool definitions, one JSON object per line between ``<tools>`` tags, close the system
  turn (one is added when the conversation has none), after a line saying how to call them;
- each call the assistant makes is a line ``<tool_call>{"name": ..., "arguments": {...}}
  </tool_call>`` after its text, so the loss covers the call's tokens;
- tool results go back as a user turn of ``<tool_response>`` blocks (several results in a
  row share one turn), which every template can render.

``split_tool_calls`` reads calls back out of generated text in the same format, which is
also the one Hermes- and Qwen-style templates use.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the server imports this module; transformers loads with the first model
    from transformers import PreTrainedTokenizerBase

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOLS_PREAMBLE = (
    "You can call the following tools. To call one, reply with a line "
    f'{TOOL_CALL_OPEN}{{"name": <tool name>, "arguments": <JSON object>}}{TOOL_CALL_CLOSE} '
    "for each call."
)
_CALL = re.compile(re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(TOOL_CALL_CLOSE), re.S)
_PROBE_TOOL = "tuneforge_probe_tool"
_PROBE_CALL = "tuneforge_probe_call"
_PROBE_RESULT = "tuneforge_probe_result"
_ROLE_ALIASES = {"developer": "system", "function": "tool"}
_knows_tools: dict[str, bool] = {}


class UnrepresentableMessage(ValueError):
    """A message the rendering cannot carry to the model; its text names what and where."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def as_json(self) -> str:
        return json.dumps({"name": self.name, "arguments": self.arguments}, ensure_ascii=False)


def template_knows_tools(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the chat template renders tool definitions, calls and results itself."""
    template = str(tokenizer.chat_template or "")
    if template not in _knows_tools:
        _knows_tools[template] = _probe(tokenizer)
    return _knows_tools[template]


def _probe(tokenizer: PreTrainedTokenizerBase) -> bool:
    tools = [{"type": "function", "function": {"name": _PROBE_TOOL, "parameters": {}}}]
    messages = [
        {"role": "user", "content": "probe"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_probe",
                    "type": "function",
                    "function": {"name": _PROBE_CALL, "arguments": {}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_probe", "content": _PROBE_RESULT},
    ]
    try:
        text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    except Exception:  # a template that refuses tools or tool roles does not know them
        return False
    return all(marker in str(text) for marker in (_PROBE_TOOL, _PROBE_CALL, _PROBE_RESULT))


def text_of(content: Any) -> str:
    """A message's text: a string, or its text parts joined."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def _plain_text(message: dict[str, Any]) -> str:
    return text_of(message.get("content")) or message.get("refusal") or ""


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """A call's arguments as an object; OpenAI's format carries them as a JSON string."""
    value = json.loads(arguments) if isinstance(arguments, str) else arguments
    if not isinstance(value, dict):
        raise UnrepresentableMessage("tool call arguments must be a JSON object")
    return value


def calls_of(message: dict[str, Any]) -> list[ToolCall]:
    """The calls an assistant message makes (``tool_calls``, or the older ``function_call``)."""
    functions = [call.get("function") or {} for call in message.get("tool_calls") or ()]
    if message.get("function_call"):
        functions.append(message["function_call"])
    calls = []
    for function in functions:
        try:
            calls.append(ToolCall(str(function["name"]), parse_arguments(function["arguments"])))
        except (KeyError, ValueError) as exc:
            raise UnrepresentableMessage(
                f"tool call {function.get('name')!r} has arguments that are not a JSON object"
            ) from exc
    return calls


def assistant_text(message: dict[str, Any]) -> str:
    """An assistant turn as the model writes it in the fallback format: its text, then a
    tagged line per call."""
    calls = [f"{TOOL_CALL_OPEN}{call.as_json()}{TOOL_CALL_CLOSE}" for call in calls_of(message)]
    return "\n".join(part for part in (_plain_text(message), *calls) if part)


def chat_for_template(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages (and tools) to hand the chat template: OpenAI messages made plain, and
    tools and calls in the fallback format unless the template knows them.

    A message's ``weight`` is kept (for the trainer to read), never rendered."""
    uses_tools = bool(tools) or any(
        m.get("tool_calls") or m.get("function_call") or m.get("role") in ("tool", "function")
        for m in messages
    )
    if uses_tools and template_knows_tools(tokenizer):
        return [_native(m) for m in messages], tools
    out: list[dict[str, Any]] = []
    for message in messages:
        role = _ROLE_ALIASES.get(message["role"], message["role"])
        plain = {"role": role, "content": _plain_text(message)}
        if "weight" in message:
            plain["weight"] = message["weight"]
        if role == "assistant":
            plain["content"] = assistant_text(message)
        elif role == "tool":
            block = f"<tool_response>\n{plain['content']}\n</tool_response>"
            if out and out[-1].get("tool_results"):
                out[-1]["content"] += "\n" + block
                continue
            plain = {"role": "user", "content": block, "tool_results": True}
        out.append(plain)
    if tools:
        definitions = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
        block = f"{TOOLS_PREAMBLE}\n<tools>\n{definitions}\n</tools>"
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{block}" if out[0]["content"] else block
        else:
            out.insert(0, {"role": "system", "content": block})
    for message in out:
        message.pop("tool_results", None)
    return out, None


def _native(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI message as tool-aware templates take it: arguments as objects."""
    out = {k: v for k, v in message.items() if k not in ("refusal", "function_call")}
    out["role"] = _ROLE_ALIASES.get(message["role"], message["role"])
    out["content"] = _plain_text(message)
    calls = calls_of(message)
    if calls:
        ids = [c.get("id") for c in message.get("tool_calls") or ()]
        out["tool_calls"] = [
            {
                "id": ids[i] if i < len(ids) else f"call_{i}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for i, call in enumerate(calls)
        ]
    return out


def split_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """Generated text as (the text outside calls, the calls it makes). A tagged block that
    does not parse as a call stays in the text, so nothing the model said is lost."""
    calls: list[ToolCall] = []

    def take(match: re.Match[str]) -> str:
        try:
            body = json.loads(match.group(1))
            call = ToolCall(str(body["name"]), parse_arguments(body.get("arguments", {})))
        except (ValueError, KeyError, TypeError):
            return match.group(0)
        calls.append(call)
        return ""

    rest = _CALL.sub(take, text)
    return (rest.strip() if calls else text), calls
