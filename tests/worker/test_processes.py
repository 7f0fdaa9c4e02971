"""Real ``tuneforge worker`` processes sharing one PostgreSQL queue and the fake OpenAI server.

PostgreSQL only (``postgres_url``): that is the multi-machine deployment these tests stand
for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tests.fakes.openai_server import FakeOpenAI
from tests.fixtures.factories import Factories
from tuneforge.db.tables.jobs import FineTuningJob, JobStatus
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.jobs.states import TERMINAL_STATUSES

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("postgres_url")]

Factory = sessionmaker[Session]
TUNEFORGE = Path(sys.executable).with_name("tuneforge")
LEASE_SECONDS = 2.0


@pytest.fixture
def start_worker(
    postgres_url: str,
    tmp_path: Path,
    fake_openai: FakeOpenAI,
) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Start named worker processes; whatever is still running at the end is killed."""
    processes: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "TUNEFORGE_DATABASE_URL": postgres_url,
        "TUNEFORGE_DATA_DIR": str(tmp_path / "data"),
        "TUNEFORGE_OPENAI_BASE_URL": fake_openai.base_url,
        "TUNEFORGE_OPENAI_API_KEY": fake_openai.api_key,
        "TUNEFORGE_POLLING_INTERVAL_SECONDS": "0.2",
        "TUNEFORGE_WORKER_LEASE_SECONDS": str(LEASE_SECONDS),
    }

    def start(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [str(TUNEFORGE), "worker"], env=env, cwd=tmp_path, stdout=log, stderr=log
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def queue_jobs(factory: Factory, count: int) -> list[str]:
    with factory() as session:
        rows = Factories(session)
        organization_id = rows.organization()
        dataset = rows.dataset_with_examples(organization_id, train=3, validation=1)
        return [rows.queued_job(organization_id, dataset).id for _ in range(count)]


def wait_until_finished(factory: Factory, job_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with factory() as session:
            active = session.scalar(
                select(func.count())
                .select_from(FineTuningJob)
                .where(
                    FineTuningJob.id.in_(job_ids),
                    FineTuningJob.status.not_in(TERMINAL_STATUSES),
                )
            )
        if active == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{active} of {len(job_ids)} jobs still active after {timeout}s")


def assert_each_job_succeeded_once(
    factory: Factory,
    fake: FakeOpenAI,
    job_ids: list[str],
) -> None:
    created = [request.body or {} for request in fake.requests_for("jobs.create")]
    assert sorted(body["metadata"]["tuneforge_job_id"] for body in created) == sorted(job_ids)
    with factory() as session:
        jobs = session.scalars(select(FineTuningJob).where(FineTuningJob.id.in_(job_ids))).all()
        models = session.scalars(select(FineTunedModel.job_id)).all()
    assert {job.status for job in jobs} == {JobStatus.SUCCEEDED}
    assert sorted(models) == sorted(job_ids)  # exactly one model per job
    assert len({job.provider_job_id for job in jobs}) == len(job_ids)


def test_many_workers_share_the_queue_without_duplicates(
    session_factory: Factory,
    start_worker: Callable[[str], subprocess.Popen[bytes]],
    fake_openai: FakeOpenAI,
    tmp_path: Path,
) -> None:
    job_ids = queue_jobs(session_factory, 20)
    workers = [start_worker(f"worker-{i}") for i in range(3)]

    wait_until_finished(session_factory, job_ids, timeout=120)

    assert_each_job_succeeded_once(session_factory, fake_openai, job_ids)
    uploads = [request.body or {} for request in fake_openai.requests_for("files.create")]
    assert len(uploads) == 2 * len(job_ids)  # one training and one validation file each
    logs = [(tmp_path / f"worker-{i}.log").read_text() for i in range(3)]
    assert sum("claimed job" in log for log in logs) >= 2  # the work was really shared
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait(timeout=30) == 0  # graceful shutdown


def test_a_killed_workers_job_is_finished_by_another_after_its_lease_expires(
    session_factory: Factory,
    start_worker: Callable[[str], subprocess.Popen[bytes]],
    fake_openai: FakeOpenAI,
) -> None:
    [job_id] = queue_jobs(session_factory, 1)
    # The provider job gets created, but its response never reaches the first worker.
    fake_openai.delay_next("jobs.create", 20.0)
    doomed = start_worker("doomed")
    deadline = time.monotonic() + 60
    while not fake_openai.requests_for("jobs.create"):
        assert time.monotonic() < deadline, "the first worker never created the provider job"
        time.sleep(0.05)

    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    with session_factory() as session:
        job = session.get(FineTuningJob, job_id)
        assert job is not None
        assert job.lease_owner is not None
        assert job.lease_owner.startswith("worker:")
        assert job.provider_job_id is None  # it died before recording the provider job
        assert job.status == JobStatus.VALIDATING_FILES

    start_worker("rescuer")
    wait_until_finished(session_factory, [job_id], timeout=60)

    assert_each_job_succeeded_once(session_factory, fake_openai, [job_id])
    assert len(fake_openai.jobs) == 1
    # The rescuer reused the uploaded files and found the provider job instead of creating it.
    assert len(fake_openai.requests_for("files.create")) == 2
    assert len(fake_openai.requests_for("jobs.list")) == 2
