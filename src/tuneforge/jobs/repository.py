"""SQL for jobs and what hangs off them; job queries start from ``org_scoped``.

Events, metrics and checkpoints carry no organization: callers pass a job id they got from
a scoped query (``get_owned``), so those child queries are scoped through their job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Integer, Select, bindparam, func, select
from sqlalchemy.orm import Session, defer

from tuneforge.db.scoping import org_scoped
from tuneforge.db.tables.datasets import FineTuningDataset
from tuneforge.db.tables.jobs import (
    FineTuningEvent,
    FineTuningJob,
    JobCheckpoint,
    JobMetric,
    JobStatus,
)
from tuneforge.db.tables.models import FineTunedModel


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a listing covers; empty fields filter nothing, metadata pairs all match."""

    statuses: Sequence[JobStatus] = ()
    provider: str | None = None
    dataset_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class JobView(NamedTuple):
    """What a job's API view shows: the job's own columns, and two from other tables.

    Read as plain rows, through the session's connection: building ORM objects was most of
    a job listing's CPU, and the ORM's result layer adds work plain columns do not need."""

    id: str
    name: str | None
    status: JobStatus
    provider: str
    base_model: str
    method: str
    parent_model: str | None
    dataset_id: str
    validation_dataset_id: str | None
    hyperparameters: dict[str, Any] | None
    resolved_hyperparameters: dict[str, Any] | None
    suffix: str | None
    seed: int | None
    job_metadata: dict[str, Any] | None
    provider_job_id: str | None
    fine_tuned_model_name: str | None
    progress_percentage: float
    trained_tokens: int | None
    estimated_finish: datetime | None
    latest_metrics: dict[str, Any] | None
    error_code: str | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    train_examples: int | None
    model_id: str | None

    @classmethod
    def of(cls, job: FineTuningJob, train_examples: int | None, model_id: str | None) -> JobView:
        """The view of a job already loaded."""
        return cls(*(getattr(job, name) for name in _JOB_FIELDS), train_examples, model_id)


_JOB_FIELDS = JobView._fields[:-2]


def _view_of(stmt: Select[Any]) -> Select[Any]:
    """A job query's view columns: its own, the dataset's size and the created model, both
    joined through the job's own org."""
    return (
        stmt.with_only_columns(
            *(getattr(FineTuningJob, name) for name in _JOB_FIELDS),
            FineTuningDataset.train_examples,
            FineTunedModel.id,
        )
        .outerjoin(
            FineTuningDataset,
            (FineTuningDataset.id == FineTuningJob.dataset_id)
            & (FineTuningDataset.organization_id == FineTuningJob.organization_id),
        )
        .outerjoin(
            FineTunedModel,
            (FineTunedModel.job_id == FineTuningJob.id)
            & (FineTunedModel.organization_id == FineTuningJob.organization_id)
            & FineTunedModel.checkpoint_step.is_(None),
        )
    )


_JOB_VIEW = _view_of(
    org_scoped(FineTuningJob, bindparam("organization_id")).where(
        FineTuningJob.id == bindparam("job_id")
    )
)


def get_job_view(session: Session, organization_id: str, job_id: str) -> JobView | None:
    """The organization's job with its view's columns, in one query."""
    params = {"organization_id": organization_id, "job_id": job_id}
    row = session.connection().execute(_JOB_VIEW, params).first()
    return JobView(*row) if row is not None else None


def _count_of(stmt: Select[Any]) -> Select[Any]:
    return select(func.count()).select_from(stmt.order_by(None).subquery())


@lru_cache(maxsize=128)
def _job_listing(
    statuses: bool, provider: bool, dataset: bool, metadata_keys: tuple[str, ...]
) -> tuple[Select[Any], Select[Any]]:
    """The page and count statements for one shape of filter, its values bind parameters.

    Built once per shape: building costs more CPU than running from the compiled cache.
    The count rides on the page as an uncorrelated subquery, which the database runs once.
    LIMIT and OFFSET are rendered as literals: as parameters, PostgreSQL's generic plan has
    to assume a tenth of the table, so it planned the page afresh on every call. The page's
    ids are picked first and only they are joined to their dataset and model: joined before
    the limit, the planner expected every matching job and scanned all of the organization's
    models for each row.
    """
    stmt = org_scoped(FineTuningJob, bindparam("organization_id"))
    if statuses:
        stmt = stmt.where(FineTuningJob.status.in_(bindparam("statuses", expanding=True)))
    if provider:
        stmt = stmt.where(FineTuningJob.provider == bindparam("provider"))
    if dataset:
        stmt = stmt.where(FineTuningJob.dataset_id == bindparam("dataset_id"))
    for n, key in enumerate(metadata_keys):
        value = bindparam(f"metadata_value_{n}")
        stmt = stmt.where(FineTuningJob.job_metadata[key].as_string() == value)
    newest_first = (FineTuningJob.created_at.desc(), FineTuningJob.id.desc())
    page_ids = (
        stmt.with_only_columns(FineTuningJob.id)
        .order_by(*newest_first)
        .limit(bindparam("limit", type_=Integer, literal_execute=True))
        .offset(bindparam("offset", type_=Integer, literal_execute=True))
        .subquery()
    )
    page = (
        _view_of(select(FineTuningJob).join(page_ids, page_ids.c.id == FineTuningJob.id))
        .add_columns(_count_of(stmt).scalar_subquery())
        .order_by(*newest_first)
    )
    return page, _count_of(stmt)


