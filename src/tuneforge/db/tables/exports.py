"""Model exports: a fine-tuned model written out as files another runtime loads."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.db.base import Base, IdMixin, str_enum


class ExportFormat(enum.StrEnum):
    ADAPTER = "adapter"
    MERGED = "merged"
    GGUF = "gguf"
    OLLAMA = "ollama"


class ExportQuantization(enum.StrEnum):
    F16 = "f16"
    Q8_0 = "q8_0"


class ExportStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


ACTIVE_EXPORT_STATUSES = frozenset({ExportStatus.QUEUED, ExportStatus.RUNNING})


class ModelExport(IdMixin, Base):
    """A queue entry like a job: a worker claims it with a lease and writes one file into
    the data dir, which the API streams with its SHA-256."""

    __tablename__ = "model_exports"
    __table_args__ = (
        Index(None, "organization_id", "created_at"),
        Index(None, "model_id", "created_at"),
        Index(None, "status", "lease_expires_at"),
    )

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    model_id: Mapped[str] = mapped_column(ForeignKey("fine_tuned_models.id", ondelete="CASCADE"))
    created_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    format: Mapped[ExportFormat] = mapped_column(str_enum(ExportFormat))
    # GGUF's tensor type (gguf and ollama); None for the safetensors formats.
    quantization: Mapped[ExportQuantization | None] = mapped_column(
        str_enum(ExportQuantization), default=None
    )
    # The agent whose system prompt an Ollama Modelfile carries, copied when asked.
    agent_id: Mapped[str | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"), default=None
    )
    system_prompt: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[ExportStatus] = mapped_column(
        str_enum(ExportStatus), default=ExportStatus.QUEUED
    )
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(200), default=None)
    file_name: Mapped[str | None] = mapped_column(String(300), default=None)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    # Claims so far: an export that keeps killing its worker fails instead of looping.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    run_after: Mapped[datetime | None] = mapped_column(default=None, index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
