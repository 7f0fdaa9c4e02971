"""Every (from, to) pair of the job state machine, allowed and refused, on both backends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.factories import Factories
from tuneforge.db.base import utcnow
from tuneforge.db.engine import unit_of_work
from tuneforge.db.tables.jobs import FineTuningEvent, FineTuningJob, JobStatus
from tuneforge.errors import NotFound
from tuneforge.jobs.states import (
    ACTIVE_STATUSES,
    ALLOWED_TRANSITIONS,
    IDLE_STATUSES,
    TERMINAL_STATUSES,
    InvalidTransition,
    JobUpdate,
    _compare_and_set_status,
    can_transition,
    transition_job,
    update_job,
)
from tuneforge.providers.contract import ProviderJobState

Factory = sessionmaker[Session]
PAIRS = [(current, target) for current in JobStatus for target in JobStatus]


@pytest.fixture
def job_in(session_factory: Factory) -> Iterator[Callable[[JobStatus], str]]:
    """A leased job in the given status."""
    with session_factory() as session:
        rows = Factories(session)
        organization_id = rows.organization()
        dataset = rows.dataset_with_examples(organization_id, train=1, validation=0, invalid=0)

        def add(status: JobStatus) -> str:
            return rows.queued_job(
                organization_id,
                dataset,
                status=status,
                lease_owner="worker",
                lease_expires_at=utcnow() + timedelta(minutes=1),
            ).id

        yield add


def stored(factory: Factory, job_id: str) -> tuple[FineTuningJob, list[FineTuningEvent]]:
    with factory() as session:
        job = session.get(FineTuningJob, job_id)
        assert job is not None
        events = session.scalars(
            select(FineTuningEvent)
            .where(FineTuningEvent.job_id == job_id)
            .order_by(FineTuningEvent.id)
        )
        return job, list(events)


def test_the_table_covers_every_status_and_terminal_states_are_final() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(JobStatus)
    assert set(JobStatus) == TERMINAL_STATUSES | ACTIVE_STATUSES
    assert not TERMINAL_STATUSES & ACTIVE_STATUSES
    for status in TERMINAL_STATUSES:
        assert ALLOWED_TRANSITIONS[status] == frozenset()
    for status in ACTIVE_STATUSES:
        assert status not in ALLOWED_TRANSITIONS[status]
        assert JobStatus.FAILED in ALLOWED_TRANSITIONS[status]


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_transition_pair(
    session_factory: Factory,
    job_in: Callable[[JobStatus], str],
    current: JobStatus,
    target: JobStatus,
) -> None:
    job_id = job_in(current)

    if target == current:
        with unit_of_work(session_factory) as session:
            transition_job(session, job_id, target)
        job, events = stored(session_factory, job_id)
        assert job.status == current
        assert events == []  # a poller seeing the same status again writes nothing
    elif can_transition(current, target):
        with unit_of_work(session_factory) as session:
            transition_job(session, job_id, target)
        job, events = stored(session_factory, job_id)
        assert job.status == target
        [event] = events
        assert event.event_type == "status"
        assert event.data == {"from": current.value, "to": target.value}
        assert event.message == f"Job status changed from {current.value} to {target.value}"
        assert event.level == ("error" if target == JobStatus.FAILED else "info")
        assert (job.finished_at is not None) == (target in TERMINAL_STATUSES)
        if target in IDLE_STATUSES:
            assert (job.lease_owner, job.lease_expires_at, job.run_after) == (None, None, None)
        else:
            assert job.lease_owner == "worker"
        assert (job.started_at is not None) == (target == JobStatus.RUNNING)
        assert (job.progress_percentage == 100.0) == (target == JobStatus.SUCCEEDED)
    else:
        with session_factory() as session:
            with pytest.raises(InvalidTransition) as refused:
                transition_job(session, job_id, target)
            session.rollback()
        assert refused.value.status_code == 409
        assert refused.value.extra == {"status": current.value}
        job, events = stored(session_factory, job_id)
        assert job.status == current
        assert events == []


def test_a_field_update_writes_an_event_only_with_a_message(
    session_factory: Factory, job_in: Callable[[JobStatus], str]
) -> None:
    job_id = job_in(JobStatus.RUNNING)

    with unit_of_work(session_factory) as session:
        update_job(session, job_id, JobUpdate(latest_metrics={"train_loss": 1.0}))
        update_job(
            session,
            job_id,
            JobUpdate(progress_percentage=40.0, latest_metrics={"valid_loss": 2.0}),
            message="Step 20",
        )

    job, events = stored(session_factory, job_id)
    assert job.progress_percentage == 40.0
    assert job.latest_metrics == {"train_loss": 1.0, "valid_loss": 2.0}
    assert [e.message for e in events] == ["Step 20"]


def test_failure_carries_its_error_and_a_custom_message(
    session_factory: Factory, job_in: Callable[[JobStatus], str]
) -> None:
    job_id = job_in(JobStatus.QUEUED)

    with unit_of_work(session_factory) as session:
        transition_job(
            session,
            job_id,
            JobStatus.FAILED,
            message="Training failed: bad file",
            update=JobUpdate(error_code="invalid_file", error_message="bad file"),
        )

    job, [event] = stored(session_factory, job_id)
    assert (job.error_code, job.error_message) == ("invalid_file", "bad file")
    assert (event.message, event.level) == ("Training failed: bad file", "error")


def test_unknown_job_is_not_found(session_factory: Factory) -> None:
    with session_factory() as session, pytest.raises(NotFound):
        transition_job(session, "missing", JobStatus.FAILED)


def test_a_status_changed_since_it_was_read_is_not_overwritten(
    session_factory: Factory, job_in: Callable[[JobStatus], str]
) -> None:
    """A cancel that read 'running' must not win over a worker that just finished the job."""
    job_id = job_in(JobStatus.RUNNING)
    with session_factory() as api_session:
        stale = api_session.get(FineTuningJob, job_id)
        assert stale is not None and stale.status == JobStatus.RUNNING
        with unit_of_work(session_factory) as worker_session:
            transition_job(worker_session, job_id, JobStatus.SUCCEEDED)

        with pytest.raises(InvalidTransition, match="concurrently"):
            _compare_and_set_status(api_session, stale, JobStatus.RUNNING, JobStatus.CANCELLING)
        assert stale.status == JobStatus.SUCCEEDED


def test_a_field_update_cannot_change_the_status(
    session_factory: Factory, job_in: Callable[[JobStatus], str]
) -> None:
    """Only the transition table moves a job: a JobUpdate has no way to name a status."""
    assert "status" not in {f.name for f in fields(JobUpdate)}
    job_id = job_in(JobStatus.RUNNING)
    with unit_of_work(session_factory) as session:
        update_job(session, job_id, JobUpdate(attempts=2, error_message="transient"))
    job, _ = stored(session_factory, job_id)
    assert (job.status, job.attempts) == (JobStatus.RUNNING, 2)


def test_every_state_a_provider_reports_is_a_job_status() -> None:
    assert {state.value for state in ProviderJobState} <= {status.value for status in JobStatus}
