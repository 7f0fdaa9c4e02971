"""Local training jobs across workers: a dead worker's job resumes, a stopped one is handed back.

The trainer is a real child process on a tiny model. A ``tuneforge worker`` process killed
with SIGKILL takes its trainer with it (the kernel kills the child) and leaves its lease to
expire; the next worker must start the job again from its last checkpoint, with one
provider job and one model. A worker that stops or loses the lease kills its trainer
itself; those run on this test's main thread, so the child cannot die with a thread instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.factories import Factories
from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.tables.jobs import FineTuningEvent, FineTuningJob, JobMetric, JobStatus
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.providers.local.jobdir import checkpoint_dirs, job_paths, read_status
from tuneforge.providers.local.provider import JOB_DIR_NOT_VISIBLE
from tuneforge.store.base_models import register_local_model
from tuneforge.worker.loop import Worker
from tuneforge.worker.runner import WorkerConfig

pytestmark = pytest.mark.slow  # real trainer processes

Factory = sessionmaker[Session]
TUNEFORGE = Path(sys.executable).with_name("tuneforge")
FAST = WorkerConfig(in_worker_poll_seconds=0.05, idle_sleep_seconds=0.01)
HYPERPARAMETERS = {
    "n_epochs": 6,
    "batch_size": 4,
    "checkpoint_every_steps": 3,
    "lora_r": 8,
    "lora_alpha": 64,
    "learning_rate_multiplier": 10.0,
    "warmup_ratio": 0.0,
    "early_stopping_patience": 0,  # every step runs, so the steps can be counted
}
TOTAL_STEPS = 6 * 32 // 4


@pytest.fixture
def settings(worker_settings: Settings, tiny_model_dir: Path) -> Settings:
    register_local_model(worker_settings, tiny_model_dir, "tiny-llama")
    return worker_settings


@pytest.fixture
def local_job(session_factory: Factory, one_cpu_thread: None) -> str:
    with session_factory() as session:
        rows = Factories(session)
        organization_id = rows.organization()
        dataset = rows.dataset_with_examples(organization_id, train=32, validation=0, invalid=0)
        job = rows.queued_job(
            organization_id,
            dataset,
            provider="local",
            base_model="tiny-llama",
            hyperparameters=HYPERPARAMETERS,
            seed=3,
        )
        return job.id


def wait_for(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def in_background(action: Callable[[], None]) -> None:
    threading.Thread(target=action, daemon=True).start()


def load(factory: Factory, job_id: str) -> FineTuningJob:
    with factory() as session:
        job = session.get(FineTuningJob, job_id)
        assert job is not None
        return job


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``tuneforge worker`` on the same database and data dir, with a 2 s lease."""
    env = {
        **os.environ,
        "TUNEFORGE_DATABASE_URL": str(settings.database_url),
        "TUNEFORGE_DATA_DIR": str(settings.data_dir),
        "TUNEFORGE_WORKER_LEASE_SECONDS": "2",
    }
    with (tmp_path / "worker.log").open("wb") as log:
        process = subprocess.Popen(
            [str(TUNEFORGE), "worker"], env=env, cwd=tmp_path, stdout=log, stderr=log
        )
    yield process
    process.kill()
    process.wait(timeout=10)


def trainer_events(factory: Factory, job_id: str) -> list[FineTuningEvent]:
    """The events the trainer wrote, in the order it wrote them."""
    with factory() as session:
        events = session.scalars(
            select(FineTuningEvent).where(
                FineTuningEvent.job_id == job_id, FineTuningEvent.provider_event_id.is_not(None)
            )
        ).all()
    return sorted(events, key=lambda e: int(e.provider_event_id or 0))