def list_jobs(
    session: Session, organization_id: str, job_filter: JobFilter, *, limit: int, offset: int
) -> tuple[list[JobView], int]:
    """A page of jobs with their views' columns, newest first, and how many match in all:
    one query, unless the page is past the end and has no row to carry the count."""
    metadata = job_filter.metadata
    page, count = _job_listing(
        bool(job_filter.statuses),
        bool(job_filter.provider),
        bool(job_filter.dataset_id),
        tuple(metadata),
    )
    params: dict[str, Any] = {
        "organization_id": organization_id,
        "statuses": list(job_filter.statuses),
        "provider": job_filter.provider,
        "dataset_id": job_filter.dataset_id,
        **{f"metadata_value_{n}": value for n, value in enumerate(metadata.values())},
    }
    rows = session.connection().execute(page, {**params, "limit": limit, "offset": offset}).all()
    if rows:
        return [JobView(*row[:-1]) for row in rows], rows[0][-1]
    return [], (session.scalar(count, params) or 0) if offset else 0


# Built once, as every job view needs them; the ids bind as one expanding parameter.
_DATASETS_BY_ID = (
    org_scoped(FineTuningDataset, bindparam("organization_id"), include_deleted=True)
    .where(FineTuningDataset.id.in_(bindparam("ids", expanding=True)))
    .options(defer(FineTuningDataset.validation_report))
)
_MODEL_IDS_BY_JOB = (
    org_scoped(FineTunedModel, bindparam("organization_id"), include_deleted=True)
    .where(
        FineTunedModel.job_id.in_(bindparam("ids", expanding=True)),
        FineTunedModel.checkpoint_step.is_(None),
    )
    .with_only_columns(FineTunedModel.job_id, FineTunedModel.id)
)


def datasets_by_id(
    session: Session, organization_id: str, dataset_ids: Sequence[str]
) -> dict[str, FineTuningDataset]:
    """The jobs' datasets, soft-deleted ones included: a job keeps describing its data.

    Without their validation reports, which can be large and which no job view shows."""
    params = {"organization_id": organization_id, "ids": list(set(dataset_ids))}
    return {dataset.id: dataset for dataset in session.scalars(_DATASETS_BY_ID, params)}


def find_fine_tuned_model(
    session: Session, organization_id: str, reference: str
) -> FineTunedModel | None:
    """The organization's fine-tuned model with this id or name (the oldest, if names repeat)."""
    stmt = (
        org_scoped(FineTunedModel, organization_id)
        .where((FineTunedModel.id == reference) | (FineTunedModel.name == reference))
        .order_by(FineTunedModel.created_at, FineTunedModel.id)
    )
    return session.scalars(stmt.limit(1)).first()


def model_ids_by_job(
    session: Session, organization_id: str, job_ids: Sequence[str]
) -> dict[str, str]:
    """The fine-tuned model each succeeded job created, by job id."""
    params = {"organization_id": organization_id, "ids": list(set(job_ids))}
    return {job_id: model_id for job_id, model_id in session.execute(_MODEL_IDS_BY_JOB, params)}


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


def all_metrics(session: Session, job_id: str, names: Sequence[str]) -> list[JobMetric]:
    """Every point of the named metrics, by step."""
    stmt = (
        select(JobMetric)
        .where(JobMetric.job_id == job_id, JobMetric.name.in_(names))
        .order_by(JobMetric.step, JobMetric.id)
    )
    return list(session.scalars(stmt))


def metrics_after(session: Session, job_id: str, after_id: int, *, limit: int) -> list[JobMetric]:
    """Metric points written after ``after_id``, in write order, for the live stream."""
    stmt = (
        select(JobMetric)
        .where(JobMetric.job_id == job_id, JobMetric.id > after_id)
        .order_by(JobMetric.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def get_checkpoint(session: Session, job_id: str, step: int) -> JobCheckpoint | None:
    return session.scalars(
        select(JobCheckpoint).where(JobCheckpoint.job_id == job_id, JobCheckpoint.step == step)
    ).first()


def list_checkpoints(session: Session, job_id: str) -> list[JobCheckpoint]:
    """Checkpoints newest (highest step) first, as OpenAI lists them."""
    stmt = (
        select(JobCheckpoint)
        .where(JobCheckpoint.job_id == job_id)
        .order_by(JobCheckpoint.step.desc())
    )
    return list(session.scalars(stmt))


def has_event(
    session: Session, job_id: str, event_type: str, *, message: str | None = None
) -> bool:
    """Whether the job already has an event of this type (and message): for things done once."""
    stmt = select(FineTuningEvent.id).where(
        FineTuningEvent.job_id == job_id, FineTuningEvent.event_type == event_type
    )
    if message is not None:
        stmt = stmt.where(FineTuningEvent.message == message)
    return session.scalar(stmt.limit(1)) is not None


def events_of_types(
    session: Session, job_id: str, event_types: Sequence[str]
) -> list[FineTuningEvent]:
    """The job's events of these types, oldest first (a handful per job)."""
    stmt = (
        select(FineTuningEvent)
        .where(FineTuningEvent.job_id == job_id, FineTuningEvent.event_type.in_(event_types))
        .order_by(FineTuningEvent.id)
    )
    return list(session.scalars(stmt))
