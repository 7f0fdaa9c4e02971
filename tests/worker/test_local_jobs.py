"""Local training jobs across workers: a dead worker's job resumes, a lost lease stops training.

The trainer is a real child process on a tiny model. A worker that dies takes its trainer
with it (the kernel kills the child), which leaves exactly what ``LocalProvider.abandon``
leaves: no trainer and no handle to one. The next worker must start it again from its
last checkpoint, with one provider job and one model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from tests.providers.local.factories import build_tiny_model
from tests.worker import make_dataset, make_organization, queue_job
from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.engine import make_engine, make_session_factory
from tuneforge.jobs.tables import FineTuningEvent, FineTuningJob, JobMetric, JobStatus
from tuneforge.models.tables import FineTunedModel
from tuneforge.providers.local.jobdir import checkpoint_dirs, job_paths, read_status
from tuneforge.providers.local.provider import LocalProvider
from tuneforge.providers.local.store import register_local_model
from tuneforge.worker.monitors import Worker
from tuneforge.worker.runner import WorkerConfig

Factory = sessionmaker[Session]
FAST = WorkerConfig(in_worker_poll_seconds=0.05, idle_sleep_seconds=0.01)
HYPERPARAMETERS = {
    "n_epochs": 6,
    "batch_size": 4,
    "checkpoint_every_steps": 3,
    "lora_r": 8,
    "lora_alpha": 64,
    "learning_rate_multiplier": 10.0,
    "warmup_ratio": 0.0,
}
TOTAL_STEPS = 6 * 32 // 4


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def settings(database_url: str, tmp_path: Path, tiny_model_dir: Path) -> Settings:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        embedded_worker=False,
        worker_lease_seconds=10.0,
    )
    register_local_model(settings, tiny_model_dir, "tiny-llama")
    return settings


@pytest.fixture
def session_factory(settings: Settings) -> Iterator[Factory]:
    engine = make_engine(settings.resolved_database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def local_job(session_factory: Factory, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models train fastest on one thread
    with session_factory() as session:
        organization_id = make_organization(session)
        dataset = make_dataset(session, organization_id, train=32, validation=0, invalid=0)
        job = queue_job(
            session,
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


def run_in_thread(worker: Worker, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=worker.run_once, args=(stop,), daemon=True)
    thread.start()
    return thread


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


def test_the_next_worker_resumes_a_dead_workers_job_from_its_checkpoint(
    session_factory: Factory, settings: Settings, local_job: str
) -> None:
    paths = job_paths(settings, local_job)
    stop = threading.Event()
    first = run_in_thread(Worker(session_factory, settings, "first", FAST), stop)
    wait_for(lambda: bool(checkpoint_dirs(paths)))
    stop.set()
    first.join(30)
    LocalProvider(settings).abandon(local_job)  # what the first worker's death leaves
    assert read_status(paths)["state"] == "running"

    second = Worker(session_factory, settings, "second", FAST)
    second.run_once()

    job = load(session_factory, local_job)
    assert job.status == JobStatus.SUCCEEDED, job.error_message
    with session_factory() as session:
        messages = session.scalars(
            select(FineTuningEvent.message).where(FineTuningEvent.job_id == local_job)
        ).all()
        resumed = [m for m in messages if m.startswith("Resumed from checkpoint")]
        steps = session.scalars(
            select(JobMetric.step).where(
                JobMetric.job_id == local_job, JobMetric.name == "train_loss"
            )
        ).all()
        models = session.scalar(
            select(func.count()).select_from(FineTunedModel).where(FineTunedModel.job_id == job.id)
        )
    assert f"Resumed local job {local_job}" in messages
    assert len(resumed) == 1
    assert sorted(set(steps)) == list(range(1, TOTAL_STEPS + 1))
    assert models == 1
    assert read_status(paths)["attempt"] == 2


def test_a_worker_that_loses_the_lease_kills_its_trainer_without_cancelling(
    session_factory: Factory, settings: Settings, local_job: str
) -> None:
    paths = job_paths(settings, local_job)
    worker = run_in_thread(Worker(session_factory, settings, "slow", FAST), threading.Event())
    wait_for(lambda: (read_status(paths) or {}).get("pid") is not None)
    trainer_pid = read_status(paths)["pid"]

    with session_factory.begin() as session:
        session.execute(
            update(FineTuningJob)
            .where(FineTuningJob.id == local_job)
            .values(lease_owner="thief", lease_expires_at=utcnow() + timedelta(minutes=1))
        )
    worker.join(30)

    assert not worker.is_alive()
    wait_for(lambda: process_gone(trainer_pid), timeout=10)
    assert read_status(paths)["state"] != "cancelled"
    assert not paths.cancel_marker.exists()
    assert load(session_factory, local_job).lease_owner == "thief"
