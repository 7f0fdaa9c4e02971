"""HTTP surface for inference: agent chat and the OpenAI-compatible ``/v1`` API.

These endpoints authenticate with ``BriefPrincipalDep``, in a transaction of their own: a
generation takes seconds, and must hold neither a session slot nor the row lock of an API
key's ``last_used_at`` write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from tuneforge.auth.deps import BriefPrincipalDep
from tuneforge.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    error_responses,
)
from tuneforge.inference import service
from tuneforge.inference.deps import RuntimeDep
from tuneforge.inference.schemas import (
    AgentChatRequest,
    AgentChatResponse,
    ChatCompletion,
    ChatCompletionRequest,
    ModelList,
)
from tuneforge.openai_errors import OpenAIErrorRoute, openai_error_responses

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when streaming"}
}
GENERATION_ERRORS = error_responses(
    Unauthorized, Forbidden, NotFound, Conflict, InvalidInput, ServiceUnavailable
)


def _event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


agent_chat_router = APIRouter(tags=["agents"])


@agent_chat_router.post(
    "/agents/{agent_id}/chat",
    summary="Chat with an agent's model; the exchange is logged as a conversation",
    description=(
        "Runs the agent's deployed fine-tuned model (or its local base model) on the agent's "
        "system prompt and the messages. Without `conversation_id` a new conversation is "
        "logged; with it, the stored messages are the context and the new turn is appended. "
        "With `stream: true` the answer is Server-Sent Events: `delta` events "
        '(`{"content": "..."}`), then `done` with the same body as the JSON response, or '
        "`error`."
    ),
    response_model=AgentChatResponse,
    responses=SSE_RESPONSE | GENERATION_ERRORS,
)
def chat_with_agent(
    agent_id: str, body: AgentChatRequest, caller: BriefPrincipalDep, runtime: RuntimeDep
) -> AgentChatResponse | StreamingResponse:
    if body.stream:
        events = service.stream_agent_chat(runtime, caller.organization_id, agent_id, body)
        return _event_stream(events)
    return service.chat_with_agent(runtime, caller.organization_id, agent_id, body)


openai_router = APIRouter(prefix="/v1", tags=["openai-compatible"], route_class=OpenAIErrorRoute)


@openai_router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completion with a local fine-tuned or base model",
    description=(
        "Works with the official OpenAI SDKs: point `base_url` at `<server>/v1` and use an "
        "API key as the key. `stream: true` answers with `data:` chunk events ending "
        "`data: [DONE]`; `stream_options.include_usage` adds a final usage chunk."
    ),
    response_model=ChatCompletion,
    responses=SSE_RESPONSE
    | openai_error_responses(NotFound, InvalidInput, Unauthorized, ServiceUnavailable),
)
def create_chat_completion(
    body: ChatCompletionRequest, caller: BriefPrincipalDep, runtime: RuntimeDep
) -> ChatCompletion | StreamingResponse:
    if body.stream:
        events = service.stream_chat_completion(runtime, caller.organization_id, body)
        return _event_stream(events)
    return service.create_chat_completion(runtime, caller.organization_id, body)


@openai_router.get(
    "/models",
    summary="Models this organization can call: its local fine-tuned models and base models",
    response_model=ModelList,
    responses=openai_error_responses(Unauthorized),
)
def list_models(caller: BriefPrincipalDep, runtime: RuntimeDep) -> ModelList:
    return service.list_models(runtime, caller.organization_id)
