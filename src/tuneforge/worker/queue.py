"""The job queue: job rows are the work, leases say who is on one, heartbeats keep a lease alive.

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

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Update, and_, func, or_, select, update
from sqlalchemy.orm import Session

from tuneforge.db.base import utcnow
from tuneforge.db.tables.jobs import FineTuningJob
from tuneforge.jobs.states import ACTIVE_STATUSES

Job = FineTuningJob


def _claim(session: Session, stmt: Update) -> Job | None:
    if not session.get_bind().dialect.update_returning:
        raise RuntimeError("Claiming jobs needs UPDATE ... RETURNING (SQLite 3.35+ or PostgreSQL)")
    return session.scalars(stmt.returning(Job).execution_options(populate_existing=True)).first()


def _lease_is_free(now: datetime) -> ColumnElement[bool]:
    return or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)


def _is_claimable(now: datetime) -> ColumnElement[bool]:
    return and_(
        Job.status.in_(ACTIVE_STATUSES),
        or_(Job.run_after.is_(None), Job.run_after <= now),
        _lease_is_free(now),
    )


def _lease_values(worker_id: str, lease_seconds: float, now: datetime) -> dict[str, object]:
    return {
        "lease_owner": worker_id,
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "heartbeat_at": now,
        "run_after": None,
    }


def claim_next_job(session: Session, worker_id: str, lease_seconds: float) -> Job | None:
    """Take the lease of the longest-due claimable job, or return None when nothing is due."""
    now = utcnow()
    next_id = (
        select(Job.id)
        .where(_is_claimable(now))
        .order_by(Job.run_after.asc().nulls_first(), Job.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return _claim(
        session,
        update(Job)
        .where(Job.id == next_id, _lease_is_free(now))
        .values(**_lease_values(worker_id, lease_seconds, now)),
    )


def claim_job(session: Session, job_id: str, worker_id: str, lease_seconds: float) -> Job | None:
    """Take the lease of one active job whether or not it is due (``sync now``)."""
    now = utcnow()
    return _claim(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status.in_(ACTIVE_STATUSES), _lease_is_free(now))
        .values(**_lease_values(worker_id, lease_seconds, now)),
    )


def heartbeat(session: Session, job_id: str, worker_id: str, lease_seconds: float) -> bool:
    """Extend our lease; False when it is gone (taken over, or the job reached a terminal state)."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.lease_owner == worker_id,
            Job.status.in_(ACTIVE_STATUSES),
        )
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


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
        .where(Job.id == job_id, Job.status.in_(ACTIVE_STATUSES))
        .values(run_after=utcnow())
        .execution_options(synchronize_session=False)
    )
