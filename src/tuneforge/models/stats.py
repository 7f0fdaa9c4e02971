"""The dashboard's headline numbers, in three org-scoped queries.

It reads datasets, jobs, models, agents and usage together, so its SQL lives here rather
than in any one domain's repository.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, distinct, func, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement

from tuneforge.db.base import utcnow
from tuneforge.db.scoping import org_scoped
from tuneforge.db.tables.agents import Agent
from tuneforge.db.tables.datasets import DatasetStatus, FineTuningDataset
from tuneforge.db.tables.jobs import FineTuningJob, JobStatus
from tuneforge.db.tables.models import FineTunedModel, ModelStatus, ModelUsage
from tuneforge.models.schemas import CountsByStatus, FineTuningStats, ModelCounts, MonthUsage


def fine_tuning_stats(
    session: Session, organization_id: str, *, now: datetime | None = None
) -> FineTuningStats:
    month_start = (now or utcnow()).replace(day=1, hour=0, minute=0, second=0, microsecond=0)

    dataset_rows = session.execute(
        org_scoped(FineTuningDataset, organization_id)
        .with_only_columns(FineTuningDataset.status, func.count())
        .group_by(FineTuningDataset.status)
    ).all()
    job_rows = session.execute(
        org_scoped(FineTuningJob, organization_id)
        .with_only_columns(
            FineTuningJob.status,
            func.count(),
            func.coalesce(func.sum(FineTuningJob.trained_tokens), 0),
        )
        .group_by(FineTuningJob.status)
    ).all()
    summary = session.execute(_model_and_usage_summary(organization_id, month_start)).one()

    return FineTuningStats(
        datasets=_by_status(DatasetStatus, ((status, n) for status, n in dataset_rows)),
        jobs=_by_status(JobStatus, ((status, n) for status, n, _ in job_rows)),
        models=ModelCounts(
            total=int(summary.active) + int(summary.archived),
            active=int(summary.active),
            archived=int(summary.archived),
            deployed=int(summary.deployed),
        ),
        trained_tokens=sum(int(tokens) for _, _, tokens in job_rows),
        usage_this_month=MonthUsage(
            since=month_start,
            requests=int(summary.requests),
            prompt_tokens=int(summary.prompt_tokens),
            completion_tokens=int(summary.completion_tokens),
            total_tokens=int(summary.prompt_tokens) + int(summary.completion_tokens),
        ),
    )


def _model_and_usage_summary(organization_id: str, month_start: datetime) -> Select[Any]:
    """One row joining three one-row aggregates: models, deployed models, this month's usage."""

    def total(column: ColumnElement[Any], label: str) -> ColumnElement[Any]:
        return func.coalesce(func.sum(column), 0).label(label)

    def counted(condition: ColumnElement[bool], label: str) -> ColumnElement[Any]:
        return total(case((condition, 1), else_=0), label)

    models = (
        org_scoped(FineTunedModel, organization_id)
        .with_only_columns(
            counted(FineTunedModel.status == ModelStatus.ACTIVE, "active"),
            counted(FineTunedModel.status == ModelStatus.ARCHIVED, "archived"),
        )
        .subquery()
    )
    deployed = (
        org_scoped(Agent, organization_id)
        .join(FineTunedModel, FineTunedModel.id == Agent.fine_tuned_model_id)
        .where(FineTunedModel.deleted_at.is_(None))
        .with_only_columns(func.count(distinct(Agent.fine_tuned_model_id)).label("deployed"))
        .subquery()
    )
    usage = (
        org_scoped(ModelUsage, organization_id)
        .where(ModelUsage.created_at >= month_start)
        .with_only_columns(
            func.count().label("requests"),
            total(ModelUsage.prompt_tokens, "prompt_tokens"),
            total(ModelUsage.completion_tokens, "completion_tokens"),
        )
        .subquery()
    )
    return select(models, deployed, usage).select_from(
        models.join(deployed, true()).join(usage, true())
    )


def _by_status(
    statuses: type[enum.StrEnum], rows: Iterable[tuple[enum.StrEnum, int]]
) -> CountsByStatus:
    """Every status appears, zero when absent, so the dashboard's shape never changes."""
    counts = {status.value: 0 for status in statuses}
    for status, count in rows:
        counts[status.value] = int(count)
    return CountsByStatus(total=sum(counts.values()), by_status=counts)
