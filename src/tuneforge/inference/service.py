"""Agent chat and OpenAI-style completions on local models, logged and metered.

A generation takes seconds, so no database transaction stays open across one: reads run
in a short unit of work before it, the conversation log and usage row in another after
it. (An open transaction would hold a pooled connection, and on SQLite the write lock,
for the whole generation.) A failed call still gets a usage row, written in its own unit
of work. Streams hand their text over from the generation thread one delta at a time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from sqlalchemy.orm import Session

from tuneforge.agents import service as agents_service
from tuneforge.agents.schemas import ConversationCreate, MessageIn, MessageRole, ToolCall
from tuneforge.datasets.importers import message_dict
from tuneforge.db.base import utcnow
from tuneforge.db.engine import unit_of_work
from tuneforge.db.scoping import get_owned
from tuneforge.db.tables.agents import Conversation, ConversationMessage
from tuneforge.errors import BadRequest, NotFound
from tuneforge.inference import repository
from tuneforge.inference.calls import (
    Call,
    InferenceRuntime,
    deltas,
    error_detail,
    metered,
    metered_stream,
    record_failure_shielded,
    usage_of,
)
from tuneforge.inference.constrained import (
    Grammar,
    SchemaError,
    response_format_grammar,
    tool_call_grammar,
)
from tuneforge.inference.generation import Completion, CompletionStream, SamplingParams
from tuneforge.inference.schemas import (
    AgentChatRequest,
    AgentChatResponse,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    ChunkDelta,
    ChunkFunction,
    ChunkToolCall,
    CompletionFinish,
    CompletionMessage,
    ModelList,
    ToolCallOut,
)
from tuneforge.inference.targets import list_model_cards, resolve_agent_model, resolve_model
from tuneforge.inference.tools import Reply, StreamedReply, reply_of
from tuneforge.sse import sse_message

TITLE_LENGTH = 80


# Agent chat ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _AgentChat:
    """A prepared agent chat, as plain values that outlive the session that read them."""

    call: Call
    conversation_id: str | None
    prompt: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    new_messages: list[MessageIn]
    params: SamplingParams


def _prepare_agent_chat(
    runtime: InferenceRuntime, organization_id: str, agent_id: str, request: AgentChatRequest
) -> _AgentChat:
    with unit_of_work(runtime.session_factory) as session:
        agent = agents_service.get_agent(session, organization_id, agent_id)
        target = resolve_agent_model(session, runtime.settings, agent)
        history: list[dict[str, Any]] = []
        if request.conversation_id is not None:
            _, stored = agents_service.get_conversation(
                session, organization_id, agent.id, request.conversation_id
            )
            history = [message_dict(m) for m in stored]
        new = [m.model_dump(mode="json", exclude_none=True) for m in request.messages]
        system = [{"role": "system", "content": agent.system_prompt}]
        has_system = any(m["role"] == "system" for m in history + new)
        prompt = (system if agent.system_prompt and not has_system else []) + history + new
        return _AgentChat(
            call=Call(organization_id, target, agent.id),
            conversation_id=request.conversation_id,
            prompt=prompt,
            tools=agent.tools,
            new_messages=list(request.messages),
            params=SamplingParams(
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
            ),
        )


def _log_exchange(session: Session, chat: _AgentChat, reply: Reply) -> str:
    """Store the new turn and the reply (its tool calls too, so an import gets them back)
    in a new conversation or the continued one."""
    call = chat.call
    assert call.agent_id is not None
    answer = MessageIn(
        role=MessageRole.ASSISTANT,
        content=reply.content,
        tool_calls=[ToolCall.model_validate(c.model_dump()) for c in reply.tool_calls or ()]
        or None,
    )
    turn = [*chat.new_messages, answer]
    if chat.conversation_id is None:
        first_user = next((m.content for m in turn if m.role == MessageRole.USER), None) or ""
        conversation, _ = agents_service.create_conversation(
            session,
            call.organization_id,
            call.agent_id,
            ConversationCreate(messages=turn, title=first_user.strip()[:TITLE_LENGTH] or None),
        )
        return conversation.id
    conversation = get_owned(
        session,
        Conversation,
        chat.conversation_id,
        call.organization_id,
        label="Conversation",
        for_update=True,
    )
    if conversation.agent_id != call.agent_id:
        raise NotFound(f"Conversation {chat.conversation_id} not found")
    start = repository.next_message_position(session, conversation.id)
    session.add_all(
        ConversationMessage(
            conversation_id=conversation.id,
            position=start + offset,
            role=message.role.value,
            content=message.content,
            name=message.name,
            tool_calls=[c.model_dump() for c in message.tool_calls] if message.tool_calls else None,
            tool_call_id=message.tool_call_id,
        )
        for offset, message in enumerate(turn)
    )
    conversation.updated_at = utcnow()
    session.flush()
    return conversation.id


def _finish_agent_chat(
    runtime: InferenceRuntime, chat: _AgentChat, completion: Completion
) -> AgentChatResponse:
    reply = reply_of(completion, tools=bool(chat.tools), parallel=True)
    with unit_of_work(runtime.session_factory) as session:
        conversation_id = _log_exchange(session, chat, reply)
        chat.call.record(session, completion)
    return AgentChatResponse(
        conversation_id=conversation_id,
        message=AssistantMessage(content=reply.content, tool_calls=reply.tool_calls),
        usage=usage_of(completion),
        model=chat.call.target.public_id,
        finish_reason=reply.finish_reason,
    )


def chat_with_agent(
    runtime: InferenceRuntime, organization_id: str, agent_id: str, request: AgentChatRequest
) -> AgentChatResponse:
    chat = _prepare_agent_chat(runtime, organization_id, agent_id, request)
    source = chat.call.target.source
    return metered(
        runtime,
        chat.call,
        lambda: _finish_agent_chat(
            runtime, chat, runtime.engine.complete(source, chat.prompt, chat.params, chat.tools)
        ),
    )


def stream_agent_chat(
    runtime: InferenceRuntime, organization_id: str, agent_id: str, request: AgentChatRequest
) -> AsyncIterator[str]:
    """SSE events; loading errors raise here so they still get a plain HTTP error status."""
    chat = _prepare_agent_chat(runtime, organization_id, agent_id, request)
    source = chat.call.target.source
    stream, release = metered_stream(
        runtime,
        chat.call,
        lambda: runtime.engine.stream(source, chat.prompt, chat.params, chat.tools),
    )
    return _agent_chat_events(runtime, chat, stream, release)


async def _agent_chat_events(
    runtime: InferenceRuntime,
    chat: _AgentChat,
    stream: CompletionStream,
    release: Callable[[], None],
) -> AsyncIterator[str]:
    finished = False
    reader = StreamedReply() if chat.tools else None
    try:
        async for delta in deltas(stream):
            text = reader.feed(delta) if reader else delta
            if text:
                yield sse_message({"content": text}, event="delta")
        assert stream.result is not None
        if reader is not None:
            rest = reader.finish(stream.result.finish_reason, parallel=True)
            if rest.content and not rest.tool_calls:
                yield sse_message({"content": rest.content}, event="delta")
        response = await anyio.to_thread.run_sync(_finish_agent_chat, runtime, chat, stream.result)
        finished = True
        yield sse_message(response, event="done")
    except Exception as exc:
        error, detail = error_detail(exc)
        yield sse_message({"error": error, "detail": detail}, event="error")
    finally:
        stream.close()
        release()
        if not finished:
            await record_failure_shielded(runtime, chat.call)


# OpenAI-compatible API ----------------------------------------------------------------


def list_models(runtime: InferenceRuntime, organization_id: str) -> ModelList:
    with unit_of_work(runtime.session_factory) as session:
        return ModelList(data=list_model_cards(session, runtime.settings, organization_id))


@dataclass(frozen=True)
class _CompletionCall:
    call: Call
    params: SamplingParams
    prompt: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None  # rendered into the prompt; None when tool_choice is none
    parallel_tool_calls: bool


def _prepare_completion(
    runtime: InferenceRuntime, organization_id: str, request: ChatCompletionRequest
) -> _CompletionCall:
    with unit_of_work(runtime.session_factory) as session:
        target = resolve_model(session, runtime.settings, organization_id, request.model)
    tools = (
        [tool.model_dump(exclude_none=True) for tool in request.tools or ()]
        if request.tool_mode
        else None
    )
    params = SamplingParams(
        max_tokens=request.token_limit,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop_strings,
        seed=request.seed,
        grammar=_grammar(request, tools),
    )
    return _CompletionCall(
        Call(organization_id, target, agent_id=None),
        params,
        [message.as_prompt_message() for message in request.messages],
        tools,
        request.parallel_tool_calls,
    )


def _grammar(request: ChatCompletionRequest, tools: list[dict[str, Any]] | None) -> Grammar | None:
    """What decoding must follow: calls when tool_choice requires one or a tool is strict,
    else the response format. A schema that does not compile is a 400 naming its field."""
    mode = request.tool_mode
    strict = any(tool.function.strict for tool in request.tools or ())
    try:
        if tools and (mode != "auto" or strict):
            named = None if mode in ("auto", "required") else mode
            return tool_call_grammar(
                tools,
                required=mode != "auto",
                parallel=request.parallel_tool_calls,
                named=named,
            )
        if request.response_format is not None:
            return response_format_grammar(request.response_format.model_dump(by_alias=True))
    except SchemaError as exc:
        field = "tools" if tools and (mode != "auto" or strict) else "response_format"
        raise BadRequest(str(exc), field=field) from exc
    return None


def _record_success(runtime: InferenceRuntime, call: Call, completion: Completion) -> None:
    with unit_of_work(runtime.session_factory) as session:
        call.record(session, completion)


def create_chat_completion(
    runtime: InferenceRuntime, organization_id: str, request: ChatCompletionRequest
) -> ChatCompletion:
    prepared = _prepare_completion(runtime, organization_id, request)
    call, source = prepared.call, prepared.call.target.source
    completion = metered(
        runtime,
        call,
        lambda: runtime.engine.complete(source, prepared.prompt, prepared.params, prepared.tools),
    )
    _record_success(runtime, call, completion)
    reply = reply_of(
        completion, tools=prepared.tools is not None, parallel=prepared.parallel_tool_calls
    )
    return ChatCompletion(
        id=_completion_id(),
        created=int(time.time()),
        model=call.target.public_id,
        choices=[
            Choice(
                message=CompletionMessage(content=reply.content, tool_calls=reply.tool_calls),
                finish_reason=reply.finish_reason,
            )
        ],
        usage=usage_of(completion),
    )


def stream_chat_completion(
    runtime: InferenceRuntime, organization_id: str, request: ChatCompletionRequest
) -> AsyncIterator[str]:
    """``data:`` chunk events ending ``data: [DONE]``; loading errors raise here, before any."""
    prepared = _prepare_completion(runtime, organization_id, request)
    source = prepared.call.target.source
    stream, release = metered_stream(
        runtime,
        prepared.call,
        lambda: runtime.engine.stream(source, prepared.prompt, prepared.params, prepared.tools),
    )
    return _completion_events(
        runtime, prepared, stream, release, include_usage=request.include_usage
    )


async def _completion_events(
    runtime: InferenceRuntime,
    prepared: _CompletionCall,
    stream: CompletionStream,
    release: Callable[[], None],
    *,
    include_usage: bool,
) -> AsyncIterator[str]:
    """OpenAI's chunks: text deltas, then (with tools) the calls as ``tool_calls`` deltas,
    the finish reason, and usage when asked."""
    call = prepared.call
    completion_id, created = _completion_id(), int(time.time())

    def chunk(delta: ChunkDelta, finish: CompletionFinish | None = None) -> str:
        choice = ChunkChoice(delta=delta, finish_reason=finish)
        return sse_message(
            ChatCompletionChunk(
                id=completion_id, created=created, model=call.target.public_id, choices=[choice]
            )
        )

    reader = StreamedReply() if prepared.tools is not None else None
    finished = False
    try:
        yield chunk(ChunkDelta(role="assistant", content=""))
        async for delta in deltas(stream):
            text = reader.feed(delta) if reader else delta
            if text:
                yield chunk(ChunkDelta(content=text))
        completion = stream.result
        assert completion is not None
        await anyio.to_thread.run_sync(_record_success, runtime, call, completion)
        finished = True
        finish: CompletionFinish = completion.finish_reason
        if reader is not None:
            reply = reader.finish(finish, parallel=prepared.parallel_tool_calls)
            finish = reply.finish_reason
            if reply.content and not reply.tool_calls:
                yield chunk(ChunkDelta(content=reply.content))
            for index, tool_call in enumerate(reply.tool_calls or ()):
                yield chunk(ChunkDelta(tool_calls=[_call_delta(index, tool_call)]))
        yield chunk(ChunkDelta(), finish)
        if include_usage:
            usage_chunk = ChatCompletionChunk(
                id=completion_id,
                created=created,
                model=call.target.public_id,
                choices=[],
                usage=usage_of(completion),
            )
            yield sse_message(usage_chunk)
        yield sse_message("[DONE]")
    except Exception as exc:
        error, detail = error_detail(exc)
        yield sse_message({"error": {"message": detail, "type": "server_error", "code": error}})
    finally:
        stream.close()
        release()
        if not finished:
            await record_failure_shielded(runtime, call)


def _call_delta(index: int, tool_call: ToolCallOut) -> ChunkToolCall:
    """A whole call in one delta, as OpenAI's first delta of a call is shaped."""
    function = ChunkFunction(name=tool_call.function.name, arguments=tool_call.function.arguments)
    return ChunkToolCall(index=index, id=tool_call.id, type="function", function=function)


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
