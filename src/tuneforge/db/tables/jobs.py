from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.db.base import Base, IdMixin, JSONType, str_enum

AutoIncrementId = BigInteger().with_variant(Integer(), "sqlite")


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    PAUSING = "pausing"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class FineTuningJob(IdMixin, Base):
    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (
        Index(None, "organization_id", "created_at"),
        Index(None, "organization_id", "status"),
        Index(None, "organization_id", "provider"),
        Index(None, "status", "lease_expires_at"),
    )

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    created_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True, default=None
    )
    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("fine_tuning_datasets.id", ondelete="RESTRICT"), index=True
    )
    validation_dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("fine_tuning_datasets.id", ondelete="RESTRICT"), index=True, default=None
    )
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    provider: Mapped[str] = mapped_column(String(50))
    base_model: Mapped[str] = mapped_column(String(200))
    # "supervised" or "dpo", OpenAI's method.type.
    method: Mapped[str] = mapped_column(
        String(20), default="supervised", server_default="supervised"
    )
    # The organization's fine-tune the job trains on top of (its name, as the API shows it,
    # and its id); NULL when it starts from the base model.
    parent_model: Mapped[str | None] = mapped_column(String(300), default=None)
    parent_model_id: Mapped[str | None] = mapped_column(String(32), default=None)
    status: Mapped[JobStatus] = mapped_column(str_enum(JobStatus), default=JobStatus.PENDING)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # What "auto" became for this provider when the job was created (NULL before 0003).
    resolved_hyperparameters: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    suffix: Mapped[str | None] = mapped_column(String(64), default=None)
    seed: Mapped[int | None] = mapped_column(default=None)
    job_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType, default=None)
    provider_job_id: Mapped[str | None] = mapped_column(String(200), index=True, default=None)
    provider_file_ids: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    fine_tuned_model_name: Mapped[str | None] = mapped_column(String(300), default=None)
    progress_percentage: Mapped[float] = mapped_column(Float, default=0.0)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    estimated_finish: Mapped[datetime | None] = mapped_column(default=None)
    latest_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    error_code: Mapped[str | None] = mapped_column(String(100), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # Work queue: a job with run_after <= now and no live lease is claimable.
    run_after: Mapped[datetime | None] = mapped_column(default=None, index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(default=0)


class FineTuningEvent(Base):
    __tablename__ = "fine_tuning_events"
    __table_args__ = (
        # A provider event is stored once per job even if two pollers ever overlap.
        Index(
            "uq_fine_tuning_events_job_id_provider_event_id",
            "job_id",
            "provider_event_id",
            unique=True,
            postgresql_where=text("provider_event_id IS NOT NULL"),
            sqlite_where=text("provider_event_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(AutoIncrementId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"), index=True
    )
    level: Mapped[str] = mapped_column(String(10), default="info")
    event_type: Mapped[str] = mapped_column(String(50))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    provider_event_id: Mapped[str | None] = mapped_column(String(200), default=None)


class JobMetric(Base):
    """Append-only metric points; the latest values are mirrored on the job row."""

    __tablename__ = "job_metrics"
    __table_args__ = (Index(None, "job_id", "name", "step"),)

    id: Mapped[int] = mapped_column(AutoIncrementId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[int]
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)


class JobCheckpoint(IdMixin, Base):
    __tablename__ = "fine_tuning_checkpoints"
    __table_args__ = (Index(None, "job_id", "step", unique=True),)

    job_id: Mapped[str] = mapped_column(
        ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[int]
    provider_checkpoint_id: Mapped[str | None] = mapped_column(String(200), default=None)
    model_reference: Mapped[str | None] = mapped_column(String(500), default=None)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
