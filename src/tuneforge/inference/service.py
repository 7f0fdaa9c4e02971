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
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from sqlalchemy.orm import Session

from tuneforge.agents import service as agents_service
from tuneforge.agents.schemas import ConversationCreate, MessageIn, MessageRole
from tuneforge.db.base import utcnow
from tuneforge.db.engine import unit_of_work
from tuneforge.db.scoping import get_owned
from tuneforge.db.tables.agents import Conversation, ConversationMessage
from tuneforge.errors import NotFound
from tuneforge.inference import repository
from tuneforge.inference.calls import (
    Call,
    InferenceRuntime,
    deltas,
    error_detail,
    metered,
    record_failure_shielded,
    usage_of,
)
from tuneforge.inference.generation import Completion, CompletionStream, SamplingParams
from tuneforge.inference.schemas import (
    AgentChatRequest,
    AgentChatResponse,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChatRole,
    Choice,
    ChunkChoice,
    ChunkDelta,
    ModelList,
)
from tuneforge.inference.targets import list_model_cards, resolve_agent_model, resolve_model
from tuneforge.sse import sse_message

TITLE_LENGTH = 80
CHAT_ROLES = frozenset(role.value for role in ChatRole)


# Agent chat ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _AgentChat:
    """A prepared agent chat, as plain values that outlive the session that read them."""

    call: Call
    conversation_id: str | None
    prompt: list[dict[str, str]]
    new_messages: list[ChatMessage]
    params: SamplingParams


def _prepare_agent_chat(
    runtime: InferenceRuntime, organization_id: str, agent_id: str, request: AgentChatRequest
) -> _AgentChat:
    with unit_of_work(runtime.session_factory) as session:
        agent = agents_service.get_agent(session, organization_id, agent_id)
        target = resolve_agent_model(session, runtime.settings, agent)
        history: list[dict[str, str]] = []
        if request.conversation_id is not None:
            _, stored = agents_service.get_conversation(
                session, organization_id, agent.id, request.conversation_id
            )
            history = [
                {"role": m.role, "content": m.content}
                for m in stored
                if m.role in CHAT_ROLES and m.content is not None
            ]
        new = [{"role": m.role.value, "content": m.content} for m in request.messages]
        system = [{"role": "system", "content": agent.system_prompt}]
        has_system = any(m["role"] == "system" for m in history + new)
        prompt = (system if agent.system_prompt and not has_system else []) + history + new
        return _AgentChat(
            call=Call(organization_id, target, agent.id),
            conversation_id=request.conversation_id,
            prompt=prompt,
            new_messages=list(request.messages),
            params=SamplingParams(
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
            ),
        )


def _log_exchange(session: Session, chat: _AgentChat, reply: str) -> str:
    """Store the new turn and the reply in a new conversation or the continued one."""
    call = chat.call
    assert call.agent_id is not None
    turn = [*chat.new_messages, ChatMessage(role=ChatRole.ASSISTANT, content=reply)]
    if chat.conversation_id is None:
        first_user = next((m.content for m in turn if m.role == ChatRole.USER), "")
        conversation, _ = agents_service.create_conversation(
            session,
            call.organization_id,
            call.agent_id,
            ConversationCreate(
                messages=[MessageIn(role=MessageRole(m.role), content=m.content) for m in turn],
                title=first_user.strip()[:TITLE_LENGTH] or None,
            ),
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
        )
        for offset, message in enumerate(turn)
    )
    conversation.updated_at = utcnow()
    session.flush()
    return conversation.id


def _finish_agent_chat(
    runtime: InferenceRuntime, chat: _AgentChat, completion: Completion
) -> AgentChatResponse:
    with unit_of_work(runtime.session_factory) as session:
        conversation_id = _log_exchange(session, chat, completion.text)
        chat.call.record(session, completion)
    return AgentChatResponse(
        conversation_id=conversation_id,
        message=AssistantMessage(content=completion.text),
        usage=usage_of(completion),
        model=chat.call.target.public_id,
        finish_reason=completion.finish_reason,
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
            runtime, chat, runtime.engine.complete(source, chat.prompt, chat.params)
        ),
    )


