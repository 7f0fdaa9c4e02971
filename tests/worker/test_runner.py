"""The runner end to end against the fake OpenAI server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from tests.fakes.openai_server import FakeOpenAI
from tests.fixtures.factories import OPENAI_BASE_MODEL, Factories, example_messages
from tuneforge.app import create_app
from tuneforge.config import Settings
from tuneforge.datasets.export import export_job_files, iter_example_lines
from tuneforge.db.base import utcnow
from tuneforge.db.engine import unit_of_work
from tuneforge.db.tables.datasets import ExampleSplit, TrainingExample
from tuneforge.db.tables.jobs import (
    FineTuningEvent,
    FineTuningJob,
    JobCheckpoint,
    JobMetric,
    JobStatus,
)
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.jobs.states import TERMINAL_STATUSES, transition_job
from tuneforge.providers.contract import (
    ProviderJobRequest,
)
from tuneforge.providers.openai import OpenAIProvider
from tuneforge.worker.loop import Worker, advance_job_now
from tuneforge.worker.runner import WorkerConfig

Factory = sessionmaker[Session]
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
FAST = WorkerConfig(
    max_attempts=4,
    backoff_base_seconds=0.01,
    backoff_max_seconds=0.05,
    in_worker_poll_seconds=0.01,
    idle_sleep_seconds=0.01,
)


@pytest.fixture
def worker_settings(worker_settings: Settings, fake_openai: FakeOpenAI) -> Settings:
    return worker_settings.model_copy(update=fake_openai.settings_overrides)


@pytest.fixture
def worker(session_factory: Factory, worker_settings: Settings) -> Worker:
    return Worker(session_factory, worker_settings, "test-worker", FAST)


@pytest.fixture
def new_job(session_factory: Factory) -> Iterator[Callable[..., str]]:
    with session_factory() as session:
        rows = Factories(session)
        organization_id = rows.organization()
        dataset = rows.dataset_with_examples(organization_id, train=3, validation=1)

        def add(**fields: object) -> str:
            return rows.queued_job(organization_id, dataset, **fields).id

        yield add


def load(factory: Factory, job_id: str) -> FineTuningJob:
    with factory() as session:
        job = session.get(FineTuningJob, job_id)
        assert job is not None
        return job


def run_until(
    worker: Worker, factory: Factory, job_id: str, done: Callable[[FineTuningJob], bool]
) -> FineTuningJob:
    """Let the worker take due jobs until ``done`` holds (waiting out retry delays)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = load(factory, job_id)
        if done(job):
            return job
        if not worker.run_once():
            time.sleep(0.01)
    raise AssertionError(f"job {job_id} stuck in {load(factory, job_id).status}")


def run_to_end(worker: Worker, factory: Factory, job_id: str) -> FineTuningJob:
    return run_until(worker, factory, job_id, lambda job: job.status in TERMINAL_STATUSES)


def events(factory: Factory, job_id: str, event_type: str | None = None) -> list[FineTuningEvent]:
    with factory() as session:
        stmt = select(FineTuningEvent).where(FineTuningEvent.job_id == job_id)
        if event_type is not None:
            stmt = stmt.where(FineTuningEvent.event_type == event_type)
        return list(session.scalars(stmt.order_by(FineTuningEvent.id)))


def count(factory: Factory, model: type, job_id: str) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model).where(model.job_id == job_id))


