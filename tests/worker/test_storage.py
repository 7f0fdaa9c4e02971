"""Workers on one database must share the data dir: checked at start, and a local job that
started in a data dir this worker cannot see fails with a clear error, on both backends."""

from __future__ import annotations

import logging
import stat
import threading
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.factories import Factories
from tuneforge.config import Settings
from tuneforge.db.engine import unit_of_work
from tuneforge.db.tables.deployment import DeploymentFact
from tuneforge.db.tables.jobs import FineTuningJob, JobStatus
from tuneforge.providers.local.jobdir import job_paths, update_status
from tuneforge.providers.local.provider import JOB_DIR_NOT_VISIBLE, LocalProvider
from tuneforge.worker.loop import Worker
from tuneforge.worker.runner import WorkerConfig
from tuneforge.worker.storage import STORAGE_ID_FILE, check_shared_data_dir, data_dir_storage_id

Factory = sessionmaker[Session]
FAST = WorkerConfig(in_worker_poll_seconds=0.01, idle_sleep_seconds=0.01)


@pytest.fixture
def other_settings(worker_settings: Settings, tmp_path: Path) -> Settings:
    """A second worker on the same database with a data dir of its own."""
    return worker_settings.model_copy(update={"data_dir": tmp_path / "other"})


def check(factory: Factory, settings: Settings) -> str | None:
    with unit_of_work(factory) as session:
        return check_shared_data_dir(session, settings)


def test_a_data_dir_gets_one_private_storage_id(worker_settings: Settings) -> None:
    storage_id = data_dir_storage_id(worker_settings)

    assert data_dir_storage_id(worker_settings) == storage_id
    id_file = worker_settings.data_dir / STORAGE_ID_FILE
    assert stat.S_IMODE(id_file.stat().st_mode) == 0o600
    assert [p.name for p in worker_settings.data_dir.iterdir()] == [STORAGE_ID_FILE]


def test_sqlite_needs_no_shared_data_dir(
    database_url: str, session_factory: Factory, worker_settings: Settings, other_settings: Settings
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("what a SQLite deployment does")

    assert check(session_factory, worker_settings) is None
    assert check(session_factory, other_settings) is None
    with session_factory() as session:
        assert session.scalars(select(DeploymentFact)).all() == []


def test_postgresql_workers_with_different_data_dirs_are_told(
    postgres_url: str, session_factory: Factory, worker_settings: Settings, other_settings: Settings
) -> None:
    assert check(session_factory, worker_settings) is None
    assert check(session_factory, worker_settings) is None  # the same worker, restarted

    warning = check(session_factory, other_settings)

    assert warning is not None
    for settings in (worker_settings, other_settings):
        assert str(settings.data_dir.resolve()) in warning
        assert data_dir_storage_id(settings) in warning
    assert "cannot move between workers" in warning
    assert "TUNEFORGE_DATA_DIR" in warning


def test_postgresql_workers_must_mount_the_shared_data_dir_at_one_path(
    postgres_url: str, session_factory: Factory, worker_settings: Settings, other_settings: Settings
) -> None:
    assert check(session_factory, worker_settings) is None
    other_settings.data_dir.mkdir()
    (other_settings.data_dir / STORAGE_ID_FILE).write_text(data_dir_storage_id(worker_settings))

    warning = check(session_factory, other_settings)

    assert warning is not None
    assert f"at {other_settings.data_dir.resolve()}" in warning
    assert "mounted at the same path" in warning


def test_a_worker_logs_the_warning_when_it_starts(
    postgres_url: str,
    session_factory: Factory,
    worker_settings: Settings,
    other_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    check(session_factory, worker_settings)
    stopped = threading.Event()
    stopped.set()

    with caplog.at_level(logging.WARNING, logger="tuneforge.worker"):
        Worker(session_factory, other_settings, "elsewhere", FAST).run_forever(stopped)

    [record] = [r for r in caplog.records if "cannot move between workers" in r.getMessage()]
    assert "elsewhere" in record.getMessage()


def local_job(factory: Factory, **fields: object) -> str:
    with factory() as session:
        rows = Factories(session)
        organization_id = rows.organization()
        dataset = rows.dataset_with_examples(organization_id, train=3, validation=0, invalid=0)
        return rows.queued_job(
            organization_id, dataset, provider="local", base_model="tiny-llama", **fields
        ).id


def run_to_failure(factory: Factory, settings: Settings, job_id: str) -> FineTuningJob:
    assert Worker(factory, settings, "elsewhere", FAST).run_once()
    with factory() as session:
        job = session.get(FineTuningJob, job_id)
        assert job is not None
        return job


def test_a_local_job_resumed_without_its_directory_fails_clearly(
    session_factory: Factory, worker_settings: Settings, other_settings: Settings
) -> None:
    job_id = local_job(session_factory, status=JobStatus.RUNNING)
    # Left as a worker on the first data dir leaves it when it dies mid-training.
    training = worker_settings.data_dir / "train.jsonl"
    training.parent.mkdir(parents=True)
    training.write_text('{"messages": []}\n')
    file_id = LocalProvider(worker_settings).upload_training_file(training, idempotency_key="t")
    first_paths = job_paths(worker_settings, job_id)
    first_paths.root.mkdir(parents=True)
    update_status(first_paths, state="running", step=3, attempt=1)
    with session_factory.begin() as session:
        job = session.get(FineTuningJob, job_id)
        assert job is not None
        job.provider_job_id = job_id
        job.provider_file_ids = {"training": file_id, "validation": None}

    job = run_to_failure(session_factory, other_settings, job_id)

    missing = job_paths(other_settings, job_id).root
    assert (job.status, job.error_code) == (JobStatus.FAILED, JOB_DIR_NOT_VISIBLE)
    message = job.error_message or ""
    assert f"job directory {missing.resolve()} is not visible from this worker" in message
    assert "must share the data dir" in message
    assert "TUNEFORGE_DATA_DIR" in message
    assert not missing.exists()  # nothing trained again from step 0


def test_files_uploaded_into_another_data_dir_fail_clearly(
    session_factory: Factory, other_settings: Settings, tmp_path: Path
) -> None:
    elsewhere = str(tmp_path / "first-machine" / "jobs" / "files" / "t.jsonl")
    job_id = local_job(
        session_factory,
        status=JobStatus.VALIDATING_FILES,
        provider_file_ids={"training": elsewhere, "validation": None},
    )

    job = run_to_failure(session_factory, other_settings, job_id)

    assert (job.status, job.error_code) == (JobStatus.FAILED, JOB_DIR_NOT_VISIBLE)
    message = job.error_message or ""
    assert f"file {elsewhere} uploaded for local job {job_id} is not visible" in message
    assert "TUNEFORGE_DATA_DIR" in message
