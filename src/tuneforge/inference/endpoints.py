"""HTTP surface for inference: agent chat and the OpenAI-compatible ``/v1`` API.

These endpoints authenticate with ``BriefPrincipalDep``, in a transaction of their own: a
generation takes seconds, and must hold neither a session slot nor the row lock of an API
key's ``last_used_at`` write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.auth.deps import BriefPrincipalDep
from tuneforge.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
    TuneForgeError,
    Unauthorized,
    error_responses,
    http_error_code,
)
from tuneforge.inference import service
from tuneforge.inference.deps import RuntimeDep
from tuneforge.inference.schemas import (
    AgentChatRequest,
    AgentChatResponse,
    ChatCompletion,
    ChatCompletionRequest,
    ModelList,
    OpenAIErrorBody,
)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when streaming"}
}
GENERATION_ERRORS = error_responses(
    Unauthorized, Forbidden, NotFound, Conflict, InvalidInput, ServiceUnavailable
)


def _openai_error_responses(*errors: type[TuneForgeError]) -> dict[int | str, dict[str, Any]]:
    return {
        status: entry | {"model": OpenAIErrorBody}
        for status, entry in error_responses(*errors).items()
    }


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


def openai_error(
    status_code: int,
    code: str,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """OpenAI's error shape: its SDKs take the message from ``error.message`` only.

    ``detail`` repeats the message so the body still reads like the rest of our API.
    """
    kind = "server_error" if status_code >= 500 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    if status_code == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(
        status_code=status_code, content=body | {"detail": message}, headers=headers
    )


class OpenAIErrorRoute(APIRoute):
    """Renders errors (from dependencies and validation too) in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except TuneForgeError as exc:
                field = exc.extra.get("field")
                return openai_error(exc.status_code, exc.error, exc.detail, field, exc.headers)
            except StarletteHTTPException as exc:
                code = http_error_code(exc.status_code)
                return openai_error(exc.status_code, code, str(exc.detail))
            except RequestValidationError as exc:
                fields = [
                    (".".join(str(part) for part in err["loc"][1:]), err["msg"])
                    for err in exc.errors()
                ]
                message = "; ".join(f"{field}: {msg}" for field, msg in fields)
                return openai_error(422, "validation_error", message, fields[0][0] or None)

        return handle


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
    | _openai_error_responses(NotFound, InvalidInput, Unauthorized, ServiceUnavailable),
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
    responses=_openai_error_responses(Unauthorized),
)
def list_models(caller: BriefPrincipalDep, runtime: RuntimeDep) -> ModelList:
    return service.list_models(runtime, caller.organization_id)
