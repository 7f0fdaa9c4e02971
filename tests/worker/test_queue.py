"""Claims, leases and heartbeats on SQLite and PostgreSQL, and workers keeping or losing them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.factories import Factories
from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.engine import unit_of_work
from tuneforge.db.tables.jobs import FineTuningEvent, FineTuningJob, JobStatus
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.providers.contract import (
    BaseModelInfo,
    ProviderCheckpoint,
    ProviderEvent,
    ProviderJobRequest,
    ProviderJobStatus,
)
from tuneforge.worker.loop import Worker
from tuneforge.worker.queue import (
    claim_job,
    claim_next_job,
    heartbeat,
    release,
    request_run_now,
)
from tuneforge.worker.runner import JobRunner, LeaseLost, WorkerConfig

LEASE = 30.0

QueueJobs = Callable[..., list[str]]
Factory = sessionmaker[Session]


@pytest.fixture
def queue_jobs(session_factory: Factory) -> Iterator[QueueJobs]:
    with session_factory() as session:
        rows = Factories(session)
        organization_id = rows.organization()
        dataset = rows.dataset_with_examples(organization_id, train=1, validation=0, invalid=0)

        def add(count: int = 1, **fields: object) -> list[str]:
            return [rows.queued_job(organization_id, dataset, **fields).id for _ in range(count)]

        yield add


def claim(factory: sessionmaker[Session], worker_id: str, lease: float = LEASE) -> str | None:
    with unit_of_work(factory) as session:
        job = claim_next_job(session, worker_id, lease)
        return job.id if job is not None else None


def load(factory: sessionmaker[Session], job_id: str) -> FineTuningJob:
    with factory() as session:
        job = session.get(FineTuningJob, job_id)
        assert job is not None
        return job


def test_claim_takes_the_lease_of_a_due_job(
    session_factory: Factory, queue_jobs: QueueJobs
) -> None:
    [job_id] = queue_jobs()

    assert claim(session_factory, "worker-a") == job_id

    job = load(session_factory, job_id)
    assert job.lease_owner == "worker-a"
    assert job.lease_expires_at is not None
    assert job.lease_expires_at > utcnow() + timedelta(seconds=LEASE - 5)
    assert job.heartbeat_at is not None
    assert claim(session_factory, "worker-b") is None


def test_jobs_not_due_terminal_or_leased_are_not_claimed(
    session_factory: Factory, queue_jobs: QueueJobs
) -> None:
    queue_jobs(run_after=utcnow() + timedelta(hours=1))
    queue_jobs(status=JobStatus.SUCCEEDED)
    queue_jobs(status=JobStatus.CANCELLED)
    queue_jobs(lease_owner="other", lease_expires_at=utcnow() + timedelta(minutes=1))

    assert claim(session_factory, "worker-a") is None


def test_longest_due_job_is_claimed_first(session_factory: Factory, queue_jobs: QueueJobs) -> None:
    [later] = queue_jobs(run_after=utcnow() - timedelta(seconds=5))
    [earlier] = queue_jobs(run_after=utcnow() - timedelta(minutes=5))

    assert claim(session_factory, "worker-a") == earlier
    assert claim(session_factory, "worker-a") == later


def test_concurrent_claimants_each_win_different_jobs(
    session_factory: Factory, queue_jobs: QueueJobs
) -> None:
    job_ids = set(queue_jobs(12))
    claims: dict[str, list[str]] = {}
    barrier = threading.Barrier(6)

    def claim_all(worker_id: str) -> None:
        barrier.wait()
        mine = claims.setdefault(worker_id, [])
        while (job_id := claim(session_factory, worker_id)) is not None:
            mine.append(job_id)

    threads = [threading.Thread(target=claim_all, args=(f"worker-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    claimed = [job_id for mine in claims.values() for job_id in mine]
    assert sorted(claimed) == sorted(job_ids)  # every job once, none twice
    for worker_id, mine in claims.items():
        for job_id in mine:
            assert load(session_factory, job_id).lease_owner == worker_id


def race_for_one_claim(factory: Factory, worker_ids: list[str]) -> list[str | None]:
    """Start every claimant at the same instant; return what each one got."""
    results: list[str | None] = []
    barrier = threading.Barrier(len(worker_ids))

    def race(worker_id: str) -> None:
        barrier.wait()
        results.append(claim(factory, worker_id))

    threads = [threading.Thread(target=race, args=(w,)) for w in worker_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_two_claimants_racing_for_one_job_one_wins(
    session_factory: Factory, queue_jobs: QueueJobs
) -> None:
    for _ in range(5):
        [job_id] = queue_jobs()

        results = race_for_one_claim(session_factory, ["worker-a", "worker-b"])

        assert sorted(results, key=str) == sorted([job_id, None], key=str)


def test_expired_lease_is_claimable_again(session_factory: Factory, queue_jobs: QueueJobs) -> None:
    [job_id] = queue_jobs()
    assert claim(session_factory, "dead-worker", lease=0.2) == job_id
    assert claim(session_factory, "worker-b") is None

    time.sleep(0.3)

    assert claim(session_factory, "worker-b") == job_id
    assert load(session_factory, job_id).lease_owner == "worker-b"


def test_heartbeat_extends_our_lease_and_reports_a_lost_one(
    session_factory: Factory, queue_jobs: QueueJobs
) -> None:
    [job_id] = queue_jobs()
    assert claim(session_factory, "worker-a", lease=0.2) == job_id

    with unit_of_work(session_factory) as session:
        assert heartbeat(session, job_id, "worker-a", LEASE)
    time.sleep(0.3)
    assert claim(session_factory, "worker-b") is None  # the heartbeat kept it

    with unit_of_work(session_factory) as session:
        session.execute(
            update(FineTuningJob)
            .where(FineTuningJob.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert claim(session_factory, "worker-b") == job_id
    with unit_of_work(session_factory) as session:
        assert not heartbeat(session, job_id, "worker-a", LEASE)
    assert load(session_factory, job_id).lease_owner == "worker-b"


def test_heartbeat_on_a_finished_job_is_refused(
    session_factory: Factory, queue_jobs: QueueJobs
) -> None:
    [job_id] = queue_jobs()
    assert claim(session_factory, "worker-a") == job_id
    with unit_of_work(session_factory) as session:
        session.execute(
            update(FineTuningJob)
            .where(FineTuningJob.id == job_id)
            .values(status=JobStatus.SUCCEEDED)
        )

    with unit_of_work(session_factory) as session:
        assert not heartbeat(session, job_id, "worker-a", LEASE)


def test_release_schedules_the_next_run(session_factory: Factory, queue_jobs: QueueJobs) -> None:
    [job_id] = queue_jobs()
    assert claim(session_factory, "worker-a") == job_id
    next_run = utcnow() + timedelta(seconds=0.3)

    with unit_of_work(session_factory) as session:
        assert not release(session, job_id, "worker-b", next_run)  # not the holder
        assert release(session, job_id, "worker-a", next_run)

    job = load(session_factory, job_id)
    assert (job.lease_owner, job.lease_expires_at) == (None, None)
    assert job.run_after == next_run
    assert claim(session_factory, "worker-b") is None
    time.sleep(0.35)
    assert claim(session_factory, "worker-b") == job_id


def test_run_now_requested_during_a_lease_survives_release(
    session_factory: Factory, queue_jobs: QueueJobs
) -> None:
    [job_id] = queue_jobs()
    assert claim(session_factory, "worker-a") == job_id

    with unit_of_work(session_factory) as session:
        request_run_now(session, job_id)
    with unit_of_work(session_factory) as session:
        release(session, job_id, "worker-a", utcnow() + timedelta(hours=1))

    assert claim(session_factory, "worker-b") == job_id


def test_claim_job_takes_one_job_only_when_its_lease_is_free(
    session_factory: Factory, queue_jobs: QueueJobs
) -> None:
    [job_id] = queue_jobs(run_after=utcnow() + timedelta(hours=1))

    with unit_of_work(session_factory) as session:
        assert claim_job(session, job_id, "sync", LEASE) is not None
    with unit_of_work(session_factory) as session:
        assert claim_job(session, job_id, "other", LEASE) is None
    assert load(session_factory, job_id).lease_owner == "sync"


def test_postgres_claimants_skip_rows_locked_by_an_open_claim(
    session_factory: Factory, queue_jobs: QueueJobs, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite serializes claims instead")
    first, second = queue_jobs(2)
    holder = session_factory()
    try:
        job = claim_next_job(holder, "worker-a", LEASE)  # claimed, not committed: row locked
        assert job is not None
        started = time.monotonic()
        other = claim(session_factory, "worker-b")
        assert time.monotonic() - started < 5  # did not wait for the open transaction
        assert {job.id, other} == {first, second}
    finally:
        holder.rollback()
        holder.close()


@pytest.fixture
def worker_settings(worker_settings: Settings) -> Settings:
    """A lease short enough to expire, or need renewing, within a test."""
    return worker_settings.model_copy(update={"worker_lease_seconds": 0.3})


def test_a_worker_that_lost_its_lease_writes_nothing(
    worker_settings: Settings, session_factory: Factory, queue_jobs: QueueJobs
) -> None:
    [job_id] = queue_jobs()
    assert claim(session_factory, "slow-worker") == job_id
    with unit_of_work(session_factory) as session:
        session.execute(
            update(FineTuningJob)
            .where(FineTuningJob.id == job_id)
            .values(lease_owner="new-worker", lease_expires_at=utcnow() + timedelta(minutes=1))
        )

    with pytest.raises(LeaseLost):
        JobRunner(session_factory, worker_settings, "slow-worker").advance(job_id)

    job = load(session_factory, job_id)
    assert (job.status, job.lease_owner) == (JobStatus.PENDING, "new-worker")
    with session_factory() as session:
        assert session.scalars(select(FineTuningEvent)).all() == []


class InWorkerTrainer:
    """A provider that trains inside the worker: running for ``polls`` polls, then done."""

    name = "in-worker"
    runs_in_worker = True
    can_pause = False
    serves_models_here = False

    def __init__(self, polls: int, on_poll: Callable[[int], None]) -> None:
        self.polls = polls
        self.on_poll = on_poll
        self.seen = 0
        self.created: set[str] = set()
        self.abandoned: list[str] = []

    def list_base_models(self) -> list[BaseModelInfo]:
        return []

    def ensure_configured(self) -> None:
        return None

    def check_hyperparameters(self, requested: dict[str, Any]) -> None:
        return None

    def upload_training_file(self, path: Path, *, idempotency_key: str) -> str:
        return f"local-file-{idempotency_key}"

    def create_job(self, request: ProviderJobRequest) -> str:
        self.created.add(request.idempotency_key)
        return f"local-run-{request.idempotency_key}"

    def find_job(self, idempotency_key: str) -> str | None:
        return f"local-run-{idempotency_key}" if idempotency_key in self.created else None

    def get_status(self, provider_job_id: str) -> ProviderJobStatus:
        self.seen += 1
        self.on_poll(self.seen)
        if self.seen < self.polls:
            return ProviderJobStatus(JobStatus.RUNNING, "running")
        return ProviderJobStatus(JobStatus.SUCCEEDED, "succeeded", fine_tuned_model="local/m")

    def list_events(self, provider_job_id: str, *, after: str | None) -> list[ProviderEvent]:
        return []

    def list_checkpoints(self, provider_job_id: str) -> list[ProviderCheckpoint]:
        return []

    def cancel(self, provider_job_id: str) -> None:
        return None

    def pause(self, provider_job_id: str) -> None:
        return None

    def abandon(self, provider_job_id: str) -> None:
        self.abandoned.append(provider_job_id)


def in_worker(
    session_factory: Factory,
    worker_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    trainer: InWorkerTrainer,
    poll_seconds: float = 0.1,
) -> Worker:
    config = WorkerConfig(in_worker_poll_seconds=poll_seconds, idle_sleep_seconds=0.01)
    worker = Worker(session_factory, worker_settings, "trainer-worker", config)
    monkeypatch.setattr(worker.runner, "provider_for", lambda name: trainer)
    return worker


def test_in_worker_training_keeps_its_lease_alive_until_done(
    session_factory: Factory,
    worker_settings: Settings,
    queue_jobs: QueueJobs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Training is under way: the steps are polls only (starting is tested elsewhere; in the
    # full suite on PostgreSQL its first step once outlasted the lease with no heartbeat).
    [job_id] = queue_jobs(
        provider="in-worker", status=JobStatus.RUNNING, provider_job_id="local-run-started"
    )
    rival_claims: list[str | None] = []

    def rival_claims_during_training(_: int) -> None:
        with unit_of_work(session_factory) as session:
            job = claim_next_job(session, "rival", 30.0)
            rival_claims.append(job.id if job else None)

    # A lease of seconds, not the file's 0.3 s, which a busy machine's scheduling alone can
    # let lapse between two heartbeats.
    lease = 3.0
    settings = worker_settings.model_copy(update={"worker_lease_seconds": lease})
    trainer = InWorkerTrainer(polls=14, on_poll=rival_claims_during_training)
    trainer.created.add(job_id)
    worker = in_worker(session_factory, settings, monkeypatch, trainer, poll_seconds=0.5)

    started = time.monotonic()
    assert worker.run_once()

    assert time.monotonic() - started > 2 * lease  # outlived its lease twice over
    assert rival_claims == [None] * 14
    assert trainer.abandoned == []
    job = load(session_factory, job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.heartbeat_at is not None
    with session_factory() as session:
        assert session.scalars(select(FineTunedModel.job_id)).all() == [job_id]


def test_stopping_mid_training_hands_the_job_back_at_once(
    session_factory: Factory,
    worker_settings: Settings,
    queue_jobs: QueueJobs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [job_id] = queue_jobs(provider="in-worker")
    stop = threading.Event()
    trainer = InWorkerTrainer(polls=100, on_poll=lambda seen: seen == 3 and stop.set())
    worker = in_worker(session_factory, worker_settings, monkeypatch, trainer)

    assert worker.run_once(stop)

    job = load(session_factory, job_id)
    assert trainer.seen == 3
    assert trainer.abandoned == [f"local-run-{job_id}"]
    assert job.status == JobStatus.RUNNING
    assert job.lease_owner is None
    assert job.run_after is not None
    assert job.run_after <= utcnow()


def test_a_worker_that_loses_the_database_stops_its_trainer_and_backs_off(
    session_factory: Factory,
    worker_settings: Settings,
    queue_jobs: QueueJobs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [job_id] = queue_jobs(provider="in-worker")
    outage = threading.Event()

    def flaky() -> Session:
        if outage.is_set():
            raise OperationalError("SELECT 1", {}, ConnectionError("database unreachable"))
        return session_factory()

    trainer = InWorkerTrainer(polls=100, on_poll=lambda seen: seen == 3 and outage.set())
    worker = in_worker(flaky, worker_settings, monkeypatch, trainer)  # type: ignore[arg-type]

    with pytest.raises(OperationalError):
        worker.run_once()
    assert trainer.abandoned == [f"local-run-{job_id}"]  # found without the database

    class CountingStop(threading.Event):
        def __init__(self) -> None:
            super().__init__()
            self.waits: list[float] = []

        def wait(self, timeout: float | None = None) -> bool:
            self.waits.append(timeout or 0.0)
            if len(self.waits) == 4:
                self.set()
            return self.is_set()

    stop = CountingStop()
    worker.run_forever(stop)  # the database is still down: it waits longer, never exits
    assert stop.waits == [0.02, 0.04, 0.08, 0.16]
