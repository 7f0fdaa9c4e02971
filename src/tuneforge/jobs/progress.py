"""Recording what a provider reports about a running job: events, metrics, checkpoints, progress.

Pollers see the same events and checkpoints many times, so events are deduplicated on
their provider id and checkpoints mirror the provider's kept ones by step; metric points
are appended only for events seen for the first time. Every job field goes through
``update_job``, which locks the row the same way as a status change does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.db.base import utcnow
from tuneforge.db.tables.jobs import FineTuningEvent, FineTuningJob, JobCheckpoint, JobMetric
from tuneforge.jobs.states import JobUpdate, update_job
from tuneforge.providers.contract import (
    ProviderCheckpoint,
    ProviderEvent,
    ProviderJobStatus,
    ProviderMetric,
)

_EVENT_TYPE_LENGTH = 50
_LEVEL_LENGTH = 10


def latest_provider_event_id(session: Session, job_id: str) -> str | None:
    """The provider id of the newest provider event recorded, to ask only for newer ones."""
    return session.scalar(
        select(FineTuningEvent.provider_event_id)
        .where(
            FineTuningEvent.job_id == job_id,
            FineTuningEvent.provider_event_id.is_not(None),
        )
        .order_by(FineTuningEvent.id.desc())
        .limit(1)
    )


def record_provider_events(
    session: Session, job_id: str, events: Sequence[ProviderEvent]
) -> list[ProviderEvent]:
    """Store the events not stored yet (oldest first) and their metrics; return the new ones."""
    if not events:
        return []
    seen = set(
        session.scalars(
            select(FineTuningEvent.provider_event_id).where(
                FineTuningEvent.job_id == job_id,
                FineTuningEvent.provider_event_id.in_([e.provider_event_id for e in events]),
            )
        )
    )
    new_events: list[ProviderEvent] = []
    for event in events:
        if event.provider_event_id in seen:
            continue
        seen.add(event.provider_event_id)
        new_events.append(event)
        session.add(
            FineTuningEvent(
                job_id=job_id,
                level=event.level[:_LEVEL_LENGTH],
                event_type=event.event_type[:_EVENT_TYPE_LENGTH],
                message=event.message,
                data=event.data,
                provider_event_id=event.provider_event_id,
                created_at=event.created_at,
            )
        )
    record_metrics(session, job_id, [m for event in new_events for m in event.metrics])
    return new_events


def record_metrics(session: Session, job_id: str, metrics: Sequence[ProviderMetric]) -> None:
    """Append metric points and mirror the newest value of each metric on the job."""
    if not metrics:
        return
    session.add_all(
        JobMetric(job_id=job_id, step=m.step, name=m.name, value=m.value) for m in metrics
    )
    ordered = sorted(metrics, key=lambda m: m.step)
    latest: dict[str, float] = {m.name: m.value for m in ordered}
    latest["step"] = float(ordered[-1].step)
    update_job(session, job_id, JobUpdate(latest_metrics=latest))


def record_checkpoints(
    session: Session, job_id: str, checkpoints: Sequence[ProviderCheckpoint]
) -> None:
    """Mirror the checkpoints the provider keeps: one row per step, new ones inserted, known
    ones refreshed, and ones it pruned removed (a model can only be made from a kept one)."""
    existing = {
        row.step: row
        for row in session.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == job_id))
    }
    listed = {checkpoint.step for checkpoint in checkpoints}
    for step, row in existing.items():
        if step not in listed:
            session.delete(row)
    for checkpoint in checkpoints:
        row = existing.get(checkpoint.step)
        if row is None:
            row = JobCheckpoint(job_id=job_id, step=checkpoint.step)
            session.add(row)
        row.provider_checkpoint_id = checkpoint.provider_checkpoint_id
        row.model_reference = checkpoint.model_reference
        row.metrics = dict(checkpoint.metrics)
    session.flush()


def record_progress(
    session: Session,
    job: FineTuningJob,
    status: ProviderJobStatus,
    new_events: Sequence[ProviderEvent],
    *,
    now: datetime | None = None,
) -> None:
    """Update trained tokens, progress % (never backwards) and the estimated finish time."""
    now = now or utcnow()
    percent = status.progress_percentage
    if percent is None:
        percent = percent_from_events(new_events)
    update = JobUpdate(trained_tokens=status.trained_tokens)
    if percent is not None:
        update.progress_percentage = max(job.progress_percentage, min(percent, 100.0))
    update.estimated_finish = status.estimated_finish or extrapolate_finish(
        job.started_at, update.progress_percentage, now
    )
    update_job(session, job.id, update)


def percent_from_events(events: Sequence[ProviderEvent]) -> float | None:
    """Progress from the newest event that says ``step`` of ``total_steps``."""
    for event in reversed(events):
        data: dict[str, Any] = event.data or {}
        step, total = data.get("step"), data.get("total_steps")
        if isinstance(step, int | float) and isinstance(total, int | float) and total > 0:
            return 100.0 * step / total
    return None


def extrapolate_finish(
    started_at: datetime | None, percent: float | None, now: datetime
) -> datetime | None:
    """A linear ETA from the time spent so far, when the provider gives none."""
    if started_at is None or percent is None or not 0 < percent < 100:
        return None
    return started_at + (now - started_at) * (100.0 / percent)
