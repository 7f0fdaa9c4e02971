from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from tests.agents.test_agents import create_agent
from tests.fixtures.api import Account
from tuneforge.agents.service import (
    count_conversations_for_import,
    iter_conversations_for_import,
)
from tuneforge.db.tables.agents import Conversation
from tuneforge.errors import InvalidInput, NotFound

USER_ASSISTANT = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
]


def log_conversation(
    client: TestClient, account: Account, agent_id: str, **fields: Any
) -> dict[str, Any]:
    body = {"messages": USER_ASSISTANT, **fields}
    response = client.post(f"/agents/{agent_id}/conversations", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def agent_id(client: TestClient, account: Account) -> str:
    return create_agent(client, account)["id"]


def list_conversations(
    client: TestClient, account: Account, agent_id: str, **params: Any
) -> dict[str, Any]:
    response = client.get(
        f"/agents/{agent_id}/conversations", params=params, headers=account.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_log_conversation_keeps_messages_in_order_with_tool_calls(
    client: TestClient, account: Account, agent_id: str
) -> None:
    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup_order", "arguments": '{"id": 7}'},
    }
    messages = [
        {"role": "system", "content": "You help with orders."},
        {"role": "user", "content": "Where is order 7?", "name": "alice"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "content": '{"status": "shipped"}', "tool_call_id": "call_1"},
        {"role": "assistant", "content": "It has shipped."},
    ]

    conversation = log_conversation(
        client,
        account,
        agent_id,
        messages=messages,
        title="Order 7",
        started_at="2025-03-01T10:00:00Z",
        rating=4,
        feedback="Good",
        tags=["Orders", "orders", " Support "],
    )

    assert conversation["agent_id"] == agent_id
    assert conversation["title"] == "Order 7"
    assert conversation["started_at"].startswith("2025-03-01T10:00:00")
    assert conversation["rating"] == 4
    assert conversation["feedback"] == "Good"
    assert conversation["tags"] == ["orders", "support"]
    assert conversation["message_count"] == 5
    expected = [
        {"name": None, "tool_calls": None, "tool_call_id": None, "correction": None, **m}
        for m in messages
    ]
    assert conversation["messages"] == expected
    fetched = client.get(
        f"/agents/{agent_id}/conversations/{conversation['id']}", headers=account.headers
    )
    assert fetched.json() == conversation


def test_get_conversation_returns_many_messages_in_logged_order(
    client: TestClient, account: Account, agent_id: str
) -> None:
    messages = [
        {"role": "user" if n % 2 == 0 else "assistant", "content": f"message {n}"}
        for n in range(12)
    ]
    conversation = log_conversation(client, account, agent_id, messages=messages)

    fetched = client.get(
        f"/agents/{agent_id}/conversations/{conversation['id']}", headers=account.headers
    ).json()

    assert [m["content"] for m in fetched["messages"]] == [f"message {n}" for n in range(12)]


def test_started_at_defaults_to_now(client: TestClient, account: Account, agent_id: str) -> None:
    conversation = log_conversation(client, account, agent_id)

    assert conversation["started_at"] is not None
    assert conversation["started_at"][:10] == conversation["created_at"][:10]
    assert conversation["tags"] == []
    assert conversation["rating"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": []}, "body.messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "body.messages.0.role"),
        ({"messages": [{"role": "user"}]}, "body.messages.0"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "body.messages.0"),
        ({"messages": USER_ASSISTANT, "rating": 6}, "body.rating"),
        ({"messages": USER_ASSISTANT, "rating": 0}, "body.rating"),
        ({"messages": USER_ASSISTANT, "tags": ["x" * 101]}, "body.tags.0"),
        ({"messages": USER_ASSISTANT, "started_at": "yesterday"}, "body.started_at"),
    ],
)
def test_log_conversation_validation_errors_name_the_field(
    client: TestClient, account: Account, agent_id: str, body: dict[str, Any], field: str
) -> None:
    response = client.post(f"/agents/{agent_id}/conversations", json=body, headers=account.headers)

    assert response.status_code == 422
    assert [f["field"] for f in response.json()["fields"]] == [field]


