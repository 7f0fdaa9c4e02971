from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.fixtures.api import Account
from tests.fixtures.factories import Factories
from tuneforge.db.tables.agents import Agent
from tuneforge.db.tables.datasets import DatasetFormat, FineTuningDataset
from tuneforge.db.tables.jobs import FineTuningJob
from tuneforge.db.tables.models import FineTunedModel, ModelStatus


def create_agent(client: TestClient, account: Account, **fields: Any) -> dict[str, Any]:
    body = {"name": "Support bot", "model": "smollm2-135m-instruct", **fields}
    response = client.post("/agents", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


def make_fine_tuned_model(session: Session, organization_id: str, provider: str) -> str:
    """A model row as a succeeded job leaves it (dataset and job rows are required parents)."""
    dataset = FineTuningDataset(
        organization_id=organization_id, name="support", format=DatasetFormat.JSONL
    )
    session.add(dataset)
    session.flush()
    job = FineTuningJob(
        organization_id=organization_id,
        dataset_id=dataset.id,
        provider=provider,
        base_model="SmolLM2-135M-Instruct",
    )
    session.add(job)
    session.flush()
    model = FineTunedModel(
        organization_id=organization_id,
        job_id=job.id,
        name="support-v1",
        provider=provider,
        base_model="SmolLM2-135M-Instruct",
        provider_model_id=f"ft:{job.id}",
    )
    session.add(model)
    session.commit()
    return model.id


def test_create_agent_returns_every_field(client: TestClient, account: Account) -> None:
    agent = create_agent(
        client,
        account,
        description="Answers billing questions",
        system_prompt="You are concise.",
        provider="openai",
        model="gpt-4o-mini-2024-07-18",
    )

    assert agent["name"] == "Support bot"
    assert agent["description"] == "Answers billing questions"
    assert agent["system_prompt"] == "You are concise."
    assert agent["model"] == "gpt-4o-mini-2024-07-18"
    assert agent["provider"] == "openai"
    assert agent["fine_tuned_model_id"] is None
    assert agent["created_at"] and agent["updated_at"]
    fetched = client.get(f"/agents/{agent['id']}", headers=account.headers)
    assert fetched.status_code == 200
    assert fetched.json() == agent


def test_create_agent_defaults_to_the_local_provider(client: TestClient, account: Account) -> None:
    agent = create_agent(client, account)

    assert agent["provider"] == "local"
    assert agent["description"] is None
    assert agent["system_prompt"] is None


def test_create_agent_on_a_fine_tuned_model_links_it(
    client: TestClient, account: Account, db_session: Session
) -> None:
    model_id = make_fine_tuned_model(db_session, account.organization_id, provider="openai")

    agent = create_agent(client, account, model=model_id)

    assert agent["model"] == model_id
    assert agent["fine_tuned_model_id"] == model_id
    assert agent["provider"] == "openai"


def test_an_agent_needs_a_model_its_organization_can_use(
    client: TestClient, account: Account, other_account: Account, db_session: Session
) -> None:
    foreign_model_id = make_fine_tuned_model(
        db_session, other_account.organization_id, provider="openai"
    )
    for model in (foreign_model_id, "does-not-exist"):
        response = client.post(
            "/agents", json={"name": "Bot", "model": model}, headers=account.headers
        )
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "model" and "known models" in response.json()["detail"]
    agent = create_agent(client, account)
    patched = client.patch(
        f"/agents/{agent['id']}", json={"model": foreign_model_id}, headers=account.headers
    )
    assert patched.status_code == 422
    kept = client.get(f"/agents/{agent['id']}", headers=account.headers).json()
    assert kept["model"] == "smollm2-135m-instruct"


def test_create_agent_validation_errors_name_the_fields(
    client: TestClient, account: Account
) -> None:
    response = client.post(
        "/agents",
        json={"name": "", "model": "x" * 201, "provider": "Not A Provider"},
        headers=account.headers,
    )

    assert response.status_code == 422
    fields = {f["field"] for f in response.json()["fields"]}
    assert fields == {"body.name", "body.model", "body.provider"}


def test_list_agents_pages_newest_first_with_a_total(
    client: TestClient, account: Account, other_account: Account
) -> None:
    ids = [create_agent(client, account, name=f"Agent {n}")["id"] for n in range(5)]
    create_agent(client, other_account, name="Not mine")

    first = client.get("/agents", params={"limit": 2}, headers=account.headers).json()
    rest = client.get("/agents", params={"limit": 2, "offset": 2}, headers=account.headers)
    last = client.get("/agents", params={"limit": 2, "offset": 4}, headers=account.headers)

    assert first["total"] == 5
    assert (first["limit"], first["offset"]) == (2, 0)
    listed = [a["id"] for page in (first, rest.json(), last.json()) for a in page["items"]]
    assert listed == list(reversed(ids))


def test_list_agents_default_page_size_is_20(client: TestClient, account: Account) -> None:
    for n in range(21):
        create_agent(client, account, name=f"Agent {n}")

    body = client.get("/agents", headers=account.headers).json()

    assert len(body["items"]) == 20
    assert body["total"] == 21


def test_list_agents_filters_by_a_case_insensitive_name_substring(
    client: TestClient, account: Account
) -> None:
    create_agent(client, account, name="Billing Helper")
    create_agent(client, account, name="Onboarding helper")
    create_agent(client, account, name="Sales")
    create_agent(client, account, name="100% uptime")

    helpers = client.get("/agents", params={"name": "HELPER"}, headers=account.headers).json()
    percent = client.get("/agents", params={"name": "0%"}, headers=account.headers).json()

    assert sorted(a["name"] for a in helpers["items"]) == ["Billing Helper", "Onboarding helper"]
    assert helpers["total"] == 2
    assert [a["name"] for a in percent["items"]] == ["100% uptime"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "query.limit"),
        ({"limit": 101}, "query.limit"),
        ({"offset": -1}, "query.offset"),
    ],
)
def test_list_agents_rejects_bad_paging(
    client: TestClient, account: Account, params: dict[str, int], field: str
) -> None:
    response = client.get("/agents", params=params, headers=account.headers)

    assert response.status_code == 422
    assert [f["field"] for f in response.json()["fields"]] == [field]


