from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tuneforge.db.base import Base, IdMixin, JSONType, SoftDeleteMixin, utcnow

# None as SQL NULL, not JSON null, so "has a correction" is a plain IS NOT NULL.
NullableJSON = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class Agent(IdMixin, SoftDeleteMixin, Base):
    __tablename__ = "agents"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    system_prompt: Mapped[str | None] = mapped_column(Text, default=None)
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(50))
    # Function definitions (OpenAI's tool format) the agent's model may call in its chats.
    tools: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, default=None)
    fine_tuned_model_id: Mapped[str | None] = mapped_column(
        ForeignKey("fine_tuned_models.id", ondelete="SET NULL"), index=True, default=None
    )


class Conversation(IdMixin, SoftDeleteMixin, Base):
    __tablename__ = "conversations"
    __table_args__ = (Index(None, "organization_id", "agent_id", "started_at"),)

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    title: Mapped[str | None] = mapped_column(String(300), default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    rating: Mapped[int | None] = mapped_column(default=None, index=True)
    feedback: Mapped[str | None] = mapped_column(Text, default=None)

    messages: Mapped[list[ConversationMessage]] = relationship(
        order_by="ConversationMessage.position", cascade="all, delete-orphan", lazy="raise"
    )
    tags: Mapped[list[ConversationTag]] = relationship(
        cascade="all, delete-orphan", lazy="selectin"
    )


class ConversationTag(IdMixin, Base):
    """One row per tag so tag filters are plain indexed equality on every backend."""

    __tablename__ = "conversation_tags"
    __table_args__ = (Index(None, "tag", "conversation_id"),)

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    tag: Mapped[str] = mapped_column(String(100))


class ConversationMessage(IdMixin, Base):
    __tablename__ = "conversation_messages"
    __table_args__ = (Index(None, "conversation_id", "position", unique=True),)

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int]
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str | None] = mapped_column(Text, default=None)
    name: Mapped[str | None] = mapped_column(String(100), default=None)
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, default=None)
    tool_call_id: Mapped[str | None] = mapped_column(String(100), default=None)
    # A reviewer's better reply to this assistant message ({"role": "assistant", ...}):
    # with a low rating, the logged and corrected replies import as a preference pair.
    correction: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON, default=None)