def test_list_conversations_pages_newest_first_without_messages(
    client: TestClient, account: Account, agent_id: str
) -> None:
    ids = [
        log_conversation(client, account, agent_id, started_at=f"2025-01-0{day}T00:00:00Z")["id"]
        for day in range(1, 6)
    ]
    other_agent = create_agent(client, account)["id"]
    log_conversation(client, account, other_agent)

    first = list_conversations(client, account, agent_id, limit=3)
    second = list_conversations(client, account, agent_id, limit=3, offset=3)

    assert first["total"] == second["total"] == 5
    listed = [c["id"] for c in first["items"] + second["items"]]
    assert listed == list(reversed(ids))
    item = first["items"][0]
    assert "messages" not in item
    assert item["message_count"] == 2
    assert item["tags"] == []


def test_list_conversations_filters_by_started_at_range(
    client: TestClient, account: Account, agent_id: str
) -> None:
    for started_at in ["2025-01-01T00:00:00Z", "2025-01-02T02:00:00+02:00", "2025-01-03T00:00:00Z"]:
        log_conversation(client, account, agent_id, title=started_at[:10], started_at=started_at)

    both = list_conversations(
        client, account, agent_id, **{"from": "2025-01-02T00:00:00Z", "to": "2025-01-03T00:00:00Z"}
    )
    since = list_conversations(client, account, agent_id, **{"from": "2025-01-02T00:00:00Z"})
    until = list_conversations(client, account, agent_id, to="2025-01-02T00:00:00Z")

    assert [c["title"] for c in both["items"]] == ["2025-01-02"]
    assert both["total"] == 1
    assert [c["title"] for c in since["items"]] == ["2025-01-03", "2025-01-02"]
    assert [c["title"] for c in until["items"]] == ["2025-01-01"]


def test_list_conversations_rejects_an_inverted_range(
    client: TestClient, account: Account, agent_id: str
) -> None:
    response = client.get(
        f"/agents/{agent_id}/conversations",
        params={"from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"},
        headers=account.headers,
    )

    assert response.status_code == 422
    assert response.json()["field"] == "to"


def test_list_conversations_filters_by_min_rating(
    client: TestClient, account: Account, agent_id: str
) -> None:
    for rating in [None, 2, 4, 5]:
        log_conversation(client, account, agent_id, rating=rating, title=str(rating))

    body = list_conversations(client, account, agent_id, min_rating=4)

    assert sorted(c["rating"] for c in body["items"]) == [4, 5]
    assert body["total"] == 2


def test_list_conversations_tag_filter_matches_any_tag(
    client: TestClient, account: Account, agent_id: str
) -> None:
    log_conversation(client, account, agent_id, title="billing", tags=["billing", "urgent"])
    log_conversation(client, account, agent_id, title="refund", tags=["refund"])
    log_conversation(client, account, agent_id, title="none")

    one = list_conversations(client, account, agent_id, tag="Billing")
    either = list_conversations(client, account, agent_id, tag=["billing", "refund", "urgent"])

    assert [c["title"] for c in one["items"]] == ["billing"]
    assert one["items"][0]["tags"] == ["billing", "urgent"]
    assert sorted(c["title"] for c in either["items"]) == ["billing", "refund"]
    assert either["total"] == 2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"min_rating": 0}, "query.min_rating"),
        ({"min_rating": 6}, "query.min_rating"),
        ({"from": "not a date"}, "query.from"),
        ({"limit": 101}, "query.limit"),
    ],
)
def test_list_conversations_validation_errors_name_the_parameter(
    client: TestClient, account: Account, agent_id: str, params: dict[str, Any], field: str
) -> None:
    response = client.get(
        f"/agents/{agent_id}/conversations", params=params, headers=account.headers
    )

    assert response.status_code == 422
    assert [f["field"] for f in response.json()["fields"]] == [field]


def test_update_conversation_rates_it_after_the_fact(
    client: TestClient, account: Account, agent_id: str
) -> None:
    conversation = log_conversation(client, account, agent_id, feedback="meh", tags=["old"])
    url = f"/agents/{agent_id}/conversations/{conversation['id']}"

    rated = client.patch(url, json={"rating": 5}, headers=account.headers)
    retagged = client.patch(url, json={"tags": ["New", "other", "new"]}, headers=account.headers)
    cleared = client.patch(url, json={"rating": None, "tags": []}, headers=account.headers)

    assert rated.status_code == 200
    assert rated.json()["rating"] == 5
    assert rated.json()["feedback"] == "meh"
    assert rated.json()["tags"] == ["old"]
    assert rated.json()["updated_at"] >= conversation["updated_at"]
    assert retagged.json()["tags"] == ["new", "other"]
    assert retagged.json()["rating"] == 5
    assert cleared.json()["rating"] is None
    assert cleared.json()["tags"] == []
    assert cleared.json()["messages"] == conversation["messages"]
    assert list_conversations(client, account, agent_id, tag="new")["total"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rating": 9}, "body.rating"),
        ({"tags": None}, "body.tags"),
        ({"tags": [""]}, "body.tags.0"),
    ],
)
def test_update_conversation_validation_errors_name_the_field(
    client: TestClient, account: Account, agent_id: str, body: dict[str, Any], field: str
) -> None:
    conversation = log_conversation(client, account, agent_id)

    response = client.patch(
        f"/agents/{agent_id}/conversations/{conversation['id']}",
        json=body,
        headers=account.headers,
    )

    assert response.status_code == 422
    assert [f["field"] for f in response.json()["fields"]] == [field]