def test_update_agent_changes_only_the_fields_sent(client: TestClient, account: Account) -> None:
    agent = create_agent(client, account, description="old", system_prompt="Be brief.")

    response = client.patch(
        f"/agents/{agent['id']}",
        json={"name": "Renamed", "description": None},
        headers=account.headers,
    )

    assert response.status_code == 200
    updated = response.json()
    assert updated["name"] == "Renamed"
    assert updated["description"] is None
    assert updated["system_prompt"] == "Be brief."
    assert updated["model"] == agent["model"]
    assert updated["updated_at"] >= agent["updated_at"]
    assert client.get(f"/agents/{agent['id']}", headers=account.headers).json() == updated


def test_update_agent_model_links_and_unlinks_the_fine_tuned_model(
    client: TestClient, account: Account, db_session: Session
) -> None:
    model_id = make_fine_tuned_model(db_session, account.organization_id, provider="local")
    agent = create_agent(client, account)
    url = f"/agents/{agent['id']}"

    linked = client.patch(url, json={"model": model_id}, headers=account.headers).json()
    renamed = client.patch(url, json={"name": "Still linked"}, headers=account.headers).json()
    unlinked = client.patch(
        url, json={"model": "gpt-4o-mini-2024-07-18"}, headers=account.headers
    ).json()

    assert linked["fine_tuned_model_id"] == model_id
    assert renamed["fine_tuned_model_id"] == model_id
    assert unlinked["fine_tuned_model_id"] is None
    assert unlinked["model"] == "gpt-4o-mini-2024-07-18"


def test_update_agent_rejects_null_for_required_fields(
    client: TestClient, account: Account
) -> None:
    agent = create_agent(client, account)

    response = client.patch(
        f"/agents/{agent['id']}", json={"name": None, "model": None}, headers=account.headers
    )

    assert response.status_code == 422
    assert {f["field"] for f in response.json()["fields"]} == {"body.name", "body.model"}


def test_delete_agent_is_a_soft_delete_that_hides_it(
    client: TestClient, account: Account, db_session: Session
) -> None:
    agent = create_agent(client, account)
    url = f"/agents/{agent['id']}"

    response = client.delete(url, headers=account.headers)

    assert response.status_code == 200
    assert response.json() == {"id": agent["id"], "deleted": True}
    assert client.get(url, headers=account.headers).status_code == 404
    assert client.patch(url, json={"name": "x"}, headers=account.headers).status_code == 404
    assert client.delete(url, headers=account.headers).status_code == 404
    assert client.get("/agents", headers=account.headers).json()["total"] == 0
    row = db_session.get(Agent, agent["id"])
    assert row is not None and row.deleted_at is not None


@pytest.mark.parametrize(
    ("method", "json"),
    [("GET", None), ("PATCH", {"name": "stolen"}), ("DELETE", None)],
)
def test_another_organizations_agent_is_not_found(
    client: TestClient,
    account: Account,
    other_account: Account,
    method: str,
    json: dict[str, str] | None,
) -> None:
    agent = create_agent(client, account)

    response = client.request(
        method, f"/agents/{agent['id']}", json=json, headers=other_account.headers
    )

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert client.get(f"/agents/{agent['id']}", headers=account.headers).json() == agent


def test_agents_list_shows_only_the_callers_organization(
    client: TestClient, account: Account, other_account: Account
) -> None:
    create_agent(client, account)

    assert client.get("/agents", headers=other_account.headers).json()["items"] == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/agents"),
        ("GET", "/agents"),
        ("GET", "/agents/some-id"),
        ("PATCH", "/agents/some-id"),
        ("DELETE", "/agents/some-id"),
    ],
)
def test_agent_endpoints_require_authentication(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, json={"name": "x", "model": "y"})

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_an_api_key_can_manage_agents(client: TestClient, account: Account) -> None:
    key = client.post("/auth/api-keys", json={"name": "ci"}, headers=account.headers).json()["key"]

    response = client.post(
        "/agents",
        json={"name": "Bot", "model": "smollm2-135m-instruct"},
        headers={"Authorization": f"Bearer {key}"},
    )

    assert response.status_code == 201
    assert client.get("/agents", headers=account.headers).json()["total"] == 1


def test_an_archived_fine_tuned_model_cannot_serve_an_agent(
    client: TestClient, account: Account, factories: Factories
) -> None:
    archived = factories.model(organization_id=account.organization_id, status=ModelStatus.ARCHIVED)

    response = client.post(
        "/agents", json={"name": "bot", "model": archived.id}, headers=account.headers
    )

    assert response.status_code == 409
    assert response.json()["field"] == "model"
