from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.fakes.openai_server import FakeOpenAI
from tests.fixtures.api import Account
from tests.fixtures.factories import Factories
from tests.fixtures.files import Upload, chat, jsonl, valid_jsonl
from tests.fixtures.tiny_model import TINY_BASE_MODEL
from tuneforge.app import create_app
from tuneforge.config import Settings
from tuneforge.db.tables.datasets import DatasetStatus
from tuneforge.db.tables.jobs import FineTuningEvent, FineTuningJob, JobStatus
from tuneforge.jobs import service

MODEL = "gpt-4o-mini-2024-07-18"


def post_job(client: TestClient, account: Account, dataset_id: str, **fields: Any) -> Any:
    body = {"dataset_id": dataset_id, "model": MODEL, **fields}
    return client.post("/fine-tuning/jobs", json=body, headers=account.headers)


def create_job(
    client: TestClient, account: Account, dataset_id: str, **fields: Any
) -> dict[str, Any]:
    response = post_job(client, account, dataset_id, **fields)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_queues_a_pending_job_with_a_created_event(
    client: TestClient, account: Account, dataset_id: str, db_session: Session
) -> None:
    job = create_job(
        client,
        account,
        dataset_id,
        name="support v1",
        suffix="support-v1",
        seed=7,
        metadata={"team": "search"},
        hyperparameters={"n_epochs": "auto", "batch_size": 4},
    )
    assert job["status"] == "pending"
    assert job["provider"] == "openai"
    assert job["model"] == MODEL
    assert (job["name"], job["suffix"], job["seed"]) == ("support v1", "support-v1", 7)
    assert job["metadata"] == {"team": "search"}
    assert job["requested_hyperparameters"] == {
        "n_epochs": "auto",
        "batch_size": 4,
        "learning_rate_multiplier": "auto",
    }
    # 20 examples: the cookbook heuristic trains 100 // 20 = 5 epochs.
    assert job["hyperparameters"] == {
        "n_epochs": 5,
        "batch_size": 4,
        "learning_rate_multiplier": 1.0,
    }
    assert job["progress_percentage"] == 0.0
    assert job["error"] is None and job["fine_tuned_model_id"] is None
    row = db_session.get(FineTuningJob, job["id"])
    assert row is not None and row.run_after is not None
    assert row.organization_id == account.organization_id
    assert row.created_by == account.user_id
    events = db_session.scalars(
        select(FineTuningEvent).where(FineTuningEvent.job_id == job["id"])
    ).all()
    assert [e.event_type for e in events] == ["created"]
    assert events[0].data["hyperparameters"]["n_epochs"] == 5


def test_create_rejects_an_invalid_or_stale_dataset_naming_it(
    client: TestClient, account: Account, upload: Upload, factories: Factories
) -> None:
    invalid = upload(jsonl(chat("Hi", "Hello"), "{not json")).json()
    assert invalid["status"] == "invalid"
    edited = factories.dataset(account.organization_id, status=DatasetStatus.UPLOADED)
    for dataset_id, reason in ((invalid["id"], "have errors"), (edited.id, "validate it again")):
        response = post_job(client, account, dataset_id)
        assert response.status_code == 422
        assert dataset_id in response.json()["detail"] and reason in response.json()["detail"]
        assert response.json()["field"] == "dataset_id"


def test_validation_dataset_must_be_another_valid_dataset(
    client: TestClient, account: Account, upload: Upload, dataset_id: str
) -> None:
    other = upload(valid_jsonl(5), name="held out").json()["id"]
    job = create_job(client, account, dataset_id, validation_dataset_id=other)
    assert job["validation_dataset_id"] == other

    broken = upload(jsonl("nope")).json()["id"]
    for candidate in (broken, dataset_id):
        response = post_job(client, account, dataset_id, validation_dataset_id=candidate)
        assert response.status_code == 422
        assert response.json()["field"] == "validation_dataset_id"


