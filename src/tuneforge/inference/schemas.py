"""Request and response shapes for agent chat and the OpenAI-compatible API.

The ``/v1`` shapes follow OpenAI's chat completions closely enough for the official SDKs;
fields the SDKs send that do not change a local model's output are accepted and ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tuneforge.agents.schemas import MAX_MESSAGE_CHARACTERS, MessageIn, ToolDefinition

MAX_MESSAGES = 1_000
MAX_TOKENS_LIMIT = 4_096
DEFAULT_MAX_TOKENS = 512
MAX_STOP_STRINGS = 4
MAX_TOOLS = 128
MAX_SEED = 2**63 - 1  # what a torch generator takes
MAX_TOOL_CALLS = 128
CompletionFinish = Literal["stop", "length", "tool_calls"]

Temperature = Annotated[float, Field(ge=0, le=2, description="0 means greedy decoding.")]
TopP = Annotated[float, Field(gt=0, le=1, description="Nucleus sampling mass.")]
MaxTokens = Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AgentChatRequest(BaseModel):
    messages: list[MessageIn] = Field(
        min_length=1,
        max_length=MAX_MESSAGES,
        description="The new turn(s), tool results included. The agent's system prompt is "
        "prepended and its tools offered; with `conversation_id` the conversation's stored "
        "messages come before these.",
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
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class AgentChatResponse(BaseModel):
    conversation_id: str
    message: AssistantMessage
    usage: Usage
    model: str = Field(description="The fine-tuned model's id, or the base model's name.")
    finish_reason: CompletionFinish


class TextPart(BaseModel):
    type: Literal["text"]
    text: str = Field(max_length=MAX_MESSAGE_CHARACTERS)


class FunctionCall(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    arguments: str = Field(max_length=200_000, description="A JSON object, as a string.")


class ToolCallOut(BaseModel):
    id: str = Field(max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCall


class OpenAIMessage(BaseModel):
    """``developer`` is OpenAI's newer name for ``system``; content may be text parts; an
    assistant turn may carry ``tool_calls`` and a ``tool`` turn answers one."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = Field(default=None, max_length=MAX_MESSAGE_CHARACTERS)
    name: str | None = Field(default=None, max_length=200)
    tool_calls: list[ToolCallOut] | None = Field(default=None, max_length=MAX_TOOL_CALLS)
    tool_call_id: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def has_something_to_say(self) -> OpenAIMessage:
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if self.content is None and not self.tool_calls:
            raise ValueError("content is required unless the assistant makes tool_calls")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def as_prompt_message(self) -> dict[str, Any]:
        """The message as the chat rendering takes it (OpenAI's own field names)."""
        message: dict[str, Any] = {"role": self.role, "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class NamedFunction(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=10_000)
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def schema_when_asked(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema")
        return self


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
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    n: int = Field(default=1, description="Only 1 is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolDefinition] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        default=None, description="Default: auto when tools are given, else none."
    )
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def tool_choice_names_a_tool(self) -> ChatCompletionRequest:
        names = [tool.function.name for tool in self.tools or ()]
        if len(set(names)) != len(names):
            raise ValueError("tools: each function needs its own name")
        choice = self.tool_choice
        if choice in ("auto", "required") and not names:
            raise ValueError(f"tool_choice {choice!r} needs tools")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"tool_choice names {choice.function.name!r}, which is not in tools")
        return self

    @property
    def tool_mode(self) -> str | None:
        """None (no tools), "auto", "required", or the one function's name to call."""
        choice = self.tool_choice or ("auto" if self.tools else "none")
        if choice == "none" or not self.tools:
            return None
        return choice.function.name if isinstance(choice, NamedToolChoice) else choice

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


class CompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = None
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: CompletionMessage
    finish_reason: CompletionFinish
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ChunkFunction(BaseModel):
    name: str | None = None
    arguments: str


class ChunkToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ChunkFunction


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ChunkToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: CompletionFinish | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One SSE event of a streamed completion; the usage-only chunk has no choices."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


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