def test_delete_conversation_is_a_soft_delete_that_hides_it(
    client: TestClient, account: Account, agent_id: str, db_session: Session
) -> None:
    conversation = log_conversation(client, account, agent_id)
    url = f"/agents/{agent_id}/conversations/{conversation['id']}"

    response = client.delete(url, headers=account.headers)

    assert response.status_code == 200
    assert response.json() == {"id": conversation["id"], "deleted": True}
    assert client.get(url, headers=account.headers).status_code == 404
    assert client.patch(url, json={"rating": 1}, headers=account.headers).status_code == 404
    assert client.delete(url, headers=account.headers).status_code == 404
    assert list_conversations(client, account, agent_id)["total"] == 0
    row = db_session.get(Conversation, conversation["id"])
    assert row is not None and row.deleted_at is not None


def test_conversations_of_a_deleted_agent_are_not_found(
    client: TestClient, account: Account, agent_id: str
) -> None:
    conversation = log_conversation(client, account, agent_id)
    client.delete(f"/agents/{agent_id}", headers=account.headers)

    url = f"/agents/{agent_id}/conversations"
    assert client.get(url, headers=account.headers).status_code == 404
    assert client.get(f"{url}/{conversation['id']}", headers=account.headers).status_code == 404


@pytest.mark.parametrize(
    ("method", "suffix", "json"),
    [
        ("POST", "", {"messages": USER_ASSISTANT}),
        ("GET", "", None),
        ("GET", "/{conversation_id}", None),
        ("PATCH", "/{conversation_id}", {"rating": 1}),
        ("DELETE", "/{conversation_id}", None),
    ],
)
def test_another_organizations_conversations_are_not_found(
    client: TestClient,
    account: Account,
    other_account: Account,
    agent_id: str,
    method: str,
    suffix: str,
    json: dict[str, Any] | None,
) -> None:
    conversation = log_conversation(client, account, agent_id, rating=3)
    url = f"/agents/{agent_id}/conversations" + suffix.format(conversation_id=conversation["id"])

    response = client.request(method, url, json=json, headers=other_account.headers)

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    owner_view = list_conversations(client, account, agent_id)
    assert owner_view["total"] == 1
    assert owner_view["items"][0]["rating"] == 3


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_a_conversation_is_only_reachable_through_its_own_agent(
    client: TestClient, account: Account, agent_id: str, method: str
) -> None:
    conversation = log_conversation(client, account, agent_id)
    other_agent = create_agent(client, account)["id"]

    response = client.request(
        method,
        f"/agents/{other_agent}/conversations/{conversation['id']}",
        json={"rating": 1} if method == "PATCH" else None,
        headers=account.headers,
    )

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("POST", ""), ("GET", ""), ("GET", "/c"), ("PATCH", "/c"), ("DELETE", "/c")],
)
def test_conversation_endpoints_require_authentication(
    client: TestClient, method: str, suffix: str
) -> None:
    response = client.request(
        method, f"/agents/a/conversations{suffix}", json={"messages": USER_ASSISTANT}
    )

    assert response.status_code == 401


