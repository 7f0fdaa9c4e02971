"""POST /agents/{id}/chat: the agent's model answers, the exchange is logged and metered."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.fixtures.api import Account
from tests.fixtures.factories import Factories
from tests.fixtures.tiny_model import TINY_BASE_MODEL
from tuneforge.config import Settings
from tuneforge.db.tables.agents import Agent
from tuneforge.db.tables.models import FineTunedModel, ModelStatus, ModelUsage
from tuneforge.inference import decoding
from tuneforge.providers.local.jobdir import JobSpec, job_paths, write_spec

pytestmark = pytest.mark.usefixtures("installed_tiny_model")

ASK = {
    "messages": [{"role": "user", "content": "What is the ocean?"}],
    "temperature": 0,
    "max_tokens": 8,
}


@pytest.fixture
def agent(factories: Factories, account: Account, fine_tuned: FineTunedModel) -> Agent:
    return factories.agent(
        account.organization_id,
        model=fine_tuned.id,
        fine_tuned_model_id=fine_tuned.id,
        system_prompt="You answer questions about the sea.",
    )


def _usage_rows(db_session: Session) -> list[ModelUsage]:
    db_session.expire_all()
    return list(db_session.scalars(select(ModelUsage).order_by(ModelUsage.id)))


def test_chat_logs_a_conversation_and_records_usage(
    client: TestClient, account: Account, agent: Agent, db_session: Session
) -> None:
    response = client.post(
        f"/agents/{agent.id}/chat", json=ASK | {"max_tokens": 6}, headers=account.headers
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == agent.fine_tuned_model_id
    assert body["message"]["role"] == "assistant"
    assert body["message"]["content"]
    assert body["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + 6

    logged = client.get(
        f"/agents/{agent.id}/conversations/{body['conversation_id']}", headers=account.headers
    )
    assert logged.status_code == 200
    assert [(m["role"], m["content"]) for m in logged.json()["messages"]] == [
        ("user", "What is the ocean?"),
        ("assistant", body["message"]["content"]),
    ]
    assert logged.json()["title"] == "What is the ocean?"

    [row] = _usage_rows(db_session)
    assert (row.model_id, row.agent_id, row.success) == (agent.fine_tuned_model_id, agent.id, True)
    assert (row.prompt_tokens, row.completion_tokens) == (usage["prompt_tokens"], 6)
    assert row.latency_ms > 0


def test_continuing_a_conversation_uses_and_extends_its_history(
    client: TestClient, account: Account, agent: Agent
) -> None:
    first = client.post(f"/agents/{agent.id}/chat", json=ASK, headers=account.headers).json()
    follow_up = {
        "messages": [{"role": "user", "content": "And the stars?"}],
        "conversation_id": first["conversation_id"],
        "temperature": 0,
        "max_tokens": 8,
    }

    second = client.post(f"/agents/{agent.id}/chat", json=follow_up, headers=account.headers)

    assert second.status_code == 200, second.text
    assert second.json()["conversation_id"] == first["conversation_id"]
    assert second.json()["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]
    logged = client.get(
        f"/agents/{agent.id}/conversations/{first['conversation_id']}", headers=account.headers
    ).json()
    assert [m["role"] for m in logged["messages"]] == ["user", "assistant"] * 2
    assert logged["messages"][2]["content"] == "And the stars?"


def test_streamed_chat_sends_deltas_then_the_logged_response(
    client: TestClient, account: Account, agent: Agent, db_session: Session
) -> None:
    plain = client.post(f"/agents/{agent.id}/chat", json=ASK, headers=account.headers).json()

    with client.stream(
        "POST", f"/agents/{agent.id}/chat", json=ASK | {"stream": True}, headers=account.headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(response.iter_lines())

    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"delta"}
    done = events[-1][1]
    assert "".join(data["content"] for _, data in events[:-1]) == done["message"]["content"]
    assert done["message"]["content"] == plain["message"]["content"]
    assert done["conversation_id"] != plain["conversation_id"]
    logged = client.get(
        f"/agents/{agent.id}/conversations/{done['conversation_id']}", headers=account.headers
    )
    assert logged.json()["messages"][-1]["content"] == done["message"]["content"]
    assert [row.success for row in _usage_rows(db_session)] == [True, True]


def _sse_events(lines: object) -> list[tuple[str, dict[str, object]]]:
    events: list[tuple[str, dict[str, object]]] = []
    name = "message"
    for line in lines:  # type: ignore[attr-defined]
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
            name = "message"
    return events


def test_agent_on_a_base_model_chats_without_usage_rows(
    client: TestClient, account: Account, factories: Factories, db_session: Session
) -> None:
    agent = factories.agent(account.organization_id, model=TINY_BASE_MODEL, provider="local")

    response = client.post(f"/agents/{agent.id}/chat", json=ASK, headers=account.headers)

    assert response.status_code == 200, response.text
    assert response.json()["model"] == TINY_BASE_MODEL
    assert _usage_rows(db_session) == []


def test_another_organizations_agent_is_not_found(
    client: TestClient, other_account: Account, agent: Agent
) -> None:
    response = client.post(f"/agents/{agent.id}/chat", json=ASK, headers=other_account.headers)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_another_agents_conversation_is_not_found(
    client: TestClient, account: Account, agent: Agent, factories: Factories
) -> None:
    first = client.post(f"/agents/{agent.id}/chat", json=ASK, headers=account.headers).json()
    other = factories.agent(account.organization_id, model=TINY_BASE_MODEL)

    response = client.post(
        f"/agents/{other.id}/chat",
        json=ASK | {"conversation_id": first["conversation_id"]},
        headers=account.headers,
    )

    assert response.status_code == 404


def test_missing_adapter_files_fail_clearly_and_are_metered(
    client: TestClient,
    account: Account,
    agent: Agent,
    tiny_adapter_dir: Path,
    db_session: Session,
) -> None:
    for path in tiny_adapter_dir.iterdir():
        path.unlink()
    tiny_adapter_dir.rmdir()

    response = client.post(f"/agents/{agent.id}/chat", json=ASK, headers=account.headers)

    assert response.status_code == 503
    assert response.json()["error"] == "model_unavailable"
    assert "adapter files are missing" in response.json()["detail"]
    [row] = _usage_rows(db_session)
    assert (row.success, row.agent_id, row.completion_tokens) == (False, agent.id, 0)
    conversations = client.get(f"/agents/{agent.id}/conversations", headers=account.headers)
    assert conversations.json()["total"] == 0


def test_agent_with_an_archived_model_is_a_conflict(
    client: TestClient, account: Account, agent: Agent, db_session: Session
) -> None:
    model = db_session.get(FineTunedModel, agent.fine_tuned_model_id)
    assert model is not None
    model.status = ModelStatus.ARCHIVED
    db_session.commit()

    response = client.post(f"/agents/{agent.id}/chat", json=ASK, headers=account.headers)

    assert response.status_code == 409
    assert "archived" in response.json()["detail"]


def test_chat_requires_credentials(client: TestClient, agent: Agent) -> None:
    assert client.post(f"/agents/{agent.id}/chat", json=ASK).status_code == 401


def test_invalid_sampling_values_are_rejected(
    client: TestClient, account: Account, agent: Agent
) -> None:
    response = client.post(
        f"/agents/{agent.id}/chat", json=ASK | {"temperature": 5}, headers=account.headers
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "body.temperature"


@pytest.mark.parametrize("with_job_spec", [True, False], ids=["job-spec", "default-place"])
def test_adapter_is_found_from_the_trainers_model_name(
    with_job_spec: bool,
    client: TestClient,
    account: Account,
    agent: Agent,
    factories: Factories,
    settings: Settings,
    tiny_chat_models: Path,
    installed_tiny_model: Path,
) -> None:
    job = factories.succeeded_job(account.organization_id, base_model=TINY_BASE_MODEL)
    paths = job_paths(settings, job.id)
    shutil.copytree(tiny_chat_models / "adapter", paths.adapter)
    spec = JobSpec(
        job_id=job.id,
        base_model=TINY_BASE_MODEL,
        base_model_path=str(installed_tiny_model),
        hyperparameters={},
        seed=0,
        has_validation=False,
    )
    if with_job_spec:
        write_spec(paths, spec)
    model = factories.model(
        account.organization_id, job=job, provider_model_id=spec.fine_tuned_model
    )
    by_name = factories.agent(
        account.organization_id,
        model=model.id,
        fine_tuned_model_id=model.id,
        system_prompt=agent.system_prompt,
    )

    reply = client.post(f"/agents/{by_name.id}/chat", json=ASK, headers=account.headers)
    by_path = client.post(f"/agents/{agent.id}/chat", json=ASK, headers=account.headers)

    assert reply.status_code == 200, reply.text
    assert reply.json()["message"] == by_path.json()["message"]


def test_a_generation_failing_mid_stream_ends_with_an_error_event(
    client: TestClient,
    account: Account,
    agent: Agent,
    db_session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the GPU caught fire")

    monkeypatch.setattr(decoding.DecodeBatch, "_forward", fail)

    with client.stream(
        "POST", f"/agents/{agent.id}/chat", json=ASK | {"stream": True}, headers=account.headers
    ) as response:
        assert response.status_code == 200
        events = _sse_events(response.iter_lines())

    assert events == [
        (
            "error",
            {
                "error": "generation_failed",
                "detail": "The model failed while generating; see the server log",
            },
        )
    ]
    assert [row.success for row in _usage_rows(db_session)] == [False]
    conversations = client.get(f"/agents/{agent.id}/conversations", headers=account.headers)
    assert conversations.json()["total"] == 0


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "tide_at",
            "description": "The tide at a harbour.",
            "parameters": {"type": "object", "properties": {"harbour": {"type": "string"}}},
        },
    }
]


def test_an_agents_tools_are_offered_and_its_tool_turns_logged_and_imported(
    client: TestClient, account: Account, fine_tuned: FineTunedModel
) -> None:
    created = client.post(
        "/agents",
        json={"name": "Harbour", "model": fine_tuned.id, "tools": TOOLS},
        headers=account.headers,
    )
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["tools"] == TOOLS
    call = {
        "id": "call_7",
        "type": "function",
        "function": {"name": "tide_at", "arguments": '{"harbour": "Brest"}'},
    }
    turn = [
        {"role": "user", "content": "Tide in Brest?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_7", "content": "High tide at 14:05."},
    ]

    reply = client.post(
        f"/agents/{agent['id']}/chat", json=ASK | {"messages": turn}, headers=account.headers
    )

    assert reply.status_code == 200, reply.text
    body = reply.json()
    logged = client.get(
        f"/agents/{agent['id']}/conversations/{body['conversation_id']}", headers=account.headers
    ).json()["messages"]
    assert [m["role"] for m in logged] == ["user", "assistant", "tool", "assistant"]
    assert logged[1]["tool_calls"] == [call] and logged[2]["tool_call_id"] == "call_7"
    imported = client.post(
        "/fine-tuning/datasets/import",
        json={"name": "harbour", "agent_ids": [agent["id"]]},
        headers=account.headers,
    )
    assert imported.status_code == 201, imported.text
    rows = client.get(
        f"/fine-tuning/datasets/{imported.json()['id']}/examples", headers=account.headers
    ).json()["items"]
    assert rows[0]["tools"] == TOOLS
    assert rows[0]["messages"][1]["tool_calls"] == [call]
    assert (
        client.patch(
            f"/agents/{agent['id']}", json={"tools": None}, headers=account.headers
        ).json()["tools"]
        is None
    )
