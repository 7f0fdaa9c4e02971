"""Importing logged agent conversations (created through the /agents API) as datasets."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tests.fixtures.files import Upload, valid_jsonl

BASE = "/fine-tuning/datasets"
PROMPT = "You are the Acme support agent."


def _agent(client: TestClient, account: Account, name: str, prompt: str | None = PROMPT) -> str:
    body = {"name": name, "system_prompt": prompt, "model": "gpt-4o-mini-2024-07-18"}
    response = client.post("/agents", headers=account.headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _conversation(
    client: TestClient, account: Account, agent_id: str, messages: list[dict], **fields: Any
) -> str:
    response = client.post(
        f"/agents/{agent_id}/conversations",
        headers=account.headers,
        json={"messages": messages, **fields},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    messages = []
    for user, assistant in pairs:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages


def _rows(client: TestClient, account: Account, dataset_id: str) -> list[dict]:
    url = f"{BASE}/{dataset_id}/examples"
    return client.get(url, headers=account.headers, params={"limit": 500}).json()["items"]


def _import(client: TestClient, account: Account, **body: Any) -> Any:
    return client.post(f"{BASE}/import", headers=account.headers, json=body)


def test_import_with_filters_prompts_and_last_turn_weights(
    client: TestClient, account: Account
) -> None:
    support = _agent(client, account, "Support")
    sales = _agent(client, account, "Sales")
    two_turns = _turns(("Hi", "Hello!"), ("Refund?", "Done."))
    good = _conversation(
        client,
        account,
        support,
        two_turns,
        rating=5,
        tags=["billing"],
        started_at="2025-03-01T10:00:00Z",
    )
    with_system = [{"role": "system", "content": "Custom prompt."}, *_turns(("Q", "A"))]
    own_prompt = _conversation(
        client,
        account,
        support,
        with_system,
        rating=4,
        tags=["Billing"],
        started_at="2025-03-02T10:00:00Z",
    )
    _conversation(client, account, support, two_turns, rating=2, tags=["billing"])
    _conversation(client, account, support, two_turns, rating=5, tags=["other"])
    _conversation(client, account, sales, two_turns, rating=5, tags=["billing"])
    _conversation(
        client,
        account,
        support,
        two_turns,
        rating=5,
        tags=["billing"],
        started_at="2025-04-01T00:00:00Z",
    )
    filters = {
        "agent_ids": [support],
        "min_rating": 4,
        "tags": ["billing"],
        "from": "2025-03-01T00:00:00Z",
        "to": "2025-04-01T00:00:00Z",
    }
    preview = client.post(f"{BASE}/import/preview", headers=account.headers, json=filters)
    assert preview.status_code == 200, preview.text
    assert preview.json() == {"conversations": 2}

    response = _import(client, account, name="From logs", assistant_turns="last", **filters)
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert (dataset["format"], dataset["status"], dataset["total_examples"]) == (
        "conversations",
        "valid",
        2,
    )
    rows = _rows(client, account, dataset["id"])
    assert [r["line_number"] for r in rows] == [1, 2]
    assert [r["source_conversation_id"] for r in rows] == [good, own_prompt]
    assert rows[0]["messages"] == [
        {"role": "system", "content": PROMPT},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "weight": 0},
        {"role": "user", "content": "Refund?"},
        {"role": "assistant", "content": "Done."},
    ]
    assert rows[1]["messages"][0] == {"role": "system", "content": "Custom prompt."}
    assert all(r["assistant_token_count"] > 0 for r in rows)
    assert rows[0]["assistant_token_count"] < rows[0]["token_count"]


def test_import_all_turns_without_system_prompt(client: TestClient, account: Account) -> None:
    agent = _agent(client, account, "Support")
    _conversation(client, account, agent, _turns(("Hi", "Hello!"), ("Bye", "See you.")))
    response = _import(
        client, account, name="Raw", include_system_prompt=False, assistant_turns="all"
    )
    assert response.status_code == 201, response.text
    [row] = _rows(client, account, response.json()["id"])
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
    assert all("weight" not in m for m in row["messages"])
    warnings = response.json()["validation_report"]["warning_counts"]
    assert warnings == {"missing_system_message": 1}


def test_import_appends_to_an_existing_dataset_and_revalidates_it(
    client: TestClient, account: Account, upload: Upload
) -> None:
    dataset = upload(valid_jsonl(3), validation_fraction=0.5, split_seed=1).json()
    agent = _agent(client, account, "Support")
    conversation = _conversation(client, account, agent, _turns(("Hi", "Hello!")))
    response = _import(client, account, dataset_id=dataset["id"], agent_ids=[agent])
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["id"], body["format"], body["total_examples"]) == (dataset["id"], "jsonl", 4)
    assert body["validation_report"]["total_examples"] == 4
    rows = _rows(client, account, dataset["id"])
    assert [(r["line_number"], r["source_conversation_id"]) for r in rows] == [
        (1, None),
        (2, None),
        (3, None),
        (4, conversation),
    ]


def test_conversations_that_cannot_train_show_in_the_report(
    client: TestClient, account: Account
) -> None:
    agent = _agent(client, account, "Support")
    _conversation(client, account, agent, [{"role": "user", "content": "Anyone there?"}])
    response = _import(client, account, name="Unanswered")
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "invalid"
    [error] = response.json()["validation_report"]["errors"]
    assert (error["line"], error["code"]) == (1, "example_missing_assistant_message")


def test_import_input_errors(client: TestClient, account: Account, other_account: Account) -> None:
    agent = _agent(client, account, "Support")
    foreign_agent = _agent(client, other_account, "Theirs")
    _conversation(client, account, agent, _turns(("Hi", "Hello!")))
    assert _import(client, account, name="x", agent_ids=[foreign_agent]).status_code == 404
    assert _import(client, account, name="x", min_rating=5).status_code == 422
    assert _import(client, account).status_code == 422
    assert _import(client, account, name="x", dataset_id="abc").status_code == 422
    assert _import(client, account, name="x", model="gpt-99").status_code == 422
    assert _import(client, account, name="x", assistant_turns="first").status_code == 422
    listing = client.get(BASE, headers=account.headers).json()
    assert listing["total"] == 0
    preview = client.post(
        f"{BASE}/import/preview", headers=account.headers, json={"agent_ids": [foreign_agent]}
    )
    assert preview.status_code == 404