def test_missing_openai_key_is_a_422_at_creation(
    settings: Settings, account: Account, dataset_id: str, db_session: Session
) -> None:
    unconfigured = create_app(settings.model_copy(update={"openai_api_key": None}))
    with TestClient(unconfigured) as client:
        response = post_job(client, account, dataset_id)
    assert response.status_code == 422
    assert "openai" in response.json()["detail"].lower()
    assert db_session.scalar(select(func.count()).select_from(FineTuningJob)) == 0


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"model": "gpt-5-ultra"}, "model"),
        ({"provider": "together"}, "provider"),
        ({"provider": "openai", "model": "smollm2-135m-instruct"}, "model"),
        ({"hyperparameters": {"n_epochs": 0}}, "n_epochs"),
        ({"hyperparameters": {"n_epochs": 51}}, "n_epochs"),
        ({"hyperparameters": {"n_epochs": True}}, "n_epochs"),
        ({"hyperparameters": {"batch_size": 257}}, "batch_size"),
        ({"hyperparameters": {"learning_rate_multiplier": 0}}, "learning_rate_multiplier"),
        ({"hyperparameters": {"learning_rate_multiplier": 10.5}}, "learning_rate_multiplier"),
        ({"hyperparameters": {"learning_rate_multiplier": "fast"}}, "learning_rate_multiplier"),
        ({"hyperparameters": {"warmup": 3}}, "hyperparameters.warmup"),
        ({"hyperparameters": {"lora_r": 8}}, "hyperparameters.lora_r"),
        ({"suffix": "Has Spaces"}, "suffix"),
        ({"suffix": "x" * 41}, "suffix"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
    ],
)
def test_create_rejects_bad_fields_naming_them(
    client: TestClient, account: Account, factories: Factories, fields: dict[str, Any], named: str
) -> None:
    response = post_job(client, account, factories.dataset(account.organization_id).id, **fields)
    assert response.status_code == 422, response.text
    assert named in response.json()["detail"]


@pytest.mark.usefixtures("installed_tiny_model")
def test_a_local_job_takes_the_local_trainers_hyperparameters(
    client: TestClient, account: Account, dataset_id: str
) -> None:
    local = {"n_epochs": 2, "lora_r": 8, "max_seq_length": 256, "target_modules": ["q_proj"]}
    job = create_job(client, account, dataset_id, model=TINY_BASE_MODEL, hyperparameters=local)
    assert job["provider"] == "local"
    assert job["requested_hyperparameters"] == {
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
        **local,
    }
    # "auto" by the local trainer's rules, shown before training starts: 20 short examples
    # fit one step's token budget, and the learning rate grows with the batch (to its cap).
    assert job["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": 20,
        "learning_rate_multiplier": 4.0,
    }
    assert (
        client.get(f"/fine-tuning/jobs/{job['id']}", headers=account.headers).json()[
            "hyperparameters"
        ]
        == job["hyperparameters"]
    )

    for bad, named in (({"lora_r": 0}, "lora_r"), ({"lora_rank": 8}, "lora_rank")):
        response = post_job(client, account, dataset_id, model=TINY_BASE_MODEL, hyperparameters=bad)
        assert response.status_code == 422, response.text
        assert f"hyperparameters.{named}" in response.json()["detail"]
        assert response.json()["field"] == f"hyperparameters.{named}"


def test_an_openai_job_refuses_the_local_trainers_hyperparameters(
    client: TestClient, account: Account, dataset_id: str, db_session: Session
) -> None:
    response = post_job(client, account, dataset_id, hyperparameters={"n_epochs": 2, "lora_r": 8})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "hyperparameters.lora_r"
    assert "openai provider does not take it" in response.json()["detail"]
    assert db_session.scalar(select(func.count()).select_from(FineTuningJob)) == 0


