"""A model from any checkpoint a finished job kept: made once, served like the job's own."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.fixtures.api import Account
from tests.fixtures.factories import Factories
from tests.fixtures.tiny_model import TINY_BASE_MODEL
from tuneforge.db.tables.jobs import FineTuningJob, JobCheckpoint, JobStatus
from tuneforge.jobs.progress import record_checkpoints
from tuneforge.providers.contract import ProviderCheckpoint

pytestmark = pytest.mark.usefixtures("installed_tiny_model")


def checkpoint(step: int, reference: Path) -> ProviderCheckpoint:
    return ProviderCheckpoint(
        provider_checkpoint_id=f"step-{step}",
        step=step,
        model_reference=str(reference),
        metrics={"valid_loss": 1.0 / step},
    )


@pytest.fixture
def job(
    factories: Factories, account: Account, db_session: Session, tiny_adapter_dir: Path
) -> FineTuningJob:
    """A finished local job that kept the checkpoints of steps 6 and 9 (its trainer pruned 3)."""
    job = factories.succeeded_job(account.organization_id, base_model=TINY_BASE_MODEL)
    record_checkpoints(db_session, job.id, [checkpoint(3, tiny_adapter_dir)])
    gone = tiny_adapter_dir.parent / "pruned-step-9"
    record_checkpoints(db_session, job.id, [checkpoint(6, tiny_adapter_dir), checkpoint(9, gone)])
    db_session.commit()
    return job


def make(client: TestClient, account: Account, job_id: str, step: int) -> httpx.Response:
    return client.post(
        f"/fine-tuning/jobs/{job_id}/checkpoints/{step}/model", headers=account.headers
    )


def test_the_checkpoint_list_mirrors_what_the_provider_kept(
    client: TestClient, account: Account, job: FineTuningJob
) -> None:
    listed = client.get(f"/fine-tuning/jobs/{job.id}/checkpoints", headers=account.headers)
    assert [c["step"] for c in listed.json()["data"]] == [9, 6]


def test_a_kept_checkpoint_becomes_a_model_once_and_answers(
    client: TestClient, account: Account, job: FineTuningJob, tiny_adapter_dir: Path
) -> None:
    created = make(client, account, job.id, 6)
    assert created.status_code == 201, created.text
    model = created.json()
    assert (model["checkpoint_step"], model["job_id"]) == (6, job.id)
    assert model["provider_model_id"] == str(tiny_adapter_dir)
    assert model["name"] == f"{job.fine_tuned_model_name}:ckpt-step-6"
    again = make(client, account, job.id, 6)
    assert (again.status_code, again.json()["id"]) == (200, model["id"])

    reply = client.post(
        "/v1/chat/completions",
        json={
            "model": model["id"],
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
        },
        headers=account.headers,
    )
    assert reply.status_code == 200, reply.text
    listed = client.get("/fine-tuning/models", headers=account.headers).json()["items"]
    assert model["id"] in [m["id"] for m in listed]


def test_unkept_gone_or_unfinished_checkpoints_are_refused_by_name(
    client: TestClient,
    account: Account,
    other_account: Account,
    job: FineTuningJob,
    db_session: Session,
) -> None:
    pruned = make(client, account, job.id, 3)
    assert pruned.status_code == 404 and "step 3" in pruned.json()["detail"]
    files_gone = make(client, account, job.id, 9)
    assert files_gone.status_code == 409 and "gone" in files_gone.json()["detail"]
    assert make(client, other_account, job.id, 6).status_code == 404
    assert make(client, account, job.id, -1).status_code == 422

    db_session.get(FineTuningJob, job.id).status = JobStatus.RUNNING  # type: ignore[union-attr]
    db_session.commit()
    running = make(client, account, job.id, 6)
    assert running.status_code == 409 and "running" in running.json()["detail"]
    assert db_session.query(JobCheckpoint).filter_by(job_id=job.id).count() == 2