def test_job_runs_from_pending_to_succeeded_with_one_model(
    worker: Worker,
    worker_settings: Settings,
    session_factory: Factory,
    new_job: Callable[..., str],
    fake_openai: FakeOpenAI,
) -> None:
    job_id = new_job(hyperparameters={"n_epochs": 2}, seed=7)

    job = run_to_end(worker, session_factory, job_id)

    assert job.status == JobStatus.SUCCEEDED
    [provider_job] = fake_openai.jobs
    assert job.provider_job_id == provider_job["id"]
    assert job.fine_tuned_model_name == provider_job["fine_tuned_model"]
    assert job.trained_tokens == provider_job["trained_tokens"]
    assert job.progress_percentage == 100.0
    assert job.latest_metrics is not None
    assert job.latest_metrics["train_loss"] > 0
    assert (job.lease_owner, job.run_after, job.attempts) == (None, None, 0)
    assert provider_job["metadata"]["tuneforge_job_id"] == job_id
    assert provider_job["seed"] == 7
    assert provider_job["hyperparameters"]["n_epochs"] == 2
    assert len(fake_openai.requests_for("jobs.create")) == 1

    training = fake_openai.file_content(provider_job["training_file"]).decode().splitlines()
    validation = fake_openai.file_content(provider_job["validation_file"]).decode().splitlines()
    assert [json.loads(line) for line in training] == [
        {"messages": example_messages(n)} for n in (1, 2, 3)
    ]
    assert [json.loads(line) for line in validation] == [{"messages": example_messages(4)}]

    transitions = [(e.data or {}).get("to") for e in events(session_factory, job_id, "status")]
    assert transitions == ["validating_files", "queued", "running", "succeeded"]
    recorded = [e.provider_event_id for e in events(session_factory, job_id) if e.provider_event_id]
    listed = OpenAIProvider(worker_settings).list_events(provider_job["id"], after=None)
    assert recorded == [e.provider_event_id for e in listed]  # each event once, in order
    # Three running polls, four metrics each (train/valid loss and accuracy) plus the final full_*.
    assert count(session_factory, JobMetric, job_id) == 3 * 4 + 2
    assert count(session_factory, JobCheckpoint, job_id) == 3
    assert count(session_factory, FineTunedModel, job_id) == 1
    with session_factory() as session:
        model = session.scalars(select(FineTunedModel)).one()
    assert model.provider_model_id == job.fine_tuned_model_name


