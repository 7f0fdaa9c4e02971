"""SQL for evaluation runs and their results; run queries start from ``org_scoped``.

Claiming and heartbeats are the worker queue's (``worker/queue.py``), as for jobs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneforge.db.scoping import org_scoped
from tuneforge.db.tables.datasets import ExampleSplit, TrainingExample
from tuneforge.db.tables.evals import EvalResult, EvalRun, EvalStatus
from tuneforge.webhooks.outbox import EVAL_RUN_EVENTS, record_event


def list_runs(
    session: Session, organization_id: str, *, limit: int, offset: int, job_id: str | None = None
) -> tuple[list[EvalRun], int]:
    stmt = org_scoped(EvalRun, organization_id)
    if job_id is not None:
        stmt = stmt.where(EvalRun.job_id == job_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    page = stmt.order_by(EvalRun.created_at.desc(), EvalRun.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(page)), total


def examples_for(
    session: Session, dataset_id: str, split: str, limit: int, lines: list[int] | None = None
) -> list[TrainingExample]:
    """A dataset's valid examples of the split (or all), in file order; only those on
    ``lines`` when given."""
    stmt = select(TrainingExample).where(
        TrainingExample.dataset_id == dataset_id, TrainingExample.is_valid.is_(True)
    )
    if split != "all":
        stmt = stmt.where(TrainingExample.split == ExampleSplit(split))
    if lines is not None:
        stmt = stmt.where(TrainingExample.line_number.in_(lines))
    return list(session.scalars(stmt.order_by(TrainingExample.line_number).limit(limit)))


def training_file_lines(session: Session, dataset_id: str) -> list[int]:
    """The line numbers of a dataset's training file as a job exports it: valid train-split
    examples in (line number, id) order, so a position in that file maps to a line here."""
    ex = TrainingExample
    stmt = (
        select(ex.line_number)
        .where(
            ex.dataset_id == dataset_id,
            ex.is_valid.is_(True),
            ex.split == ExampleSplit.TRAIN,
        )
        .order_by(ex.line_number, ex.id)
    )
    return list(session.scalars(stmt))


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


def finish(
    session: Session,
    run: EvalRun,
    status: EvalStatus,
    *,
    at: datetime,
    error: str | None = None,
) -> None:
    """End the run, and queue its webhook event in the same transaction."""
    run.status = status
    run.finished_at = at
    run.error_message = error
    run.lease_owner = None
    run.lease_expires_at = None
    record_event(session, run.organization_id, EVAL_RUN_EVENTS[status], run.id)
    session.flush()
