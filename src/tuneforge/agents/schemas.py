"""Request and response shapes for agents and logged conversations."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from tuneforge.bounds import UTCDatetime
from tuneforge.db.tables.agents import Conversation, ConversationMessage

MAX_TAGS = 20
MAX_MESSAGES = 10_000


def normalize_tags(tags: Iterable[str]) -> list[str]:
    """Tags compare case-insensitively, so store them trimmed, lower-cased and unique."""
    unique: dict[str, None] = {}
    for tag in tags:
        if normalized := tag.strip().lower():
            unique.setdefault(normalized, None)
    return list(unique)


Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
TagList = Annotated[list[Tag], Field(max_length=MAX_TAGS), AfterValidator(normalize_tags)]
Rating = Annotated[int, Field(ge=1, le=5)]
ProviderName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=50, pattern=r"^[a-z0-9][a-z0-9_.-]*$"),
]


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = Field(default=None, max_length=10_000)
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="A JSON schema for the arguments.",
    )
    strict: bool | None = Field(
        default=None, description="Arguments are decoded to match `parameters` exactly."
    )


class ToolDefinition(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


MAX_AGENT_TOOLS = 128
MAX_MESSAGE_CHARACTERS = 200_000


class AgentCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    system_prompt: str | None = Field(default=None, max_length=100_000)
    model: str = Field(
        min_length=1,
        max_length=200,
        description="A base model name, or the id of one of the organization's fine-tuned models.",
    )
    provider: ProviderName | None = Field(
        default=None,
        description='E.g. "local" or "openai"; defaults to the fine-tuned model\'s provider, '
        'else "local".',
    )
    tools: list[ToolDefinition] | None = Field(
        default=None,
        max_length=MAX_AGENT_TOOLS,
        description="Functions the agent may call in its chats (OpenAI's tool format).",
    )


class AgentUpdate(BaseModel):
    """Only the fields sent change; ``description`` and ``system_prompt`` may be cleared."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    system_prompt: str | None = Field(default=None, max_length=100_000)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    provider: ProviderName | None = None
    tools: list[ToolDefinition] | None = Field(default=None, max_length=MAX_AGENT_TOOLS)

    @field_validator("name", "model", "provider")
    @classmethod
    def reject_null(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("may not be null")
        return value


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str | None
    system_prompt: str | None
    model: str
    provider: str
    fine_tuned_model_id: str | None
    tools: list[dict[str, Any]] | None
    created_at: datetime
    updated_at: datetime


class AgentPage(BaseModel):
    items: list[AgentOut]
    total: int
    limit: int
    offset: int


class Deleted(BaseModel):
    id: str
    deleted: bool = True


class MessageRole(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class ToolCallFunction(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    arguments: str = Field(description="JSON-encoded arguments, as the model produced them.")


class ToolCall(BaseModel):
    id: str = Field(min_length=1, max_length=100)
    type: str = "function"
    function: ToolCallFunction


class CorrectionIn(BaseModel):
    """A better reply than the one logged: the assistant message the agent should have sent."""

    model_config = ConfigDict(extra="forbid")

    content: str | None = Field(default=None, min_length=1, max_length=MAX_MESSAGE_CHARACTERS)
    tool_calls: list[ToolCall] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def something_to_say(self) -> CorrectionIn:
        if self.content is None and not self.tool_calls:
            raise ValueError("a correction needs content or tool_calls")
        return self

    def as_message(self) -> dict[str, Any]:
        """As an OpenAI assistant message, the form a preference pair's reply takes."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        return message


class MessageIn(BaseModel):
    """One chat message in OpenAI's format, so logged conversations import as training data."""

    role: MessageRole
    content: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARACTERS)
    name: str | None = Field(default=None, min_length=1, max_length=100)
    tool_calls: list[ToolCall] | None = Field(default=None, min_length=1)
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=100)
    correction: CorrectionIn | None = Field(
        default=None,
        description="Assistant messages only: the reply a reviewer would have wanted instead.",
    )

    @model_validator(mode="after")
    def check_role_fields(self) -> MessageIn:
        if self.content is None and not self.tool_calls:
            raise ValueError("content is required unless tool_calls are present")
        if self.tool_calls and self.role is not MessageRole.ASSISTANT:
            raise ValueError("only assistant messages may have tool_calls")
        if self.correction is not None and self.role is not MessageRole.ASSISTANT:
            raise ValueError("only assistant messages may have a correction")
        if self.role is MessageRole.TOOL and self.tool_call_id is None:
            raise ValueError("tool messages need the tool_call_id they answer")
        return self


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    role: MessageRole
    content: str | None
    name: str | None
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    correction: dict[str, Any] | None = Field(
        description="A reviewer's better reply to this assistant message, if one was recorded."
    )


class ConversationCreate(BaseModel):
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    title: str | None = Field(default=None, max_length=300)
    started_at: UTCDatetime | None = Field(
        default=None, description="When the conversation began; defaults to now."
    )
    rating: Rating | None = None
    feedback: str | None = Field(default=None, max_length=10_000)
    tags: TagList = Field(default_factory=list, description="Stored lower-cased and de-duplicated.")


class ConversationUpdate(BaseModel):
    """Ratings and feedback arrive after the fact; only the fields sent change."""

    rating: Rating | None = None
    feedback: str | None = Field(default=None, max_length=10_000)
    tags: TagList | None = Field(default=None, description="Replaces every tag; [] clears.")

    @field_validator("tags")
    @classmethod
    def reject_null_tags(cls, value: list[str] | None) -> list[str]:
        if value is None:
            raise ValueError("may not be null; send [] to clear the tags")
        return value


class ConversationSummary(BaseModel):
    id: str
    agent_id: str
    title: str | None
    started_at: datetime
    rating: int | None
    feedback: str | None
    tags: list[str] = Field(description="Sorted alphabetically.")
    message_count: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, conversation: Conversation, message_count: int) -> ConversationSummary:
        return cls(
            id=conversation.id,
            agent_id=conversation.agent_id,
            title=conversation.title,
            started_at=conversation.started_at,
            rating=conversation.rating,
            feedback=conversation.feedback,
            tags=sorted(t.tag for t in conversation.tags),
            message_count=message_count,
            created_at=conversation.created_at,
            updated_at=conversation.updated_at,
        )


class ConversationOut(ConversationSummary):
    messages: list[MessageOut] = Field(description="In the order they were logged.")

    @classmethod
    def from_parts(
        cls, conversation: Conversation, messages: list[ConversationMessage]
    ) -> ConversationOut:
        summary = ConversationSummary.from_row(conversation, len(messages))
        return cls(
            **summary.model_dump(), messages=[MessageOut.model_validate(m) for m in messages]
        )


class ConversationPage(BaseModel):
    items: list[ConversationSummary]
    total: int
    limit: int
    offset: int
