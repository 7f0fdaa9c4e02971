from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.fixtures.api import Account
from tests.fixtures.factories import Factories
from tuneforge.db.tables.agents import Agent
from tuneforge.db.tables.jobs import FineTuningJob, JobStatus
from tuneforge.db.tables.models import FineTunedModel, ModelStatus
from tuneforge.errors import Conflict
from tuneforge.models import repository
from tuneforge.models.service import create_model_from_job

MODELS = "/fine-tuning/models"


def create_agent(client: TestClient, account: Account, name: str = "Support bot") -> dict[str, Any]:
    response = client.post(
        "/agents", json={"name": name, "model": "smollm2-135m-instruct"}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def get_agent(client: TestClient, account: Account, agent_id: str) -> dict[str, Any]:
    response = client.get(f"/agents/{agent_id}", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def model_count(session: Session, job_id: str) -> int:
    stmt = select(func.count()).select_from(FineTunedModel).where(FineTunedModel.job_id == job_id)
    return session.scalar(stmt) or 0


def test_create_model_from_job_creates_the_row_once(
    db_session: Session, factories: Factories, account: Account
) -> None:
    job = factories.succeeded_job(account.organization_id, provider="openai")

    first = create_model_from_job(db_session, job)
    db_session.commit()
    second = create_model_from_job(db_session, job)

    assert second.id == first.id
    assert model_count(db_session, job.id) == 1
    assert first.name == first.provider_model_id == job.fine_tuned_model_name
    assert (first.provider, first.base_model) == ("openai", job.base_model)
    assert (first.dataset_id, first.status) == (job.dataset_id, ModelStatus.ACTIVE)
    assert first.metrics_summary == {
        "trained_tokens": 12_345,
        "metrics": {"train_loss": 0.42, "valid_loss": 0.5},
    }


def test_create_model_from_job_returns_the_row_a_concurrent_worker_inserted(
    app: FastAPI,
    db_session: Session,
    factories: Factories,
    account: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = factories.succeeded_job(account.organization_id)
    winner = factories.model(account.organization_id, job=job)
    # This worker checked before the winner committed, so its check saw nothing.
    real_find = repository.find_model_for_job
    calls: list[str] = []

    def find_after_the_race(session: Session, organization_id: str, job_id: str) -> Any:
        calls.append(job_id)
        return None if len(calls) == 1 else real_find(session, organization_id, job_id)

    monkeypatch.setattr(repository, "find_model_for_job", find_after_the_race)
    with app.state.session_factory() as session:
        # Work this transaction did before must survive the lost race.
        session.add(
            Agent(organization_id=account.organization_id, name="kept", model="m", provider="local")
        )
        session.flush()
        model = create_model_from_job(session, session.get_one(FineTuningJob, job.id))
        session.commit()

    assert model.id == winner.id
    assert model_count(db_session, job.id) == 1
    assert db_session.scalar(select(Agent).where(Agent.name == "kept")) is not None


def test_concurrent_workers_create_one_model(
    app: FastAPI, factories: Factories, db_session: Session, account: Account
) -> None:
    job = factories.succeeded_job(account.organization_id)
    results: dict[str, str] = {}

    def second_worker() -> None:
        with app.state.session_factory() as session:
            results["second"] = create_model_from_job(
                session, session.get_one(FineTuningJob, job.id)
            ).id
            session.commit()

    with app.state.session_factory() as first:
        results["first"] = create_model_from_job(first, first.get_one(FineTuningJob, job.id)).id
        thread = threading.Thread(target=second_worker)
        thread.start()
        time.sleep(0.3)  # the second worker's insert now waits on the first's transaction
        first.commit()
    thread.join(timeout=60)

    assert results["first"] == results["second"]
    assert model_count(db_session, job.id) == 1


def test_create_model_from_job_refuses_unfinished_jobs(
    db_session: Session, factories: Factories, account: Account
) -> None:
    running = factories.job(account.organization_id, status=JobStatus.RUNNING)
    nameless = factories.job(account.organization_id, status=JobStatus.SUCCEEDED)

    for job in (running, nameless):
        with pytest.raises(Conflict):
            create_model_from_job(db_session, job)


def test_list_get_and_update_models(
    client: TestClient, factories: Factories, account: Account
) -> None:
    org = account.organization_id
    older = factories.model(org, base_model="SmolLM2-135M-Instruct")
    archived = factories.model(org, status=ModelStatus.ARCHIVED, base_model="other-base")
    deployed = factories.model(org)
    factories.model(org, deleted_at=older.created_at)
    agent = create_agent(client, account)
    assert client.post(
        f"{MODELS}/{deployed.id}/deploy", json={"agent_id": agent["id"]}, headers=account.headers
    ).is_success

    def listed(**params: Any) -> list[str]:
        response = client.get(MODELS, params=params, headers=account.headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert listed() == [deployed.id, archived.id, older.id]
    assert listed(status="archived") == [archived.id]
    assert listed(status="active") == [deployed.id, older.id]
    assert listed(deployed="true") == [deployed.id]
    assert listed(deployed="false") == [archived.id, older.id]
    assert listed(base_model="other-base") == [archived.id]
    page = client.get(MODELS, params={"limit": 1, "offset": 1}, headers=account.headers).json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 1, 1)
    assert [item["id"] for item in page["items"]] == [archived.id]

    body = client.get(f"{MODELS}/{deployed.id}", headers=account.headers).json()
    assert body["deployed_agents"] == [{"id": agent["id"], "name": "Support bot"}]
    assert body["job_id"] == deployed.job_id
    assert body["metrics_summary"]["trained_tokens"] == 12_345

    response = client.patch(
        f"{MODELS}/{older.id}",
        json={"name": "support-v1", "description": "First try"},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["description"]) == ("support-v1", "First try")
    cleared = client.patch(
        f"{MODELS}/{older.id}", json={"description": None}, headers=account.headers
    ).json()
    assert (cleared["name"], cleared["description"]) == ("support-v1", None)
    assert (
        client.patch(f"{MODELS}/{older.id}", json={"name": None}, headers=account.headers)
    ).status_code == 422


def test_deploy_and_undeploy_one_agent_and_then_all(
    client: TestClient, factories: Factories, account: Account
) -> None:
    model = factories.model(account.organization_id, provider="openai", base_model="gpt-4o-mini")
    first, second = create_agent(client, account, "First"), create_agent(client, account, "Second")

    for agent in (first, second):
        response = client.post(
            f"{MODELS}/{model.id}/deploy", json={"agent_id": agent["id"]}, headers=account.headers
        )
        assert response.status_code == 200, response.text
    assert [a["name"] for a in response.json()["deployed_agents"]] == ["First", "Second"]
    deployed_agent = get_agent(client, account, first["id"])
    assert deployed_agent["model"] == model.id
    assert deployed_agent["fine_tuned_model_id"] == model.id
    assert deployed_agent["provider"] == "openai"

    response = client.post(
        f"{MODELS}/{model.id}/undeploy", json={"agent_id": first["id"]}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    assert [a["name"] for a in response.json()["deployed_agents"]] == ["Second"]
    undeployed = get_agent(client, account, first["id"])
    assert (undeployed["model"], undeployed["fine_tuned_model_id"]) == ("gpt-4o-mini", None)
    again = client.post(
        f"{MODELS}/{model.id}/undeploy", json={"agent_id": first["id"]}, headers=account.headers
    )
    assert again.status_code == 409

    response = client.post(f"{MODELS}/{model.id}/undeploy", headers=account.headers)
    assert response.status_code == 200, response.text
    assert response.json()["deployed_agents"] == []
    assert get_agent(client, account, second["id"])["fine_tuned_model_id"] is None


def test_delete_is_refused_while_deployed_then_allowed(
    client: TestClient, factories: Factories, account: Account
) -> None:
    model = factories.model(account.organization_id)
    agent = create_agent(client, account, "Billing bot")
    client.post(
        f"{MODELS}/{model.id}/deploy", json={"agent_id": agent["id"]}, headers=account.headers
    )

    refused = client.delete(f"{MODELS}/{model.id}", headers=account.headers)
    assert refused.status_code == 409
    assert refused.json()["error"] == "conflict"
    assert "Billing bot" in refused.json()["detail"]
    assert refused.json()["agents"] == [{"id": agent["id"], "name": "Billing bot"}]

    client.post(f"{MODELS}/{model.id}/undeploy", headers=account.headers)
    deleted = client.delete(f"{MODELS}/{model.id}", headers=account.headers)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": model.id, "deleted": True}
    assert client.get(f"{MODELS}/{model.id}", headers=account.headers).status_code == 404
    assert client.get(MODELS, headers=account.headers).json()["total"] == 0


def test_archive_blocks_deploy_until_unarchived(
    client: TestClient, factories: Factories, account: Account
) -> None:
    model = factories.model(account.organization_id)
    agent = create_agent(client, account)
    deploy = {"json": {"agent_id": agent["id"]}, "headers": account.headers}

    client.post(f"{MODELS}/{model.id}/deploy", **deploy)
    assert client.post(f"{MODELS}/{model.id}/archive", headers=account.headers).status_code == 409
    client.post(f"{MODELS}/{model.id}/undeploy", headers=account.headers)

    archived = client.post(f"{MODELS}/{model.id}/archive", headers=account.headers)
    assert archived.status_code == 200, archived.text
    assert archived.json()["status"] == "archived"
    assert client.post(f"{MODELS}/{model.id}/deploy", **deploy).status_code == 409

    unarchived = client.post(f"{MODELS}/{model.id}/unarchive", headers=account.headers)
    assert unarchived.json()["status"] == "active"
    assert client.post(f"{MODELS}/{model.id}/deploy", **deploy).status_code == 200


def test_another_organizations_models_and_agents_are_not_found(
    client: TestClient, factories: Factories, account: Account, other_account: Account
) -> None:
    theirs = factories.model(other_account.organization_id)
    mine = factories.model(account.organization_id)
    my_agent = create_agent(client, account)
    their_agent = create_agent(client, other_account)
    h = account.headers
    base = f"{MODELS}/{theirs.id}"

    responses = [
        client.get(base, headers=h),
        client.patch(base, json={"name": "mine now"}, headers=h),
        client.post(f"{base}/deploy", json={"agent_id": my_agent["id"]}, headers=h),
        client.post(f"{base}/undeploy", headers=h),
        client.post(f"{base}/archive", headers=h),
        client.post(f"{base}/unarchive", headers=h),
        client.delete(base, headers=h),
        client.get(f"{base}/usage", headers=h),
        client.post(f"{MODELS}/{mine.id}/deploy", json={"agent_id": their_agent["id"]}, headers=h),
        client.post(
            f"{MODELS}/{mine.id}/undeploy", json={"agent_id": their_agent["id"]}, headers=h
        ),
    ]

    assert [r.status_code for r in responses] == [404] * len(responses)
    assert "Agent" in responses[-1].json()["detail"]
    assert [m["id"] for m in client.get(MODELS, headers=h).json()["items"]] == [mine.id]
    assert get_agent(client, other_account, their_agent["id"])["fine_tuned_model_id"] is None


def test_models_endpoints_need_authentication(client: TestClient) -> None:
    assert client.get(MODELS).status_code == 401
    assert client.get("/fine-tuning/stats").status_code == 401
