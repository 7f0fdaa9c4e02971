from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, event, select, update
from sqlalchemy.orm import Session

from tests.fixtures.api import Account, register
from tuneforge.app import create_app
from tuneforge.auth.cache import PrincipalCache, credential_key
from tuneforge.auth.security import unknown_user_hash
from tuneforge.auth.service import LAST_USED_RESOLUTION
from tuneforge.config import Settings
from tuneforge.db.tables.auth import ApiKey, LoginThrottle, Membership, User


def test_register_returns_a_token_that_identifies_the_user(
    client: TestClient, account: Account
) -> None:
    response = client.get("/auth/me", headers=account.headers)

    assert response.status_code == 200
    body = response.json()
    assert body["user"]["email"] == account.email
    assert body["organization"]["id"] == account.organization_id
    assert body["role"] == "owner"


def test_register_rejects_a_taken_email(client: TestClient, account: Account) -> None:
    response = client.post(
        "/auth/register",
        json={
            "email": account.email.upper(),
            "password": "another password",
            "name": "Copy",
            "organization_name": "Copy Org",
        },
    )

    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    # Neither the address nor the existence of an account is echoed back.
    assert response.json()["detail"] == "This email cannot be registered"


def test_register_validation_error_names_the_field(client: TestClient) -> None:
    response = client.post(
        "/auth/register",
        json={"email": "not-an-email", "password": "short", "name": "x", "organization_name": "y"},
    )

    assert response.status_code == 422
    fields = {f["field"] for f in response.json()["fields"]}
    assert {"body.email", "body.password"} <= fields


