"""SQL for evaluation runs and their results; run queries start from ``org_scoped``."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from tuneforge.db.base import utcnow
from tuneforge.db.scoping import org_scoped
from tuneforge.db.tables.datasets import ExampleSplit, TrainingExample
from tuneforge.db.tables.evals import EvalResult, EvalRun, EvalStatus

ACTIVE = (EvalStatus.QUEUED, EvalStatus.RUNNING)


def list_runs(
    session: Session, organization_id: str, *, limit: int, offset: int
) -> tuple[list[EvalRun], int]:
    stmt = org_scoped(EvalRun, organization_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    page = stmt.order_by(EvalRun.created_at.desc(), EvalRun.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(page)), total


def examples_for(
    session: Session, dataset_id: str, split: str, limit: int
) -> list[TrainingExample]:
    """A dataset's valid examples of the split (or all), in file order."""
    stmt = select(TrainingExample).where(
        TrainingExample.dataset_id == dataset_id, TrainingExample.is_valid.is_(True)
    )
    if split != "all":
        stmt = stmt.where(TrainingExample.split == ExampleSplit(split))
    return list(session.scalars(stmt.order_by(TrainingExample.line_number).limit(limit)))


def list_results(
    session: Session, run_id: str, *, regressions_only: bool, limit: int, offset: int
) -> tuple[list[EvalResult], int]:
    stmt = select(EvalResult).where(EvalResult.run_id == run_id)
    if regressions_only:
        stmt = stmt.where(EvalResult.regression.is_(True))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    page = stmt.order_by(EvalResult.position).limit(limit).offset(offset)
    return list(session.scalars(page)), total


def all_results(session: Session, run_id: str) -> list[EvalResult]:
    stmt = select(EvalResult).where(EvalResult.run_id == run_id).order_by(EvalResult.position)
    return list(session.scalars(stmt))


def claim_next_run(session: Session, worker_id: str, lease_seconds: float) -> EvalRun | None:
    """Lease the oldest due run whose lease is free, as the job queue does (one statement)."""
    now = utcnow()
    free = or_(EvalRun.lease_expires_at.is_(None), EvalRun.lease_expires_at < now)
    next_id = (
        select(EvalRun.id)
        .where(
            and_(
                EvalRun.status.in_(ACTIVE),
                or_(EvalRun.run_after.is_(None), EvalRun.run_after <= now),
                free,
            )
        )
        .order_by(EvalRun.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(EvalRun)
        .where(EvalRun.id == next_id, free)
        .values(
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            heartbeat_at=now,
        )
        .returning(EvalRun)
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).first()


def extend_lease(session: Session, run_id: str, worker_id: str, lease_seconds: float) -> bool:
    """Heartbeat; False when the lease is no longer ours (or the run was cancelled)."""
    now = utcnow()
    result = session.execute(
        update(EvalRun)
        .where(
            EvalRun.id == run_id,
            EvalRun.lease_owner == worker_id,
            EvalRun.status.in_(ACTIVE),
            EvalRun.cancel_requested.is_(False),
        )
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def finish(
    session: Session,
    run: EvalRun,
    status: EvalStatus,
    *,
    at: datetime,
    error: str | None = None,
) -> None:
    run.status = status
    run.finished_at = at
    run.error_message = error
    run.lease_owner = None
    run.lease_expires_at = None
    session.flush()
