from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.db.base import Base, IdMixin, JSONType, SoftDeleteMixin, str_enum


class DatasetStatus(enum.StrEnum):
    UPLOADED = "uploaded"
    VALIDATING = "validating"
    VALID = "valid"
    INVALID = "invalid"


class DatasetFormat(enum.StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    CONVERSATIONS = "conversations"


class DatasetKind(enum.StrEnum):
    """What a dataset's examples are: chat conversations, or preference pairs for DPO."""

    CHAT = "chat"
    PREFERENCE = "preference"


class ExampleSplit(enum.StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"


class FineTuningDataset(IdMixin, SoftDeleteMixin, Base):
    __tablename__ = "fine_tuning_datasets"
    __table_args__ = (Index(None, "organization_id", "status", "created_at"),)

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    created_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True, default=None
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    format: Mapped[DatasetFormat] = mapped_column(str_enum(DatasetFormat))
    kind: Mapped[DatasetKind] = mapped_column(
        str_enum(DatasetKind), default=DatasetKind.CHAT, server_default=DatasetKind.CHAT.value
    )
    status: Mapped[DatasetStatus] = mapped_column(
        str_enum(DatasetStatus), default=DatasetStatus.UPLOADED
    )
    original_filename: Mapped[str | None] = mapped_column(String(300), default=None)
    file_path: Mapped[str | None] = mapped_column(String(500), default=None)
    file_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    target_model: Mapped[str | None] = mapped_column(String(200), default=None)
    total_examples: Mapped[int] = mapped_column(default=0)
    valid_examples: Mapped[int] = mapped_column(default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    validation_fraction: Mapped[float] = mapped_column(Float, default=0.0)
    split_seed: Mapped[int] = mapped_column(default=0)
    train_examples: Mapped[int] = mapped_column(default=0)
    validation_examples: Mapped[int] = mapped_column(default=0)
    validation_report: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    validated_at: Mapped[datetime | None] = mapped_column(default=None)


class TrainingExample(IdMixin, Base):
    __tablename__ = "training_examples"
    __table_args__ = (
        Index(None, "dataset_id", "line_number"),
        Index(None, "dataset_id", "split"),
    )

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    # Indexed by the (dataset_id, ...) indexes above: one on dataset_id alone is one more
    # write per row of an upload and serves no lookup they don't.
    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("fine_tuning_datasets.id", ondelete="CASCADE")
    )
    line_number: Mapped[int] = mapped_column(Integer)
    messages: Mapped[Any] = mapped_column(JSONType, default=None)
    tools: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, default=None)
    # A preference pair's replies (its prompt is ``messages`` and ``tools``); NULL for chat.
    preferred_output: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, default=None)
    non_preferred_output: Mapped[list[dict[str, Any]] | None] = mapped_column(
        JSONType, default=None
    )
    raw_line: Mapped[str | None] = mapped_column(Text, default=None)
    is_valid: Mapped[bool] = mapped_column(default=True)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, default=None)
    token_count: Mapped[int] = mapped_column(default=0)
    assistant_token_count: Mapped[int] = mapped_column(default=0)
    split: Mapped[ExampleSplit] = mapped_column(str_enum(ExampleSplit), default=ExampleSplit.TRAIN)
    source_conversation_id: Mapped[str | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), index=True, default=None
    )
