from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.db.base import Base, IdMixin, JSONType, SoftDeleteMixin, str_enum
from tuneforge.db.tables.jobs import AutoIncrementId


class ModelStatus(enum.StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class FineTunedModel(IdMixin, SoftDeleteMixin, Base):
    __tablename__ = "fine_tuned_models"
    __table_args__ = (
        Index(None, "organization_id", "status"),
        # A job has one final model and at most one model per kept checkpoint.
        Index(
            "uq_fine_tuned_models_job_final",
            "job_id",
            unique=True,
            sqlite_where=text("checkpoint_step IS NULL"),
            postgresql_where=text("checkpoint_step IS NULL"),
        ),
        Index(None, "job_id", "checkpoint_step", unique=True),
    )

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id", ondelete="RESTRICT"))
    # None for the job's final model; the step for a model made from one of its checkpoints.
    checkpoint_step: Mapped[int | None] = mapped_column(default=None)
    dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("fine_tuning_datasets.id", ondelete="SET NULL"), index=True, default=None
    )
    name: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    provider: Mapped[str] = mapped_column(String(50))
    base_model: Mapped[str] = mapped_column(String(200))
    provider_model_id: Mapped[str] = mapped_column(String(300))
    status: Mapped[ModelStatus] = mapped_column(str_enum(ModelStatus), default=ModelStatus.ACTIVE)
    metrics_summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)


class ModelUsage(Base):
    """One row per inference call; daily series are aggregated from these."""

    __tablename__ = "model_usage"
    __table_args__ = (Index(None, "model_id", "created_at"),)

    id: Mapped[int] = mapped_column(AutoIncrementId, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    model_id: Mapped[str] = mapped_column(
        ForeignKey("fine_tuned_models.id", ondelete="CASCADE"), index=True
    )
    agent_id: Mapped[str | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"), index=True, default=None
    )
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    latency_ms: Mapped[float] = mapped_column(default=0.0)
    success: Mapped[bool] = mapped_column(default=True)
