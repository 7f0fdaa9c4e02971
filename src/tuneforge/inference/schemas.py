"""Request and response shapes for agent chat and the OpenAI-compatible API.

The ``/v1`` shapes follow OpenAI's chat completions closely enough for the official SDKs;
fields the SDKs send that do not change a local model's output are accepted and ignored.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_MESSAGES = 1_000
MAX_TOKENS_LIMIT = 4_096
DEFAULT_MAX_TOKENS = 512
MAX_STOP_STRINGS = 4

Temperature = Annotated[float, Field(ge=0, le=2, description="0 means greedy decoding.")]
TopP = Annotated[float, Field(gt=0, le=1, description="Nucleus sampling mass.")]
MaxTokens = Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)]


class ChatRole(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class ChatMessage(BaseModel):
    role: ChatRole
    content: str = Field(max_length=200_000)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AgentChatRequest(BaseModel):
    messages: list[ChatMessage] = Field(
        min_length=1,
        max_length=MAX_MESSAGES,
        description="The new turn(s). The agent's system prompt is prepended; with "
        "`conversation_id` the conversation's stored messages come before these.",
    )
    conversation_id: str | None = Field(
        default=None, description="Continue and append to this conversation of the agent."
    )
    temperature: Temperature = 0.7
    top_p: TopP = 1.0
    max_tokens: MaxTokens = DEFAULT_MAX_TOKENS
    stream: bool = Field(
        default=False,
        description="Answer with Server-Sent Events: `delta` events carrying text, then one "
        "`done` event with the whole response (or an `error` event).",
    )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class AgentChatResponse(BaseModel):
    conversation_id: str
    message: AssistantMessage
    usage: Usage
    model: str = Field(description="The fine-tuned model's id, or the base model's name.")
    finish_reason: Literal["stop", "length"]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class OpenAIMessage(BaseModel):
    """``developer`` is OpenAI's newer name for ``system``; content may be text parts."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_chat_message(self) -> ChatMessage:
        text = (
            self.content
            if isinstance(self.content, str)
            else "".join(part.text for part in self.content)
        )
        role = ChatRole.SYSTEM if self.role == "developer" else ChatRole(self.role)
        return ChatMessage(role=role, content=text)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(
        min_length=1,
        max_length=300,
        description="A fine-tuned model's id or name in your organization, or a local base "
        "model's name (see GET /v1/models).",
    )
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = Field(
        default=None, description="Preferred over the older `max_tokens` when both are set."
    )
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, description="Only 1 is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def only_one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported: one choice per request")
        return value

    @field_validator("stop")
    @classmethod
    def check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop sequences")
        if any(not stop for stop in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    @property
    def token_limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One SSE event of a streamed completion; the usage-only chunk has no choices."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIErrorBody(BaseModel):
    """Errors of the ``/v1`` API; ``detail`` repeats the message, as in the rest of the API."""

    error: OpenAIErrorDetail
    detail: str


class ModelCard(BaseModel):
    id: str = Field(description="What to pass as `model`: a fine-tuned model's id, or a name.")
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    name: str = Field(description="The display name (a fine-tuned model's name may repeat).")
    base_model: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
