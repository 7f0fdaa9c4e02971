"""Evaluations: a run scores models' replies to a dataset's examples with graders."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.db.base import Base, IdMixin, JSONType, str_enum
from tuneforge.db.tables.jobs import AutoIncrementId


class EvalStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_EVAL_STATUSES = frozenset({EvalStatus.QUEUED, EvalStatus.RUNNING})


class EvalRun(IdMixin, Base):
    """A queue entry like a job: a worker claims it with a lease and heartbeats."""

    __tablename__ = "eval_runs"
    __table_args__ = (
        Index(None, "organization_id", "created_at"),
        Index(None, "status", "lease_expires_at"),
    )

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    created_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    status: Mapped[EvalStatus] = mapped_column(str_enum(EvalStatus), default=EvalStatus.QUEUED)
    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("fine_tuning_datasets.id", ondelete="RESTRICT"), index=True
    )
    split: Mapped[str] = mapped_column(String(20))
    # The dataset line numbers to run (a job's held-out slice); None runs the whole split.
    example_lines: Mapped[list[int] | None] = mapped_column(JSONType, default=None)
    # Set on the before/after evaluation a finished job queues for itself.
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("fine_tuning_jobs.id", ondelete="SET NULL"), index=True, default=None
    )
    max_examples: Mapped[int] = mapped_column(Integer)
    max_tokens: Mapped[int] = mapped_column(Integer)
    # [{"reference": model id, fine-tune name or base model, "label": shown name}]; the first
    # is the baseline every other model is compared with.
    models: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    graders: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    examples_total: Mapped[int] = mapped_column(Integer, default=0)
    examples_done: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    run_after: Mapped[datetime | None] = mapped_column(default=None, index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)


class EvalResult(Base):
    """One example of a run: its prompt, the expected reply, and every model's graded reply."""

    __tablename__ = "eval_results"
    __table_args__ = (Index(None, "run_id", "position", unique=True),)

    id: Mapped[int] = mapped_column(AutoIncrementId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    line_number: Mapped[int | None] = mapped_column(Integer, default=None)
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    expected: Mapped[str] = mapped_column(Text)
    # [{"model": label, "text": reply, "score": mean, "grades": [{"grader", "score",
    # "passed", "detail"}]}], in the run's model order.
    replies: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    regression: Mapped[bool] = mapped_column(default=False)  # a model scored below baseline