def test_progress_and_eta_are_recorded_while_running(
    worker: Worker,
    session_factory: Factory,
    new_job: Callable[..., str],
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.set_steps_per_phase(validating_files=1, queued=0, running=4)
    job_id = new_job()

    job = run_until(worker, session_factory, job_id, lambda j: j.progress_percentage >= 50)

    assert job.status == JobStatus.RUNNING
    assert 50 <= job.progress_percentage < 100
    assert job.estimated_finish is not None
    assert job.estimated_finish > utcnow()
    assert job.latest_metrics is not None
    assert job.latest_metrics["step"] == job.progress_percentage / 100 * 40


def test_rate_limits_are_retried_after_their_delay(
    worker: Worker,
    session_factory: Factory,
    new_job: Callable[..., str],
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.fail_next("jobs.retrieve", 429, times=2, retry_after=0.2)
    job_id = new_job()

    started = time.monotonic()
    job = run_to_end(worker, session_factory, job_id)

    assert job.status == JobStatus.SUCCEEDED
    assert time.monotonic() - started >= 0.4  # both Retry-After delays were honoured
    retries = events(session_factory, job_id, "retry")
    assert [(e.data or {})["attempt"] for e in retries] == [1, 2]
    assert "429" in retries[0].message
    assert job.attempts == 0
    assert len(fake_openai.requests_for("jobs.create")) == 1
    assert count(session_factory, FineTunedModel, job_id) == 1


def test_job_fails_after_too_many_transient_errors(
    worker: Worker,
    session_factory: Factory,
    new_job: Callable[..., str],
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.fail_next("jobs.create", 503, times=10, retry_after=0.01)
    job_id = new_job()

    job = run_to_end(worker, session_factory, job_id)

    assert job.status == JobStatus.FAILED
    assert job.attempts == FAST.max_attempts
    assert job.error_message is not None
    assert "503" in job.error_message
    assert len(events(session_factory, job_id, "retry")) == FAST.max_attempts - 1
    assert fake_openai.jobs == []


def test_provider_refusal_fails_the_job_with_its_message(
    worker: Worker,
    session_factory: Factory,
    new_job: Callable[..., str],
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.fail_next("jobs.create", 400, message="Model gpt-x is not available", code="bad")
    job_id = new_job()

    job = run_to_end(worker, session_factory, job_id)

    assert job.status == JobStatus.FAILED
    assert (job.error_code, job.error_message) == ("bad", "Model gpt-x is not available")
    [failed] = [e for e in events(session_factory, job_id, "status") if e.data["to"] == "failed"]
    assert failed.level == "error"


def test_failed_provider_job_fails_ours_with_its_error(
    worker: Worker,
    session_factory: Factory,
    new_job: Callable[..., str],
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.fail_job_with("invalid_training_file", "Line 3 is not valid JSON")
    job_id = new_job()

    job = run_to_end(worker, session_factory, job_id)

    assert job.status == JobStatus.FAILED
    assert job.error_code == "invalid_training_file"
    assert job.error_message == "Line 3 is not valid JSON"
    assert count(session_factory, FineTunedModel, job_id) == 0


def test_missing_api_key_fails_the_job(
    session_factory: Factory, worker_settings: Settings, new_job: Callable[..., str]
) -> None:
    settings = worker_settings.model_copy(update={"openai_api_key": None})
    job_id = new_job()

    job = run_to_end(Worker(session_factory, settings, "w", FAST), session_factory, job_id)

    assert job.status == JobStatus.FAILED
    assert job.error_message is not None
    assert "OPENAI_API_KEY" in job.error_message


def test_unknown_provider_status_is_recorded_once_and_polling_goes_on(
    worker: Worker,
    session_factory: Factory,
    new_job: Callable[..., str],
    fake_openai: FakeOpenAI,
) -> None:
    job_id = new_job()
    job = run_until(worker, session_factory, job_id, lambda j: j.provider_job_id is not None)
    assert job.provider_job_id is not None
    fake_openai.set_status(job.provider_job_id, "paused")

    for _ in range(3):
        worker.run_once()

    job = load(session_factory, job_id)
    assert job.status not in TERMINAL_STATUSES
    [noted] = events(session_factory, job_id, "provider_status")
    assert noted.message == "Provider reported status 'paused'"
    assert noted.level == "warning"


def test_cancel_reaches_the_provider_once_and_ends_cancelled(
    worker: Worker,
    session_factory: Factory,
    new_job: Callable[..., str],
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.set_steps_per_phase(validating_files=1, queued=1, running=20)
    job_id = new_job()
    run_until(worker, session_factory, job_id, lambda j: j.status == JobStatus.RUNNING)
    with unit_of_work(session_factory) as session:
        transition_job(session, job_id, JobStatus.CANCELLING, message="Cancel requested")

    job = run_to_end(worker, session_factory, job_id)

    assert job.status == JobStatus.CANCELLED
    assert len(fake_openai.requests_for("jobs.cancel")) == 1
    assert fake_openai.jobs[0]["status"] == "cancelled"
    assert count(session_factory, FineTunedModel, job_id) == 0


def test_cancel_before_the_provider_job_exists_skips_the_provider(
    worker: Worker,
    session_factory: Factory,
    new_job: Callable[..., str],
    fake_openai: FakeOpenAI,
) -> None:
    job_id = new_job(status=JobStatus.CANCELLING)

    job = run_to_end(worker, session_factory, job_id)

    assert job.status == JobStatus.CANCELLED
    assert fake_openai.requests == []


def test_cancel_during_upload_creates_no_provider_job(
    worker: Worker,
    session_factory: Factory,
    new_job: Callable[..., str],
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = new_job()
    provider = worker.runner.provider_for("openai")
    upload = provider.upload_training_file

    def upload_then_user_cancels(path: Path, *, idempotency_key: str) -> str:
        with unit_of_work(session_factory) as session:
            transition_job(session, job_id, JobStatus.CANCELLING)
        return upload(path, idempotency_key=idempotency_key)

    monkeypatch.setattr(provider, "upload_training_file", upload_then_user_cancels)

    job = run_to_end(worker, session_factory, job_id)

    assert job.status == JobStatus.CANCELLED
    assert fake_openai.requests_for("jobs.create") == []


def test_provider_job_created_before_a_crash_is_found_not_duplicated(
    worker: Worker,
    worker_settings: Settings,
    session_factory: Factory,
    new_job: Callable[..., str],
    fake_openai: FakeOpenAI,
) -> None:
    provider = OpenAIProvider(worker_settings)
    training = worker_settings.data_dir / "t.jsonl"
    training.parent.mkdir(parents=True)
    training.write_text(json.dumps({"messages": example_messages(1)}) + "\n")
    file_id = provider.upload_training_file(training, idempotency_key="x")
    job_id = new_job(
        status=JobStatus.VALIDATING_FILES,
        provider_file_ids={"training": file_id, "validation": None},
    )
    existing = provider.create_job(
        ProviderJobRequest(job_id, OPENAI_BASE_MODEL, file_id, None, {}, None, None, {})
    )

    job = run_to_end(worker, session_factory, job_id)

    assert job.status == JobStatus.SUCCEEDED
    assert job.provider_job_id == existing
    assert len(fake_openai.requests_for("jobs.create")) == 1
    assert fake_openai.requests_for("files.create")[1:] == []  # files were not re-uploaded


def test_sync_now_steps_a_free_job_and_only_nudges_a_leased_one(
    worker_settings: Settings, session_factory: Factory, new_job: Callable[..., str]
) -> None:
    job_id = new_job(run_after=utcnow() + timedelta(hours=1))

    assert advance_job_now(session_factory, worker_settings, job_id)
    job = load(session_factory, job_id)
    assert job.status == JobStatus.QUEUED
    assert job.lease_owner is None

    with unit_of_work(session_factory) as session:
        session.execute(
            update(FineTuningJob)
            .where(FineTuningJob.id == job_id)
            .values(
                lease_owner="busy-worker",
                lease_expires_at=utcnow() + timedelta(minutes=1),
                run_after=None,
            )
        )
    assert not advance_job_now(session_factory, worker_settings, job_id)
    job = load(session_factory, job_id)
    assert job.lease_owner == "busy-worker"
    assert job.run_after is not None
    assert job.run_after <= utcnow()


def test_export_streams_valid_rows_in_pages(
    session_factory: Factory, tmp_path: Path, new_job: Callable[..., str]
) -> None:
    with session_factory() as session:
        rows = Factories(session)
        organization_id = rows.organization()
        dataset = rows.dataset_with_examples(organization_id, train=7, validation=0, invalid=2)
        session.execute(
            update(TrainingExample)
            .where(TrainingExample.dataset_id == dataset.id, TrainingExample.line_number == 2)
            .values(tools=[TOOL])
        )
        lines = list(iter_example_lines(session, dataset.id, ExampleSplit.TRAIN, page_size=2))
        records = [json.loads(line) for line in lines]
        assert [r["messages"] for r in records] == [example_messages(n) for n in range(1, 8)]
        assert [r.get("tools") for r in records[:3]] == [None, [TOOL], None]

        other = rows.dataset_with_examples(organization_id, train=2, validation=1)
        job = session.get(FineTuningJob, new_job(validation_dataset_id=other.id))
        assert job is not None
        exported = export_job_files(session, job, tmp_path / "export")

    assert exported.training_examples == 3
    assert exported.validation_examples == 3  # every valid row of the validation dataset
    assert exported.validation_path is not None
    assert len(exported.validation_path.read_text().splitlines()) == 3


def test_the_embedded_worker_of_serve_runs_jobs(
    worker_settings: Settings, session_factory: Factory, new_job: Callable[..., str]
) -> None:
    settings = worker_settings.model_copy(update={"embedded_worker": True})
    job_id = new_job()

    with TestClient(create_app(settings)):
        deadline = time.monotonic() + 30
        while load(session_factory, job_id).status not in TERMINAL_STATUSES:
            assert time.monotonic() < deadline, "the embedded worker did not finish the job"
            time.sleep(0.05)

    assert load(session_factory, job_id).status == JobStatus.SUCCEEDED
