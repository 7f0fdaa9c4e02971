"""Per-example format checks: OpenAI's chat fine-tuning data rules, with message indexes.

The checks are those of OpenAI's "Data preparation and analysis for chat model
fine-tuning" cookbook, plus the ones its API applies that the cookbook leaves out (weights,
tool calls, tool definitions), so users see every problem before a job is created.
Preference pairs (OpenAI's DPO format) are checked with the same message rules for their
prompt, plus the shape of their two replies.
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
    errors, roles, trained = _check_messages(messages)
    if "assistant" not in roles:
        errors.append(
            make_issue("example_missing_assistant_message", "Example has no assistant message")
        )
    tools = payload.get("tools")
    if tools is not None and not _valid_tools(tools):
        errors.append(make_issue("invalid_tools", _BAD_TOOLS))
    warnings = _context_warnings(roles)
    if "assistant" in roles and not trained:
        warnings.append(
            make_issue("no_trained_assistant_message", "Every assistant message has weight 0")
        )
    return errors, warnings


def _check_messages(messages: list[Any]) -> tuple[list[Issue], set[str], bool]:
    """Errors of each message, the roles seen, and whether an assistant turn is trained."""
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
    return errors, roles, trained


def _context_warnings(roles: set[str]) -> list[Issue]:
    warnings: list[Issue] = []
    if "system" not in roles and "developer" not in roles:
        warnings.append(make_issue("missing_system_message", "Example has no system message"))
    if "user" not in roles:
        warnings.append(make_issue("missing_user_message", "Example has no user message"))
    return warnings


# OpenAI's DPO format: {"input": {"messages", "tools"?}, "preferred_output": [assistant
# message], "non_preferred_output": [assistant message]}.
PREFERENCE_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
PREFERENCE_OUTPUTS = ("preferred_output", "non_preferred_output")
_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})


def is_preference_example(payload: Any) -> bool:
    """Whether a line is meant as a preference pair: it has a DPO key and no "messages"."""
    return (
        isinstance(payload, dict)
        and "messages" not in payload
        and bool(payload.keys() & PREFERENCE_KEYS)
    )


def validate_preference_example(payload: dict[str, Any]) -> tuple[list[Issue], list[Issue]]:
    """(errors, warnings) of a preference pair's format. Message indexes count the prompt's
    ``input.messages``; a problem in a reply names the reply."""
    errors: list[Issue] = []
    warnings: list[Issue] = []
    if unknown := sorted(payload.keys() - PREFERENCE_KEYS):
        errors.append(
            make_issue(
                "unrecognized_key",
                f"Unrecognized key(s): {', '.join(unknown)}; a preference pair has "
                '"input", "preferred_output" and "non_preferred_output"',
            )
        )
    source = payload.get("input")
    messages = source.get("messages") if isinstance(source, dict) else None
    if not isinstance(source, dict) or not isinstance(messages, list) or not messages:
        errors.append(
            make_issue(
                "missing_input", '"input" must be an object with a non-empty "messages" list'
            )
        )
    else:
        if unknown := sorted(source.keys() - _INPUT_KEYS):
            errors.append(
                make_issue(
                    "unrecognized_key", f"Unrecognized key(s) in input: {', '.join(unknown)}"
                )
            )
        message_errors, roles, _ = _check_messages(messages)
        errors += message_errors
        errors += [
            make_issue("invalid_weight", "Prompt messages are never learned; remove 'weight'", i)
            for i, m in enumerate(messages)
            if isinstance(m, dict) and "weight" in m
        ]
        tools = source.get("tools")
        if tools is not None and not _valid_tools(tools):
            errors.append(make_issue("invalid_tools", _BAD_TOOLS))
        if "parallel_tool_calls" in source:
            warnings.append(
                make_issue(
                    "ignored_field",
                    "input.parallel_tool_calls is not used by local training and is not kept",
                )
            )
        warnings += _context_warnings(roles)
    for name in PREFERENCE_OUTPUTS:
        errors += _check_output(name, payload.get(name))
    if not errors and payload["preferred_output"] == payload["non_preferred_output"]:
        errors.append(
            make_issue(
                "identical_outputs",
                "preferred_output and non_preferred_output are the same reply: nothing to learn",
            )
        )
    return errors, warnings


def _check_output(name: str, output: Any) -> list[Issue]:
    """A reply must be a list of exactly one assistant message (OpenAI's rule for DPO)."""
    if not isinstance(output, list) or len(output) != 1 or not isinstance(output[0], dict):
        return [make_issue("invalid_output", f'"{name}" must be a list of one assistant message')]
    message = output[0]
    issues: list[Issue] = []
    if message.get("role") != "assistant":
        issues.append(make_issue("invalid_output", f"{name}: the reply's role must be 'assistant'"))
    if not message.keys() <= ALLOWED_MESSAGE_KEYS - {"weight"}:
        unknown = ", ".join(sorted(message.keys() - (ALLOWED_MESSAGE_KEYS - {"weight"})))
        issues.append(
            make_issue("message_unrecognized_key", f"{name}: unrecognized key(s): {unknown}")
        )
    issues += [
        make_issue(issue["code"], f"{name}: {issue['message']}")
        for issue in _check_message(message, "assistant", 0)
    ]
    return issues


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
