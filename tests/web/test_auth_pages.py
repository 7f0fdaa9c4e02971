"""Signing in and out, the session cookie, CSRF on forms and on cookie-authenticated API calls."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tests.web.conftest import DashboardClient, csrf_of, sign_in

PAGES = [
    "/dashboard/fine-tuning",
    "/dashboard/fine-tuning/datasets",
    "/dashboard/fine-tuning/datasets/new",
    "/dashboard/fine-tuning/jobs",
    "/dashboard/fine-tuning/jobs/new",
    "/dashboard/fine-tuning/models",
    "/dashboard/agents",
]


@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_to_sign_in_without_a_session(client: TestClient, path: str) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/dashboard/sign-in?next={path}"


def test_htmx_requests_without_a_session_are_sent_to_sign_in(client: TestClient) -> None:
    response = client.get("/dashboard/fine-tuning/jobs/rows", headers={"HX-Request": "true"})
    assert response.headers["HX-Redirect"].startswith("/dashboard/sign-in?next=")


def test_sign_in_sets_the_api_jwt_in_an_httponly_lax_cookie(
    client: TestClient, account: Account
) -> None:
    page = client.get("/dashboard/sign-in?next=/dashboard/fine-tuning/models")
    response = client.post(
        "/dashboard/sign-in",
        data={
            "csrf_token": csrf_of(page.text),
            "email": account.email,
            "password": account.password,
            "next": "/dashboard/fine-tuning/models",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/fine-tuning/models"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("tf_session=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    token = client.cookies["tf_session"]
    me = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["user"]["email"] == account.email


def test_a_wrong_password_is_shown_on_the_form(client: TestClient, account: Account) -> None:
    page = client.get("/dashboard/sign-in")
    response = client.post(
        "/dashboard/sign-in",
        data={"csrf_token": csrf_of(page.text), "email": account.email, "password": "nope"},
    )
    assert response.status_code == 401
    assert "do not match an account" in response.text
    assert "tf_session" not in client.cookies


def test_a_form_without_its_csrf_token_is_refused(client: TestClient, account: Account) -> None:
    client.get("/dashboard/sign-in")
    response = client.post(
        "/dashboard/sign-in", data={"email": account.email, "password": account.password}
    )
    assert response.status_code == 403
    assert "text/html" in response.headers["content-type"]
    assert "Reload the page and try again" in response.text
    assert "tf_session" not in client.cookies


def test_a_token_from_another_session_is_refused(
    client: TestClient, account: Account, other_account: Account, web: DashboardClient
) -> None:
    stolen = web.csrf
    client.cookies.clear()
    other = sign_in(client, other_account)
    assert other.csrf != stolen
    response = client.post("/dashboard/sign-out", data={"csrf_token": stolen})
    assert response.status_code == 403


def test_register_creates_the_account_and_signs_in(client: TestClient) -> None:
    page = client.get("/dashboard/register")
    response = client.post(
        "/dashboard/register",
        data={
            "csrf_token": csrf_of(page.text),
            "email": "new@example.com",
            "password": "long enough password",
            "name": "New Person",
            "organization_name": "New Org",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    overview = client.get("/dashboard/fine-tuning")
    assert overview.status_code == 200
    assert "New Person · New Org" in overview.text


def test_register_shows_field_errors_beside_the_fields(
    client: TestClient, account: Account
) -> None:
    token = csrf_of(client.get("/dashboard/register").text)
    short = client.post(
        "/dashboard/register",
        data={"csrf_token": token, "email": "x@example.com", "password": "short", "name": "X"},
    )
    assert short.status_code == 422
    assert 'id="password-error"' in short.text and 'id="organization_name-error"' in short.text
    taken = client.post(
        "/dashboard/register",
        data={
            "csrf_token": token,
            "email": account.email,
            "password": "long enough password",
            "name": "Again",
            "organization_name": "Org",
        },
    )
    assert taken.status_code == 409
    assert "This email cannot be registered" in taken.text


def test_sign_out_ends_the_session(client: TestClient, web: DashboardClient) -> None:
    stolen = client.cookies["tf_session"]
    response = web.post("/dashboard/sign-out")
    assert response.status_code == 303
    assert "tf_session" not in client.cookies
    assert client.get("/dashboard/fine-tuning", follow_redirects=False).status_code == 303
    # A copy of the cookie taken before signing out no longer opens anything either.
    client.cookies.set("tf_session", stolen)
    assert client.get("/dashboard/fine-tuning", follow_redirects=False).status_code == 303
    assert client.get("/auth/me", headers={"Authorization": f"Bearer {stolen}"}).status_code == 401


def test_next_never_leaves_the_dashboard(client: TestClient, account: Account) -> None:
    token = csrf_of(client.get("/dashboard/sign-in").text)
    response = client.post(
        "/dashboard/sign-in",
        data={
            "csrf_token": token,
            "email": account.email,
            "password": account.password,
            "next": "https://attacker.example/dashboard",
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == "/dashboard/fine-tuning"


def test_the_json_api_accepts_the_cookie_and_wants_csrf_for_writes(
    client: TestClient, web: DashboardClient, dataset_id: str
) -> None:
    assert client.get("/auth/me").status_code == 200
    path = f"/fine-tuning/datasets/{dataset_id}/validate"
    refused = client.post(path)
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    assert client.post(path, headers={"X-CSRF-Token": "0" * 64}).status_code == 403
    assert client.post(path, headers={"X-CSRF-Token": web.csrf}).status_code == 200


def test_bearer_tokens_need_no_csrf(client: TestClient, account: Account, dataset_id: str) -> None:
    response = client.post(f"/fine-tuning/datasets/{dataset_id}/validate", headers=account.headers)
    assert response.status_code == 200
