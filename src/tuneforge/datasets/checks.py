"""Per-example format checks: OpenAI's chat fine-tuning data rules, with message indexes.

The checks are those of OpenAI's "Data preparation and analysis for chat model
fine-tuning" cookbook, plus the ones its API applies that the cookbook leaves out (weights,
tool calls, tool definitions), so users see every problem before a job is created.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

ALLOWED_MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "weight", "tool_calls", "function_call", "tool_call_id", "refusal"}
)
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_STRING_FIELDS = ("name", "tool_call_id", "refusal")
_PLAIN_ROLES = frozenset({"system", "developer", "user", "assistant"})


class Issue(TypedDict):
    code: str
    message: str
    message_index: NotRequired[int]


def make_issue(code: str, message: str, index: int | None = None) -> Issue:
    if index is None:
        return {"code": code, "message": message}
    return {"code": code, "message": message, "message_index": index}


def validate_chat_example(payload: Any) -> tuple[list[Issue], list[Issue]]:
    """(errors, warnings) of one example's format; token-based checks live in the builder."""
    if not isinstance(payload, dict):
        return [make_issue("data_type", "Each example must be a JSON object")], []
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        missing = make_issue("missing_messages_list", 'Example needs a non-empty "messages" list')
        return [missing], []
    errors: list[Issue] = []
    roles: set[str] = set()
    trained = False
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            errors.append(make_issue("data_type", "Each message must be a JSON object", index))
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
                make_issue("message_unrecognized_key", f"Unrecognized key(s): {unknown}", index)
            )
        if "role" not in message:
            errors.append(make_issue("message_missing_key", "Message has no 'role'", index))
        elif type(role) is not str or role not in ROLES:
            allowed = ", ".join(sorted(ROLES))
            errors.append(
                make_issue("unrecognized_role", f"Role {role!r} is not one of {allowed}", index)
            )
        else:
            roles.add(role)
        errors.extend(_check_message(message, role, index))
        if role == "assistant" and message.get("weight", 1) != 0:
            trained = True
    if "assistant" not in roles:
        errors.append(
            make_issue("example_missing_assistant_message", "Example has no assistant message")
        )
    tools = payload.get("tools")
    if tools is not None and not _valid_tools(tools):
        errors.append(make_issue("invalid_tools", _BAD_TOOLS))
    warnings: list[Issue] = []
    if "system" not in roles and "developer" not in roles:
        warnings.append(make_issue("missing_system_message", "Example has no system message"))
    if "user" not in roles:
        warnings.append(make_issue("missing_user_message", "Example has no user message"))
    if "assistant" in roles and not trained:
        warnings.append(
            make_issue("no_trained_assistant_message", "Every assistant message has weight 0")
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
    return [make_issue(code, text, index) for code, text in issues]


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