@contextmanager
def count_conversation_queries(session: Session) -> Iterator[list[str]]:
    """Collects the SELECTs that read conversation rows, to see the batches."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM conversations" in statement:
            statements.append(statement)

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_import_iterator_streams_everything_in_batches_with_messages(
    client: TestClient, account: Account, agent_id: str, db_session: Session
) -> None:
    # Five conversations, three sharing one started_at, so batches split inside a tie.
    started = ["2025-01-01T00:00:00Z"] * 3 + ["2025-01-02T00:00:00Z", "2025-01-03T00:00:00Z"]
    logged = [
        log_conversation(
            client,
            account,
            agent_id,
            started_at=when,
            messages=[{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": "a"}],
        )
        for n, when in enumerate(started)
    ]

    with count_conversation_queries(db_session) as queries:
        rows = list(
            iter_conversations_for_import(db_session, account.organization_id, batch_size=2)
        )

    assert sorted(c.id for c, _ in rows) == sorted(c["id"] for c in logged)
    assert len({c.id for c, _ in rows}) == 5
    assert [c.started_at for c, _ in rows] == sorted(c.started_at for c, _ in rows)
    for conversation, messages in rows:
        first_message = next(c for c in logged if c["id"] == conversation.id)["messages"][0]
        assert [m.role for m in messages] == ["user", "assistant"]
        assert messages[0].content == first_message["content"]
        assert [m.position for m in messages] == [0, 1]
    assert len(queries) == 3


def test_import_iterator_stops_after_an_exactly_full_batch(
    client: TestClient, account: Account, agent_id: str, db_session: Session
) -> None:
    for _ in range(4):
        log_conversation(client, account, agent_id)

    with count_conversation_queries(db_session) as queries:
        rows = list(
            iter_conversations_for_import(db_session, account.organization_id, batch_size=2)
        )

    assert len(rows) == 4
    assert len(queries) == 3


def test_import_iterator_and_count_apply_every_filter(
    client: TestClient,
    account: Account,
    other_account: Account,
    agent_id: str,
    db_session: Session,
) -> None:
    other_agent = create_agent(client, account)["id"]
    deleted_agent = create_agent(client, account)["id"]
    foreign_agent = create_agent(client, other_account)["id"]

    def log(agent: str, title: str, day: int, rating: int | None, tags: list[str]) -> None:
        who = other_account if agent == foreign_agent else account
        log_conversation(
            client,
            who,
            agent,
            title=title,
            started_at=f"2025-01-{day:02d}T12:00:00Z",
            rating=rating,
            tags=tags,
        )

    log(agent_id, "match", 10, 5, ["good"])
    log(agent_id, "match-other-tag", 11, 4, ["great"])
    log(agent_id, "too-early", 1, 5, ["good"])
    log(agent_id, "too-late", 20, 5, ["good"])
    log(agent_id, "low-rating", 12, 2, ["good"])
    log(agent_id, "unrated", 12, None, ["good"])
    log(agent_id, "wrong-tag", 12, 5, ["bad"])
    log(other_agent, "other-agent", 12, 5, ["good"])
    log(deleted_agent, "deleted-agent", 12, 5, ["good"])
    log(foreign_agent, "foreign", 12, 5, ["good"])
    deleted = log_conversation(client, account, agent_id, rating=5, tags=["good"])
    client.delete(f"/agents/{agent_id}/conversations/{deleted['id']}", headers=account.headers)
    client.delete(f"/agents/{deleted_agent}", headers=account.headers)

    filters: dict[str, Any] = {
        "agent_ids": [agent_id],
        "started_from": datetime(2025, 1, 5, tzinfo=UTC),
        "started_to": datetime(2025, 1, 15, tzinfo=UTC),
        "min_rating": 4,
        "tags": ["GOOD", "great"],
    }
    rows = list(
        iter_conversations_for_import(db_session, account.organization_id, batch_size=1, **filters)
    )
    count = count_conversations_for_import(db_session, account.organization_id, **filters)
    everything = count_conversations_for_import(db_session, account.organization_id)

    assert [c.title for c, _ in rows] == ["match", "match-other-tag"]
    assert count == 2
    assert everything == 8


def test_import_rejects_agents_the_organization_does_not_own(
    client: TestClient, account: Account, other_account: Account, db_session: Session
) -> None:
    foreign_agent = create_agent(client, other_account)["id"]

    with pytest.raises(NotFound):
        iter_conversations_for_import(
            db_session, account.organization_id, agent_ids=[foreign_agent]
        )
    with pytest.raises(NotFound):
        count_conversations_for_import(
            db_session, account.organization_id, agent_ids=[foreign_agent]
        )


@pytest.mark.parametrize(
    "bad", [{"batch_size": 0}, {"min_rating": 6}], ids=["batch_size", "min_rating"]
)
def test_import_rejects_bad_arguments_before_iterating(
    account: Account, db_session: Session, bad: dict[str, int]
) -> None:
    with pytest.raises(InvalidInput):
        iter_conversations_for_import(db_session, account.organization_id, **bad)