def test_login_issues_a_bearer_token(client: TestClient, account: Account) -> None:
    response = client.post(
        "/auth/login", json={"email": account.email, "password": account.password}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] > 0
    me = client.get("/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json()["user"]["id"] == account.user_id


def test_login_with_a_wrong_password_is_401(client: TestClient, account: Account) -> None:
    response = client.post("/auth/login", json={"email": account.email, "password": "wrong pass"})

    assert response.status_code == 401
    assert response.json()["detail"] == "Email or password is incorrect"


def test_missing_token_is_401(client: TestClient) -> None:
    assert client.get("/auth/me").status_code == 401


def test_expired_token_is_401(client: TestClient, account: Account, settings: Settings) -> None:
    past = datetime.now(UTC) - timedelta(hours=2)
    token = jwt.encode(
        {"sub": account.user_id, "org": account.organization_id, "iat": past, "exp": past},
        settings.signing_key(),
        algorithm="HS256",
    )

    response = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_tampered_token_is_401(client: TestClient, account: Account) -> None:
    header, payload, signature = account.token.split(".")
    forged_signature = ("A" if signature[0] != "A" else "B") + signature[1:]

    response = client.get(
        "/auth/me", headers={"Authorization": f"Bearer {header}.{payload}.{forged_signature}"}
    )

    assert response.status_code == 401


def test_token_signed_with_another_key_is_401(client: TestClient, account: Account) -> None:
    token = jwt.encode(
        {
            "sub": account.user_id,
            "org": account.organization_id,
            "exp": datetime.now(UTC) + timedelta(hours=1),
        },
        "some-other-signing-key-of-sufficient-length",
        algorithm="HS256",
    )

    assert client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_api_key_is_shown_once_and_authenticates(client: TestClient, account: Account) -> None:
    created = client.post("/auth/api-keys", json={"name": "ci"}, headers=account.headers)
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("tf-")

    me = client.get("/auth/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200
    assert me.json()["organization"]["id"] == account.organization_id

    listed = client.get("/auth/api-keys", headers=account.headers).json()
    assert [k["prefix"] for k in listed] == [key[:10]]
    assert "key" not in listed[0]
    assert listed[0]["last_used_at"] is not None


def test_revoked_api_key_is_401_at_once(client: TestClient, account: Account) -> None:
    created = client.post("/auth/api-keys", json={"name": "temp"}, headers=account.headers).json()
    key_headers = {"Authorization": f"Bearer {created['key']}"}
    assert client.get("/auth/me", headers=key_headers).status_code == 200  # now cached

    revoked = client.delete(f"/auth/api-keys/{created['id']}", headers=account.headers)

    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    response = client.get("/auth/me", headers={"Authorization": f"Bearer {created['key']}"})
    assert response.status_code == 401


def test_unknown_api_key_is_401(client: TestClient) -> None:
    response = client.get("/auth/me", headers={"Authorization": "Bearer tf-not-a-real-key"})

    assert response.status_code == 401


def test_another_organizations_api_key_cannot_be_revoked(
    client: TestClient, account: Account, other_account: Account
) -> None:
    created = client.post("/auth/api-keys", json={"name": "mine"}, headers=account.headers).json()

    response = client.delete(f"/auth/api-keys/{created['id']}", headers=other_account.headers)

    assert response.status_code == 404
    assert (
        client.get("/auth/me", headers={"Authorization": f"Bearer {created['key']}"}).status_code
        == 200
    )


@contextmanager
def statements(app: FastAPI) -> Iterator[list[str]]:
    """The SQL statements the app's engine runs inside the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(app.state.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(app.state.engine, "before_cursor_execute", record)


def api_key_for(client: TestClient, account: Account) -> str:
    created = client.post("/auth/api-keys", json={"name": "ci"}, headers=account.headers)
    return created.json()["key"]


def test_each_kind_of_credential_authenticates_in_one_query_then_from_the_cache(
    app: FastAPI, client: TestClient, account: Account
) -> None:
    key = api_key_for(client, account)
    app.state.shared(PrincipalCache).evict(credential_key(account.token))

    for token in (account.token, key):
        headers = {"Authorization": f"Bearer {token}"}
        with statements(app) as first:
            assert client.get("/auth/me", headers=headers).status_code == 200
        with statements(app) as again:
            assert client.get("/auth/me", headers=headers).status_code == 200
        assert len([sql for sql in first if not sql.startswith("UPDATE")]) == 1, first
        assert again == []


@pytest.fixture
def briefly_cached(settings: Settings) -> Iterator[TestClient]:
    """An app that trusts a checked credential for a tenth of a second."""
    app = create_app(settings.model_copy(update={"auth_cache_seconds": CACHE_SECONDS}))
    with TestClient(app) as client:
        yield client


CACHE_SECONDS = 0.1


def past_the_cache() -> None:
    time.sleep(CACHE_SECONDS * 1.5)


def test_api_key_last_used_at_is_written_at_most_once_a_minute(
    briefly_cached: TestClient, db_session: Session
) -> None:
    account = register(briefly_cached)
    key = api_key_for(briefly_cached, account)
    headers = {"Authorization": f"Bearer {key}"}

    briefly_cached.get("/auth/me", headers=headers)
    first = db_session.scalars(select(ApiKey.last_used_at)).one()
    past_the_cache()
    briefly_cached.get("/auth/me", headers=headers)
    db_session.expire_all()
    assert db_session.scalars(select(ApiKey.last_used_at)).one() == first

    stale = first - LAST_USED_RESOLUTION - timedelta(seconds=1)
    db_session.execute(update(ApiKey).values(last_used_at=stale))
    db_session.commit()
    past_the_cache()
    briefly_cached.get("/auth/me", headers=headers)
    db_session.expire_all()
    assert db_session.scalars(select(ApiKey.last_used_at)).one() > first


def test_a_deactivated_user_loses_access_within_the_cache_time_by_token_and_by_key(
    briefly_cached: TestClient, db_session: Session
) -> None:
    account = register(briefly_cached)
    key = api_key_for(briefly_cached, account)
    for token in (account.token, key):  # both cached
        response = briefly_cached.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200

    db_session.execute(update(User).where(User.id == account.user_id).values(is_active=False))
    db_session.commit()
    past_the_cache()

    for token in (account.token, key):
        response = briefly_cached.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert response.json()["detail"] == "Credentials no longer grant access"


def test_leaving_the_organization_revokes_access_within_the_cache_time_by_token_and_by_key(
    briefly_cached: TestClient, db_session: Session
) -> None:
    account = register(briefly_cached)
    key = api_key_for(briefly_cached, account)
    for token in (account.token, key):  # both cached
        response = briefly_cached.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200

    db_session.execute(delete(Membership).where(Membership.user_id == account.user_id))
    db_session.commit()
    past_the_cache()

    for token in (account.token, key):
        response = briefly_cached.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert response.json()["detail"] == "Credentials no longer grant access"


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": 1e20},  # signed, but past what a datetime holds
        {"org": {"id": "an object"}},
        {"sub": ["a", "list"]},
    ],
)
def test_a_validly_signed_token_with_unusable_claims_is_401(
    client: TestClient, account: Account, settings: Settings, claims: dict[str, Any]
) -> None:
    payload = {
        "sub": account.user_id,
        "org": account.organization_id,
        "exp": int(time.time()) + 60,
        **claims,
    }
    token = jwt.encode(payload, settings.signing_key(), algorithm="HS256")
    response = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"


def test_concurrent_registrations_of_one_email_make_one_account(live_server: str) -> None:
    body = {
        "email": "race@example.com",
        "password": "correct horse battery",
        "name": "Racer",
        "organization_name": "Race",
    }
    barrier = threading.Barrier(6)

    def register_once() -> int:
        barrier.wait()
        return httpx.post(f"{live_server}/auth/register", json=body, timeout=30).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(lambda _: register_once(), range(6)))
    assert statuses == [201, 409, 409, 409, 409, 409]


@pytest.mark.parametrize("path", ["/agents", "/v1/chat/completions"])
def test_a_body_nested_too_deep_to_parse_is_a_400_in_the_error_shape(
    client: TestClient, account: Account, path: str
) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    response = client.post(
        path,
        content=nested,
        headers={**account.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["detail"] and "error" in body


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"password": "aaaaaaaa"}, "password"),
        ({"password": "        "}, "password"),
        ({"password": "12121212"}, "password"),
        ({"name": " "}, "name"),
        ({"organization_name": "\t"}, "organization_name"),
        ({"organization_name": "Acme\x00"}, "organization_name"),
    ],
)
def test_weak_passwords_and_blank_names_are_refused(
    client: TestClient, fields: dict[str, str], field: str
) -> None:
    body = {
        "email": "new@example.com",
        "password": "correct horse battery",
        "name": "New",
        "organization_name": "New Org",
        **fields,
    }
    response = client.post("/auth/register", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["fields"][0]["field"] == f"body.{field}"


def test_an_api_key_cannot_manage_api_keys(client: TestClient, account: Account) -> None:
    created = client.post("/auth/api-keys", json={"name": "leaky"}, headers=account.headers)
    key = created.json()
    as_key = {"Authorization": f"Bearer {key['key']}"}

    assert client.get("/auth/me", headers=as_key).status_code == 200  # it works otherwise
    minted = client.post("/auth/api-keys", json={"name": "spare"}, headers=as_key)
    assert minted.status_code == 403 and "API key" in minted.json()["detail"]
    assert client.get("/auth/api-keys", headers=as_key).status_code == 403
    assert client.delete(f"/auth/api-keys/{key['id']}", headers=as_key).status_code == 403
    revoked = client.delete(f"/auth/api-keys/{key['id']}", headers=account.headers)
    assert revoked.status_code == 200
    assert client.get("/auth/me", headers=as_key).status_code == 401


def test_an_email_is_one_account_however_it_is_cased(client: TestClient) -> None:
    body = {"password": "correct horse battery", "name": "Ö", "organization_name": "Ö"}
    created = client.post("/auth/register", json={**body, "email": "Ölaf@example.com"})
    assert created.status_code == 201, created.text
    assert created.json()["user"]["email"] == "Ölaf@example.com"  # kept as typed
    for typed in ("ölaf@example.com", "ÖLAF@EXAMPLE.COM", "Ölaf@example.com"):
        login = client.post(
            "/auth/login", json={"email": typed, "password": "correct horse battery"}
        )
        assert login.status_code == 200, (typed, login.text)
    twin = client.post("/auth/register", json={**body, "email": "ölaf@example.com"})
    assert twin.status_code == 409


def test_signing_out_ends_every_session_but_not_api_keys(
    client: TestClient, account: Account
) -> None:
    key = client.post("/auth/api-keys", json={"name": "ci"}, headers=account.headers).json()
    second = client.post(
        "/auth/login", json={"email": account.email, "password": account.password}
    ).json()["access_token"]
    assert client.get("/auth/me", headers=account.headers).status_code == 200

    assert client.post("/auth/sign-out", headers=account.headers).status_code == 204

    for token in (account.token, second):
        stale = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert stale.status_code == 401 and "signed out" in stale.json()["detail"]
    as_key = {"Authorization": f"Bearer {key['key']}"}
    assert client.get("/auth/me", headers=as_key).status_code == 200
    assert client.post("/auth/sign-out", headers=as_key).status_code == 403
    fresh = client.post(
        "/auth/login", json={"email": account.email, "password": account.password}
    ).json()["access_token"]
    assert client.get("/auth/me", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


def test_sign_ins_are_throttled_per_account_across_processes(
    client: TestClient, account: Account, settings: Settings, db_session: Session
) -> None:
    wrong = {"email": account.email.upper(), "password": "not the password"}
    right = {"email": account.email, "password": account.password}
    for _ in range(settings.login_free_failures_per_account):
        assert client.post("/auth/login", json=wrong).status_code == 401

    refused = client.post("/auth/login", json=right)  # even the right password waits now
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    with TestClient(create_app(settings)) as another_process:
        assert another_process.post("/auth/login", json=right).status_code == 429

    db_session.execute(update(LoginThrottle).values(blocked_until=datetime.now(UTC)))
    db_session.commit()
    assert client.post("/auth/login", json=right).status_code == 200
    assert db_session.scalars(select(LoginThrottle.key)).all() == ["address:testclient"]


def test_an_unknown_email_costs_a_password_check_too(client: TestClient) -> None:
    before = unknown_user_hash.cache_info()
    response = client.post(
        "/auth/login", json={"email": "nobody@example.com", "password": "whatever it is"}
    )
    assert response.status_code == 401
    after = unknown_user_hash.cache_info()
    assert after.hits + after.misses == before.hits + before.misses + 1