def stream_agent_chat(
    runtime: InferenceRuntime, organization_id: str, agent_id: str, request: AgentChatRequest
) -> AsyncIterator[str]:
    """SSE events; loading errors raise here so they still get a plain HTTP error status."""
    chat = _prepare_agent_chat(runtime, organization_id, agent_id, request)
    source = chat.call.target.source
    stream = metered(
        runtime, chat.call, lambda: runtime.engine.stream(source, chat.prompt, chat.params)
    )
    return _agent_chat_events(runtime, chat, stream)


async def _agent_chat_events(
    runtime: InferenceRuntime, chat: _AgentChat, stream: CompletionStream
) -> AsyncIterator[str]:
    finished = False
    try:
        async for delta in deltas(stream):
            yield sse_message({"content": delta}, event="delta")
        assert stream.result is not None
        response = await anyio.to_thread.run_sync(_finish_agent_chat, runtime, chat, stream.result)
        finished = True
        yield sse_message(response, event="done")
    except Exception as exc:
        error, detail = error_detail(exc)
        yield sse_message({"error": error, "detail": detail}, event="error")
    finally:
        stream.close()
        if not finished:
            await record_failure_shielded(runtime, chat.call)


# OpenAI-compatible API ----------------------------------------------------------------


def list_models(runtime: InferenceRuntime, organization_id: str) -> ModelList:
    with unit_of_work(runtime.session_factory) as session:
        return ModelList(data=list_model_cards(session, runtime.settings, organization_id))


def _prepare_completion(
    runtime: InferenceRuntime, organization_id: str, request: ChatCompletionRequest
) -> tuple[Call, SamplingParams]:
    with unit_of_work(runtime.session_factory) as session:
        target = resolve_model(session, runtime.settings, organization_id, request.model)
    params = SamplingParams(
        max_tokens=request.token_limit,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop_strings,
        seed=request.seed,
    )
    return Call(organization_id, target, agent_id=None), params


def _prompt(request: ChatCompletionRequest) -> list[dict[str, str]]:
    messages = (m.as_chat_message() for m in request.messages)
    return [{"role": m.role.value, "content": m.content} for m in messages]


def _record_success(runtime: InferenceRuntime, call: Call, completion: Completion) -> None:
    with unit_of_work(runtime.session_factory) as session:
        call.record(session, completion)


def create_chat_completion(
    runtime: InferenceRuntime, organization_id: str, request: ChatCompletionRequest
) -> ChatCompletion:
    call, params = _prepare_completion(runtime, organization_id, request)
    source, prompt = call.target.source, _prompt(request)
    completion = metered(runtime, call, lambda: runtime.engine.complete(source, prompt, params))
    _record_success(runtime, call, completion)
    return ChatCompletion(
        id=_completion_id(),
        created=int(time.time()),
        model=call.target.public_id,
        choices=[
            Choice(
                message=AssistantMessage(content=completion.text),
                finish_reason=completion.finish_reason,
            )
        ],
        usage=usage_of(completion),
    )


def stream_chat_completion(
    runtime: InferenceRuntime, organization_id: str, request: ChatCompletionRequest
) -> AsyncIterator[str]:
    """``data:`` chunk events ending ``data: [DONE]``; loading errors raise here, before any."""
    call, params = _prepare_completion(runtime, organization_id, request)
    source, prompt = call.target.source, _prompt(request)
    stream = metered(runtime, call, lambda: runtime.engine.stream(source, prompt, params))
    return _completion_events(runtime, call, stream, include_usage=request.include_usage)


async def _completion_events(
    runtime: InferenceRuntime, call: Call, stream: CompletionStream, *, include_usage: bool
) -> AsyncIterator[str]:
    completion_id, created = _completion_id(), int(time.time())

    def chunk(delta: ChunkDelta, finish: Completion | None = None) -> str:
        choice = ChunkChoice(delta=delta, finish_reason=finish.finish_reason if finish else None)
        return sse_message(
            ChatCompletionChunk(
                id=completion_id, created=created, model=call.target.public_id, choices=[choice]
            )
        )

    finished = False
    try:
        yield chunk(ChunkDelta(role="assistant", content=""))
        async for delta in deltas(stream):
            yield chunk(ChunkDelta(content=delta))
        completion = stream.result
        assert completion is not None
        await anyio.to_thread.run_sync(_record_success, runtime, call, completion)
        finished = True
        yield chunk(ChunkDelta(), completion)
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
        if not finished:
            await record_failure_shielded(runtime, call)


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
