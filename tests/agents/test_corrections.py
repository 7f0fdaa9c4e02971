"""Corrections of logged replies, and their import as preference pairs."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.fixtures.api import Account

DATASETS = "/fine-tuning/datasets"
PROMPT = "You are the Tuna Travel support agent."
TURNS = [
    {"role": "user", "content": "Where is my refund?"},
    {"role": "assistant", "content": "Dunno."},
    {"role": "user", "content": "Please check booking AB1234."},
    {"role": "assistant", "content": "It is on its way."},
]
BETTER = "Happy to help! The refund for AB1234 reaches your card in 5 days. — Tuna Support"


def _agent(client: TestClient, account: Account) -> str:
    body = {"name": "Support", "system_prompt": PROMPT, "model": "gpt-4o-mini-2024-07-18"}
    response = client.post("/agents", headers=account.headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _log(client: TestClient, account: Account, agent_id: str, **fields: Any) -> str:
    response = client.post(
        f"/agents/{agent_id}/conversations",
        headers=account.headers,
        json={"messages": TURNS, **fields},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _correction_url(agent_id: str, conversation_id: str, index: int) -> str:
    return f"/agents/{agent_id}/conversations/{conversation_id}/messages/{index}/correction"


def test_a_reply_can_be_corrected_and_the_correction_removed(
    client: TestClient, account: Account
) -> None:
    agent_id = _agent(client, account)
    conversation_id = _log(client, account, agent_id, rating=1)
    url = _correction_url(agent_id, conversation_id, 1)

    corrected = client.put(url, headers=account.headers, json={"content": BETTER})

    assert corrected.status_code == 200, corrected.text
    messages = corrected.json()["messages"]
    assert messages[1]["correction"] == {"role": "assistant", "content": BETTER}
    assert messages[1]["content"] == "Dunno."  # the log itself is kept as it happened
    assert messages[3]["correction"] is None
    removed = client.delete(url, headers=account.headers)
    assert removed.json()["messages"][1]["correction"] is None


def test_only_an_existing_assistant_reply_takes_a_correction(
    client: TestClient, account: Account, other_account: Account
) -> None:
    agent_id = _agent(client, account)
    conversation_id = _log(client, account, agent_id)
    body = {"content": BETTER}

    user_turn = client.put(
        _correction_url(agent_id, conversation_id, 0), headers=account.headers, json=body
    )
    past_the_end = client.put(
        _correction_url(agent_id, conversation_id, 9), headers=account.headers, json=body
    )
    empty = client.put(
        _correction_url(agent_id, conversation_id, 1), headers=account.headers, json={}
    )
    foreign = client.put(
        _correction_url(agent_id, conversation_id, 1), headers=other_account.headers, json=body
    )

    assert user_turn.status_code == 422 and user_turn.json()["field"] == "index"
    assert past_the_end.status_code == 404 and past_the_end.json()["field"] == "index"
    assert empty.status_code == 422 and "content or tool_calls" in empty.text
    assert foreign.status_code == 404
    on_user = client.post(
        f"/agents/{agent_id}/conversations",
        headers=account.headers,
        json={"messages": [{"role": "user", "content": "Hi", "correction": body}]},
    )
    assert on_user.status_code == 422 and "only assistant messages" in on_user.text


def test_low_rated_corrected_replies_import_as_preference_pairs(
    client: TestClient, account: Account
) -> None:
    agent_id = _agent(client, account)
    low = _log(client, account, agent_id, rating=1)
    client.put(_correction_url(agent_id, low, 1), headers=account.headers, json={"content": BETTER})
    call = {"id": "c1", "type": "function", "function": {"name": "refund", "arguments": "{}"}}
    client.put(
        _correction_url(agent_id, low, 3), headers=account.headers, json={"tool_calls": [call]}
    )
    logged_corrected = [
        {**TURNS[0]},
        {**TURNS[1], "correction": {"content": "Let me check that for you."}},
    ]
    client.post(
        f"/agents/{agent_id}/conversations",
        headers=account.headers,
        json={"messages": logged_corrected, "rating": 2},
    )
    high = _log(client, account, agent_id, rating=5)  # corrected, but rated well
    client.put(_correction_url(agent_id, high, 1), headers=account.headers, json={"content": "x"})
    _log(client, account, agent_id, rating=1)  # rated low, nothing corrected

    preview = client.post(
        f"{DATASETS}/import/preview", headers=account.headers, json={"kind": "preference"}
    )
    assert preview.json() == {"conversations": 2}
    response = client.post(
        f"{DATASETS}/import",
        headers=account.headers,
        json={"kind": "preference", "name": "corrections"},
    )

    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["kind"] == "preference" and dataset["status"] == "valid"
    assert dataset["total_examples"] == 3
    rows = client.get(f"{DATASETS}/{dataset['id']}/examples", headers=account.headers).json()
    first, second, third = rows["items"]
    assert first["messages"] == [{"role": "system", "content": PROMPT}, TURNS[0]]
    assert first["preferred_output"] == [{"role": "assistant", "content": BETTER}]
    assert first["non_preferred_output"] == [{"role": "assistant", "content": "Dunno."}]
    # The later pair's prompt is the conversation as it happened, logged reply included.
    assert second["messages"][1:] == TURNS[:3]
    assert second["preferred_output"] == [{"role": "assistant", "tool_calls": [call]}]
    assert third["preferred_output"][0]["content"] == "Let me check that for you."
    assert {row["source_conversation_id"] for row in (first, second)} == {low}


def test_preference_and_chat_imports_do_not_mix(client: TestClient, account: Account) -> None:
    agent_id = _agent(client, account)
    _log(client, account, agent_id, rating=5)
    chats = client.post(
        f"{DATASETS}/import", headers=account.headers, json={"name": "chats"}
    ).json()

    into_chats = client.post(
        f"{DATASETS}/import",
        headers=account.headers,
        json={"kind": "preference", "dataset_id": chats["id"]},
    )
    nothing = client.post(
        f"{DATASETS}/import",
        headers=account.headers,
        json={"kind": "preference", "name": "none yet"},
    )

    assert into_chats.status_code == 422 and into_chats.json()["field"] == "kind"
    assert nothing.status_code == 422 and "corrected reply" in nothing.text