def test_the_next_worker_resumes_a_killed_workers_job_from_its_checkpoint(
    session_factory: Factory,
    settings: Settings,
    local_job: str,
    worker_process: subprocess.Popen[bytes],
) -> None:
    paths = job_paths(settings, local_job)
    wait_for(lambda: bool(checkpoint_dirs(paths)))
    trainer_pid = read_status(paths)["pid"]
    worker_process.kill()
    worker_process.wait()
    wait_for(lambda: process_gone(trainer_pid), timeout=10)
    stranded = load(session_factory, local_job)
    assert (stranded.status, stranded.provider_job_id) == (JobStatus.RUNNING, local_job)
    assert stranded.lease_owner is not None  # the dead worker's, until it expires
    assert read_status(paths)["state"] == "running"

    second = Worker(session_factory, settings, "second", FAST)
    wait_for(second.run_once, timeout=30)  # claims it once the dead worker's lease expires

    job = load(session_factory, local_job)
    assert job.status == JobStatus.SUCCEEDED, job.error_message
    events = trainer_events(session_factory, local_job)
    assert [e.event_type for e in events].count("started") == 1
    [resumed] = [e for e in events if e.event_type == "resumed"]
    assert resumed.data is not None
    assert resumed.data["step"] >= 3 and resumed.data["step"] % 3 == 0  # a checkpoint, not 0
    with session_factory() as session:
        messages = session.scalars(
            select(FineTuningEvent.message).where(FineTuningEvent.job_id == local_job)
        ).all()
        steps = session.scalars(
            select(JobMetric.step)
            .where(JobMetric.job_id == local_job, JobMetric.name == "train_loss")
            .order_by(JobMetric.id)
        ).all()
        models = session.scalar(
            select(func.count()).select_from(FineTunedModel).where(FineTunedModel.job_id == job.id)
        )
    assert f"Created local job {local_job}" in messages
    assert f"Resumed local job {local_job}" in messages
    assert steps == list(range(1, TOTAL_STEPS + 1))
    assert models == 1
    assert read_status(paths)["attempt"] == 2
    adapter_config = json.loads((paths.adapter / "adapter_config.json").read_text())
    assert adapter_config["r"] == HYPERPARAMETERS["lora_r"]


def stop_after_a_checkpoint(factory: Factory, settings: Settings, job_id: str) -> None:
    """Run the job on a worker that stops once the trainer has written a checkpoint."""
    stop = threading.Event()

    def stop_then() -> None:
        wait_for(lambda: bool(checkpoint_dirs(job_paths(settings, job_id))))
        stop.set()

    in_background(stop_then)
    Worker(factory, settings, "stopping", FAST).run_once(stop)


def test_a_worker_that_stops_mid_training_kills_its_trainer_and_hands_the_job_back(
    session_factory: Factory, settings: Settings, local_job: str
) -> None:
    paths = job_paths(settings, local_job)

    stop_after_a_checkpoint(session_factory, settings, local_job)

    assert process_gone(read_status(paths)["pid"])
    assert read_status(paths)["state"] == "running"
    assert not paths.cancel_marker.exists()
    job = load(session_factory, local_job)
    assert (job.status, job.lease_owner) == (JobStatus.RUNNING, None)
    assert job.run_after is not None and job.run_after <= utcnow()


def test_a_worker_that_cannot_see_the_job_directory_fails_the_job_clearly(
    session_factory: Factory, settings: Settings, local_job: str, tmp_path: Path
) -> None:
    stop_after_a_checkpoint(session_factory, settings, local_job)
    elsewhere = settings.model_copy(update={"data_dir": tmp_path / "elsewhere"})

    Worker(session_factory, elsewhere, "elsewhere", FAST).run_once()

    job = load(session_factory, local_job)
    assert (job.status, job.error_code) == (JobStatus.FAILED, JOB_DIR_NOT_VISIBLE)
    assert str(job_paths(elsewhere, local_job).root.resolve()) in (job.error_message or "")
    assert not job_paths(elsewhere, local_job).root.exists()  # not trained again from step 0
    assert checkpoint_dirs(job_paths(settings, local_job))


def test_a_worker_that_loses_the_lease_kills_its_trainer_without_cancelling(
    session_factory: Factory, settings: Settings, local_job: str
) -> None:
    paths = job_paths(settings, local_job)

    def steal_the_lease_once_training() -> None:
        wait_for(lambda: (read_status(paths) or {}).get("pid") is not None)
        with session_factory.begin() as session:
            session.execute(
                update(FineTuningJob)
                .where(FineTuningJob.id == local_job)
                .values(lease_owner="thief", lease_expires_at=utcnow() + timedelta(minutes=1))
            )

    in_background(steal_the_lease_once_training)
    Worker(session_factory, settings, "slow", FAST).run_once()

    assert process_gone(read_status(paths)["pid"])
    assert read_status(paths)["state"] != "cancelled"
    assert not paths.cancel_marker.exists()
    assert load(session_factory, local_job).lease_owner == "thief"
