"""SQL for jobs and what hangs off them; job queries start from ``org_scoped``.

Events, metrics and checkpoints carry no organization: callers pass a job id they got from
a scoped query (``get_owned``), so those child queries are scoped through their job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from tuneforge.datasets.tables import FineTuningDataset
from tuneforge.db.scoping import org_scoped
from tuneforge.jobs.tables import (
    FineTuningEvent,
    FineTuningJob,
    JobCheckpoint,
    JobMetric,
    JobStatus,
)
from tuneforge.models.tables import FineTunedModel


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a listing covers; empty fields filter nothing, metadata pairs all match."""

    statuses: Sequence[JobStatus] = ()
    provider: str | None = None
    dataset_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def _count(session: Session, stmt: Select[Any]) -> int:
    subquery = stmt.order_by(None).subquery()
    return session.scalar(select(func.count()).select_from(subquery)) or 0


def list_jobs(
    session: Session, organization_id: str, job_filter: JobFilter, *, limit: int, offset: int
) -> tuple[list[FineTuningJob], int]:
    """A page of jobs, newest first, and how many match in all."""
    stmt = org_scoped(FineTuningJob, organization_id)
    if job_filter.statuses:
        stmt = stmt.where(FineTuningJob.status.in_(job_filter.statuses))
    if job_filter.provider:
        stmt = stmt.where(FineTuningJob.provider == job_filter.provider)
    if job_filter.dataset_id:
        stmt = stmt.where(FineTuningJob.dataset_id == job_filter.dataset_id)
    for key, value in job_filter.metadata.items():
        stmt = stmt.where(FineTuningJob.job_metadata[key].as_string() == value)
    page = (
        stmt.order_by(FineTuningJob.created_at.desc(), FineTuningJob.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(page)), _count(session, stmt)


def datasets_by_id(
    session: Session, organization_id: str, dataset_ids: Sequence[str]
) -> dict[str, FineTuningDataset]:
    """The jobs' datasets, soft-deleted ones included: a job keeps describing its data."""
    stmt = org_scoped(FineTuningDataset, organization_id, include_deleted=True).where(
        FineTuningDataset.id.in_(set(dataset_ids))
    )
    return {dataset.id: dataset for dataset in session.scalars(stmt)}


def model_ids_by_job(
    session: Session, organization_id: str, job_ids: Sequence[str]
) -> dict[str, str]:
    """The fine-tuned model each succeeded job created, by job id."""
    stmt = org_scoped(FineTunedModel, organization_id, include_deleted=True).where(
        FineTunedModel.job_id.in_(set(job_ids))
    )
    return {model.job_id: model.id for model in session.scalars(stmt)}


def list_events_newest_first(
    session: Session, job_id: str, *, before_id: int | None, limit: int
) -> tuple[list[FineTuningEvent], bool]:
    """A page of events newest first, older than ``before_id``, and whether more remain."""
    stmt = select(FineTuningEvent).where(FineTuningEvent.job_id == job_id)
    if before_id is not None:
        stmt = stmt.where(FineTuningEvent.id < before_id)
    rows = list(session.scalars(stmt.order_by(FineTuningEvent.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def events_after(
    session: Session, job_id: str, after_id: int, *, limit: int
) -> list[FineTuningEvent]:
    """Events written after ``after_id``, oldest first, for the live stream."""
    stmt = (
        select(FineTuningEvent)
        .where(FineTuningEvent.job_id == job_id, FineTuningEvent.id > after_id)
        .order_by(FineTuningEvent.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def list_metrics(
    session: Session,
    job_id: str,
    *,
    names: Sequence[str],
    min_step: int | None,
    max_step: int | None,
    limit: int,
) -> tuple[list[JobMetric], bool]:
    """Metric points by step then name, and whether the limit cut some off."""
    stmt = select(JobMetric).where(JobMetric.job_id == job_id)
    if names:
        stmt = stmt.where(JobMetric.name.in_(names))
    if min_step is not None:
        stmt = stmt.where(JobMetric.step >= min_step)
    if max_step is not None:
        stmt = stmt.where(JobMetric.step <= max_step)
    stmt = stmt.order_by(JobMetric.step, JobMetric.name, JobMetric.id).limit(limit + 1)
    rows = list(session.scalars(stmt))
    return rows[:limit], len(rows) > limit


def metrics_after(session: Session, job_id: str, after_id: int, *, limit: int) -> list[JobMetric]:
    """Metric points written after ``after_id``, in write order, for the live stream."""
    stmt = (
        select(JobMetric)
        .where(JobMetric.job_id == job_id, JobMetric.id > after_id)
        .order_by(JobMetric.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def list_checkpoints(session: Session, job_id: str) -> list[JobCheckpoint]:
    """Checkpoints newest (highest step) first, as OpenAI lists them."""
    stmt = (
        select(JobCheckpoint)
        .where(JobCheckpoint.job_id == job_id)
        .order_by(JobCheckpoint.step.desc())
    )
    return list(session.scalars(stmt))