def test_a_failure_after_the_insert_leaves_nothing_behind(
    client: TestClient,
    account: Account,
    dataset_id: str,
    db_session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail_after_insert(*_: object) -> None:
        raise RuntimeError("response could not be built")

    monkeypatch.setattr(service, "describe_job", fail_after_insert)
    with pytest.raises(RuntimeError):
        post_job(client, account, dataset_id)
    assert db_session.scalar(select(func.count()).select_from(FineTuningJob)) == 0
    assert db_session.scalar(select(func.count()).select_from(FineTuningEvent)) == 0


@pytest.fixture
def listed_jobs(account: Account, factories: Factories) -> dict[str, str]:
    org = account.organization_id
    first, second = factories.dataset(org), factories.dataset(org)
    return {
        "pending": factories.job(org, dataset=first, job_metadata={"team": "search"}).id,
        "running": factories.job(
            org, dataset=first, status=JobStatus.RUNNING, provider="openai"
        ).id,
        "failed": factories.job(
            org,
            dataset=second,
            status=JobStatus.FAILED,
            job_metadata={"team": "search", "env": "prod"},
        ).id,
    }


def list_ids(client: TestClient, account: Account, params: Any) -> list[str]:
    response = client.get("/fine-tuning/jobs", params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["items"]]


def test_list_filters_by_status_provider_dataset_and_metadata(
    client: TestClient,
    account: Account,
    other_account: Account,
    listed_jobs: dict[str, str],
    factories: Factories,
) -> None:
    factories.job(other_account.organization_id)
    ids = listed_jobs
    assert set(list_ids(client, account, {})) == set(ids.values())
    assert list_ids(client, account, [("status", "running"), ("status", "failed")]) == [
        ids["failed"],
        ids["running"],
    ]
    assert list_ids(client, account, {"provider": "openai"}) == [ids["running"]]
    failed_dataset = client.get(f"/fine-tuning/jobs/{ids['failed']}", headers=account.headers)
    dataset_id = failed_dataset.json()["dataset_id"]
    assert list_ids(client, account, {"dataset_id": dataset_id}) == [ids["failed"]]
    assert set(list_ids(client, account, {"metadata[team]": "search"})) == {
        ids["pending"],
        ids["failed"],
    }
    both = {"metadata[team]": "search", "metadata[env]": "prod"}
    assert list_ids(client, account, both) == [ids["failed"]]
    assert list_ids(client, account, {"metadata[team]": "ads"}) == []


def test_list_pages_with_a_total(
    client: TestClient, account: Account, listed_jobs: dict[str, str]
) -> None:
    response = client.get(
        "/fine-tuning/jobs", params={"limit": 2, "offset": 2}, headers=account.headers
    )
    page = response.json()
    assert (page["total"], page["limit"], page["offset"], len(page["items"])) == (3, 2, 2, 1)


def test_a_page_past_the_end_still_counts_and_an_empty_org_lists_nothing(
    client: TestClient, account: Account, other_account: Account, listed_jobs: dict[str, str]
) -> None:
    past_end = client.get("/fine-tuning/jobs", params={"offset": 10}, headers=account.headers)
    assert (past_end.json()["total"], past_end.json()["items"]) == (3, [])
    empty = client.get("/fine-tuning/jobs", headers=other_account.headers).json()
    assert (empty["total"], empty["items"]) == (0, [])


def test_get_shows_progress_error_and_the_created_model(
    client: TestClient, account: Account, factories: Factories
) -> None:
    org = account.organization_id
    model = factories.model(org)
    failed = factories.job(
        org, status=JobStatus.FAILED, error_code="invalid_file", error_message="Line 3 is bad"
    )
    done = client.get(f"/fine-tuning/jobs/{model.job_id}", headers=account.headers).json()
    assert done["status"] == "succeeded"
    assert done["fine_tuned_model_id"] == model.id
    assert done["fine_tuned_model"] == model.provider_model_id
    assert done["trained_tokens"] == 12_345
    assert done["latest_metrics"] == {"train_loss": 0.42, "valid_loss": 0.5}
    assert done["progress_percentage"] == 100.0
    bad = client.get(f"/fine-tuning/jobs/{failed.id}", headers=account.headers).json()
    assert bad["error"] == {"code": "invalid_file", "message": "Line 3 is bad"}


def cancel(client: TestClient, account: Account, job_id: str) -> Any:
    return client.post(f"/fine-tuning/jobs/{job_id}/cancel", headers=account.headers)


def test_cancel_before_any_provider_job_is_immediate(
    client: TestClient, account: Account, dataset_id: str, factories: Factories
) -> None:
    pending = create_job(client, account, dataset_id)
    response = cancel(client, account, pending["id"])
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    queued = factories.job(account.organization_id, status=JobStatus.QUEUED)
    assert cancel(client, account, queued.id).json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("status", "provider_job_id"),
    [
        (JobStatus.VALIDATING_FILES, None),
        (JobStatus.QUEUED, "ftjob-1"),
        (JobStatus.RUNNING, "ftjob-1"),
    ],
)
def test_cancel_with_a_provider_job_hands_it_to_a_worker_now(
    client: TestClient,
    account: Account,
    factories: Factories,
    db_session: Session,
    status: JobStatus,
    provider_job_id: str | None,
) -> None:
    job = factories.job(
        account.organization_id, status=status, provider_job_id=provider_job_id, run_after=None
    )
    response = cancel(client, account, job.id)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelling"
    db_session.expire_all()
    row = db_session.get(FineTuningJob, job.id)
    assert row is not None and row.run_after is not None
    again = cancel(client, account, job.id)
    assert again.status_code == 200 and again.json()["status"] == "cancelling"


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_cancel_of_a_finished_job_is_a_conflict(
    client: TestClient, account: Account, factories: Factories, status: JobStatus
) -> None:
    job = factories.job(account.organization_id, status=status)
    response = cancel(client, account, job.id)
    assert response.status_code == 409
    assert response.json()["status"] == status.value


