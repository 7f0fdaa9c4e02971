"""Tool calls in a generated reply, read out into OpenAI's shape, whole or as a stream.

Models write calls in the format ``providers/chat_format.py`` trains them on; a reply is
split into its text and its calls. A streamed reply sends its text as it comes until a
call may be starting, then waits for the end of the reply to read the calls, since a call
is only known to be one once its JSON is complete.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from tuneforge.inference.generation import Completion
from tuneforge.inference.schemas import CompletionFinish, FunctionCall, ToolCallOut
from tuneforge.providers.chat_format import TOOL_CALL_OPEN, ToolCall, split_tool_calls


@dataclass(frozen=True)
class Reply:
    content: str | None
    tool_calls: list[ToolCallOut] | None
    finish_reason: CompletionFinish


def openai_call(call: ToolCall) -> ToolCallOut:
    arguments = json.dumps(call.arguments, ensure_ascii=False)
    return ToolCallOut(
        id=f"call_{uuid.uuid4().hex[:24]}",
        function=FunctionCall(name=call.name, arguments=arguments),
    )


def read_reply(text: str, finish_reason: CompletionFinish, *, parallel: bool) -> Reply:
    """The reply's text and calls; with ``parallel`` off, only its first call (OpenAI's
    contract: at most one)."""
    content, calls = split_tool_calls(text)
    if not calls:
        return Reply(text, None, finish_reason)
    kept = calls if parallel else calls[:1]
    return Reply(content or None, [openai_call(call) for call in kept], "tool_calls")


def reply_of(completion: Completion, *, tools: bool, parallel: bool) -> Reply:
    if not tools:
        return Reply(completion.text, None, completion.finish_reason)
    return read_reply(completion.text, completion.finish_reason, parallel=parallel)


class StreamedReply:
    """Feeds on text deltas and gives back what can be sent as content now."""

    def __init__(self) -> None:
        self._pending = ""
        self._in_calls = False

    def feed(self, delta: str) -> str:
        if self._in_calls:
            self._pending += delta
            return ""
        text = self._pending + delta
        start = text.find(TOOL_CALL_OPEN)
        if start >= 0:
            self._in_calls = True
            self._pending = text[start:]
            return text[:start]
        held = _partial_marker(text)
        self._pending = text[len(text) - held :] if held else ""
        return text[: len(text) - held]

    def finish(self, finish_reason: CompletionFinish, *, parallel: bool) -> Reply:
        """What is left once generation ended: trailing text, and the calls read."""
        return read_reply(self._pending, finish_reason, parallel=parallel)


def _partial_marker(text: str) -> int:
    """How many trailing characters could be the start of a call's opening tag."""
    for length in range(min(len(TOOL_CALL_OPEN) - 1, len(text)), 0, -1):
        if text.endswith(TOOL_CALL_OPEN[:length]):
            return length
    return 0
