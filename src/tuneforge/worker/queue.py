"""The work queues: job, evaluation and export rows are the work, leases say who is on one,
heartbeats keep a lease alive.

A job is claimable when it is active, due (``run_after`` is null or past) and its lease is
free (none, or expired because its worker died). Both backends claim with one statement,
``UPDATE ... WHERE id = (SELECT id ... LIMIT 1) AND <lease is free> RETURNING``:

- PostgreSQL: the inner SELECT carries ``FOR UPDATE SKIP LOCKED``, so concurrent workers
  pass over rows another worker is claiming instead of queueing behind it, and the outer
  re-check of the lease turns a row claimed between snapshot and lock into no claim at all.
- SQLite: writers are serialized, so the statement runs alone and exactly one claimant's
  UPDATE matches (RETURNING needs SQLite 3.35+). It must be the first statement of its
  transaction, which short claim transactions guarantee.

A claim clears ``run_after``: a "sync now" or cancel during the lease sets it to now, and
``release`` keeps that time rather than the worker's next poll time.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Update, and_, func, or_, select, update
from sqlalchemy.orm import Session

from tuneforge.db.base import utcnow
from tuneforge.db.tables.evals import ACTIVE_EVAL_STATUSES, EvalRun
from tuneforge.db.tables.exports import ACTIVE_EXPORT_STATUSES, ModelExport
from tuneforge.db.tables.jobs import FineTuningJob
from tuneforge.jobs.states import WORKABLE_STATUSES

Job = FineTuningJob
Leased = type[FineTuningJob] | type[EvalRun] | type[ModelExport]
"""A table of queued work: status, ``run_after`` and the lease columns."""


def _claim(session: Session, table: Leased, stmt: Update) -> Any:
    if not session.get_bind().dialect.update_returning:
        raise RuntimeError("Claiming work needs UPDATE ... RETURNING (SQLite 3.35+ or PostgreSQL)")
    returning = stmt.returning(table).execution_options(populate_existing=True)
    return session.scalars(returning).first()


def _lease_is_free(table: Leased, now: datetime) -> ColumnElement[bool]:
    return or_(table.lease_expires_at.is_(None), table.lease_expires_at < now)


def _is_claimable(table: Leased, active: Collection[Any], now: datetime) -> ColumnElement[bool]:
    return and_(
        table.status.in_(active),
        or_(table.run_after.is_(None), table.run_after <= now),
        _lease_is_free(table, now),
    )


def _lease_values(worker_id: str, lease_seconds: float, now: datetime) -> dict[str, object]:
    return {
        "lease_owner": worker_id,
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "heartbeat_at": now,
        "run_after": None,
    }


def claim_next(
    session: Session, table: Leased, active: Collection[Any], worker_id: str, lease_seconds: float
) -> Any:
    """Take the lease of the longest-due claimable row, or return None when nothing is due."""
    now = utcnow()
    next_id = (
        select(table.id)
        .where(_is_claimable(table, active, now))
        .order_by(table.run_after.asc().nulls_first(), table.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return _claim(
        session,
        table,
        update(table)
        .where(table.id == next_id, _lease_is_free(table, now))
        .values(**_lease_values(worker_id, lease_seconds, now)),
    )


def claim_next_job(session: Session, worker_id: str, lease_seconds: float) -> Job | None:
    return claim_next(session, Job, WORKABLE_STATUSES, worker_id, lease_seconds)


def claim_next_eval_run(session: Session, worker_id: str, lease_seconds: float) -> EvalRun | None:
    return claim_next(session, EvalRun, ACTIVE_EVAL_STATUSES, worker_id, lease_seconds)


def claim_next_export(session: Session, worker_id: str, lease_seconds: float) -> ModelExport | None:
    return claim_next(session, ModelExport, ACTIVE_EXPORT_STATUSES, worker_id, lease_seconds)


def claim_job(session: Session, job_id: str, worker_id: str, lease_seconds: float) -> Job | None:
    """Take the lease of one active job whether or not it is due (``sync now``)."""
    now = utcnow()
    return _claim(
        session,
        Job,
        update(Job)
        .where(Job.id == job_id, Job.status.in_(WORKABLE_STATUSES), _lease_is_free(Job, now))
        .values(**_lease_values(worker_id, lease_seconds, now)),
    )


def extend_lease(
    session: Session,
    table: Leased,
    active: Collection[Any],
    row_id: str,
    worker_id: str,
    lease_seconds: float,
) -> bool:
    """Extend our lease; False when it is gone (taken over, or the work reached its end)."""
    now = utcnow()
    result = session.execute(
        update(table)
        .where(table.id == row_id, table.lease_owner == worker_id, table.status.in_(active))
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def heartbeat(session: Session, job_id: str, worker_id: str, lease_seconds: float) -> bool:
    return extend_lease(session, Job, WORKABLE_STATUSES, job_id, worker_id, lease_seconds)


def eval_heartbeat(session: Session, run_id: str, worker_id: str, lease_seconds: float) -> bool:
    return extend_lease(session, EvalRun, ACTIVE_EVAL_STATUSES, run_id, worker_id, lease_seconds)


def export_heartbeat(
    session: Session, export_id: str, worker_id: str, lease_seconds: float
) -> bool:
    return extend_lease(
        session, ModelExport, ACTIVE_EXPORT_STATUSES, export_id, worker_id, lease_seconds
    )


def release(session: Session, job_id: str, worker_id: str, run_after: datetime) -> bool:
    """Give the lease back; the job is due again at ``run_after`` unless a sooner run was asked."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id)
        .values(
            lease_owner=None,
            lease_expires_at=None,
            run_after=func.coalesce(Job.run_after, run_after),
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def request_run_now(session: Session, job_id: str) -> None:
    """Make an active job due now; a worker holding it keeps this time when it releases."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(WORKABLE_STATUSES))
        .values(run_after=utcnow())
        .execution_options(synchronize_session=False)
    )