@pytest.fixture
def fake_openai_client(settings: Settings, fake_openai: FakeOpenAI) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update=fake_openai.settings_overrides))
    with TestClient(app) as client:
        yield client


def test_sync_advances_the_job_with_its_provider_now(
    fake_openai_client: TestClient, account: Account, dataset_id: str, fake_openai: FakeOpenAI
) -> None:
    job = create_job(fake_openai_client, account, dataset_id)
    response = fake_openai_client.post(
        f"/fine-tuning/jobs/{job['id']}/sync", headers=account.headers
    )
    assert response.status_code == 200, response.text
    synced = response.json()
    assert synced["status"] == "queued"
    assert synced["provider_job_id"] == fake_openai.jobs[0]["id"]


def job_urls(job_id: str) -> list[tuple[str, str]]:
    base = f"/fine-tuning/jobs/{job_id}"
    return [
        ("GET", base),
        ("POST", f"{base}/cancel"),
        ("POST", f"{base}/sync"),
        ("GET", f"{base}/events"),
        ("GET", f"{base}/metrics"),
        ("GET", f"{base}/checkpoints"),
        ("GET", f"{base}/stream"),
    ]


def test_another_organizations_job_is_not_found_everywhere(
    client: TestClient, account: Account, other_account: Account, factories: Factories
) -> None:
    job = factories.job(account.organization_id, status=JobStatus.RUNNING)
    dataset_id = job.dataset_id
    for method, url in job_urls(job.id):
        response = client.request(method, url, headers=other_account.headers)
        assert response.status_code == 404, (method, url, response.text)
    assert list_ids(client, other_account, {}) == []
    for url in ("/fine-tuning/jobs", "/fine-tuning/jobs/estimate"):
        response = client.post(
            url, json={"dataset_id": dataset_id, "model": MODEL}, headers=other_account.headers
        )
        assert response.status_code == 404, (url, response.text)


def test_every_endpoint_needs_authentication(
    client: TestClient, factories: Factories, account: Account
) -> None:
    job = factories.job(account.organization_id)
    requests = [
        *job_urls(job.id),
        ("GET", "/fine-tuning/jobs"),
        ("POST", "/fine-tuning/jobs"),
        ("POST", "/fine-tuning/jobs/estimate"),
    ]
    for method, url in requests:
        response = client.request(method, url, json={})
        assert response.status_code == 401, (method, url, response.text)
