"""The one state machine every provider's jobs follow, and the one function that moves a job.

Every status change (worker, poller, cancel, provider callbacks) goes through
``transition_job``: it locks the row, checks the move against ``ALLOWED_TRANSITIONS``,
compare-and-sets the status, applies the accompanying field updates and appends an event,
all in the caller's transaction. Progress and other field writes go through
``update_job``, which locks the row the same way but cannot change the status: a
``JobUpdate`` has no status field, so the transition table is the only way to one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tuneforge.db.base import utcnow
from tuneforge.db.tables.jobs import FineTuningEvent, FineTuningJob, JobStatus
from tuneforge.errors import Conflict, NotFound
from tuneforge.webhooks.outbox import JOB_EVENTS, record_event

S = JobStatus

TERMINAL_STATUSES = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})
ACTIVE_STATUSES = frozenset(set(S) - TERMINAL_STATUSES)
# Not over, but nothing for a worker to do until a user resumes it: never claimed.
PARKED_STATUSES = frozenset({S.PAUSED})
WORKABLE_STATUSES = ACTIVE_STATUSES - PARKED_STATUSES
# A worker releases these without a next run: they hold no lease and no place in the queue.
IDLE_STATUSES = TERMINAL_STATUSES | PARKED_STATUSES

ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.PENDING: frozenset(
        {S.VALIDATING_FILES, S.QUEUED, S.RUNNING, S.PAUSED, S.FAILED, S.CANCELLED}
    ),
    S.VALIDATING_FILES: frozenset(
        {S.QUEUED, S.RUNNING, S.PAUSING, S.FAILED, S.CANCELLING, S.CANCELLED}
    ),
    S.QUEUED: frozenset({S.RUNNING, S.PAUSING, S.SUCCEEDED, S.FAILED, S.CANCELLING, S.CANCELLED}),
    S.RUNNING: frozenset({S.PAUSING, S.SUCCEEDED, S.FAILED, S.CANCELLING, S.CANCELLED}),
    # A pause that arrives as training ends loses to the end.
    S.PAUSING: frozenset({S.PAUSED, S.SUCCEEDED, S.FAILED, S.CANCELLING, S.CANCELLED}),
    # Resuming queues the job again (pending when nothing had started yet).
    S.PAUSED: frozenset({S.PENDING, S.QUEUED, S.FAILED, S.CANCELLING, S.CANCELLED}),
    S.CANCELLING: frozenset({S.CANCELLED, S.SUCCEEDED, S.FAILED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}


class InvalidTransition(Conflict):
    """A move the state machine does not allow; a user action gets it as a 409."""


@dataclass
class JobUpdate:
    """Fields that change together with (or without) a status change; None leaves a field."""

    progress_percentage: float | None = None
    trained_tokens: int | None = None
    estimated_finish: datetime | None = None
    latest_metrics: dict[str, float] | None = None
    fine_tuned_model_name: str | None = None
    provider_job_id: str | None = None
    provider_file_ids: dict[str, str | None] | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int | None = None
    run_after: datetime | None = None


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in ALLOWED_TRANSITIONS[current]


def lock_job(session: Session, job_id: str) -> FineTuningJob:
    job = session.scalars(
        select(FineTuningJob).where(FineTuningJob.id == job_id).with_for_update()
    ).first()
    if job is None:
        raise NotFound(f"Fine-tuning job {job_id} not found")
    return job


def transition_job(
    session: Session,
    job_id: str,
    target: JobStatus,
    *,
    message: str | None = None,
    update: JobUpdate | None = None,
    event_type: str = "status",
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> FineTuningJob:
    """Move a job to ``target`` with the fields in ``update``, and say so in an event.

    Moving to the status the job already has changes only the fields (pollers see the
    same status many times); any other move not in the table raises InvalidTransition.
    """
    job = lock_job(session, job_id)
    if target == job.status:
        return _write(session, job, update, message, event_type, level, data)
    if not can_transition(job.status, target):
        raise InvalidTransition(
            f"Job {job.id} cannot go from {job.status.value} to {target.value}",
            status=job.status.value,
        )
    if update is not None:
        _apply_update(job, update)
    previous = job.status
    _compare_and_set_status(session, job, previous, target)
    now = utcnow()
    if target == S.RUNNING and job.started_at is None:
        job.started_at = now
    if target in IDLE_STATUSES:
        job.lease_owner = None
        job.lease_expires_at = None
        job.run_after = None
        job.estimated_finish = None
    if target in TERMINAL_STATUSES:
        job.finished_at = now
        if target == S.SUCCEEDED:
            job.progress_percentage = 100.0
        record_event(session, job.organization_id, JOB_EVENTS[target], job.id)
    session.add(
        FineTuningEvent(
            job_id=job.id,
            level="error" if target == S.FAILED else level,
            event_type=event_type,
            message=message or f"Job status changed from {previous.value} to {target.value}",
            data={"from": previous.value, "to": target.value, **(data or {})},
        )
    )
    session.flush()
    return job


def update_job(
    session: Session,
    job_id: str,
    update: JobUpdate | None = None,
    *,
    message: str | None = None,
    event_type: str = "status",
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> FineTuningJob:
    """Write fields of a job (never its status) and, with a ``message``, an event."""
    return _write(session, lock_job(session, job_id), update, message, event_type, level, data)


def _write(
    session: Session,
    job: FineTuningJob,
    update: JobUpdate | None,
    message: str | None,
    event_type: str,
    level: str,
    data: dict[str, Any] | None,
) -> FineTuningJob:
    if update is not None:
        _apply_update(job, update)
    if message is not None:
        session.add(
            FineTuningEvent(
                job_id=job.id, level=level, event_type=event_type, message=message, data=data
            )
        )
    session.flush()
    return job


def _compare_and_set_status(
    session: Session, job: FineTuningJob, expected: JobStatus, target: JobStatus
) -> None:
    """Write the status only if nobody changed it since we read it.

    ``FOR UPDATE`` already serialises this on PostgreSQL; SQLite ignores it, so the guarded
    UPDATE is what keeps a cancel and a worker from both winning there.
    """
    result = session.execute(
        sql_update(FineTuningJob)
        .where(FineTuningJob.id == job.id, FineTuningJob.status == expected)
        .values(status=target)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        session.refresh(job)
        raise InvalidTransition(
            f"Job {job.id} changed to {job.status.value} concurrently; not moving it to "
            f"{target.value}",
            status=job.status.value,
        )
    set_committed_value(job, "status", target)


_PLAIN_FIELDS = tuple(f.name for f in fields(JobUpdate) if f.name != "latest_metrics")


def _apply_update(job: FineTuningJob, update: JobUpdate) -> None:
    for name in _PLAIN_FIELDS:
        value = getattr(update, name)
        if value is not None:
            setattr(job, name, value)
    if update.latest_metrics:
        job.latest_metrics = {**(job.latest_metrics or {}), **update.latest_metrics}
