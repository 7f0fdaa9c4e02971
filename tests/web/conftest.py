"""A TestClient signed in through the dashboard's own form, with its CSRF token at hand."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tuneforge.config import Settings

TOKEN = re.compile(r'<meta name="csrf-token" content="([0-9a-f]+)"')


def csrf_of(html: str) -> str:
    match = TOKEN.search(html)
    assert match is not None, "page has no CSRF token"
    return match[1]


@dataclass
class DashboardClient:
    """The dashboard as a browser sees it: cookies in the client, the page's CSRF token."""

    client: TestClient
    csrf: str

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, follow_redirects=False, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        form = {"csrf_token": self.csrf, **(data or {})}
        return self.client.post(path, data=form, follow_redirects=False, **kwargs)

    def htmx(self, path: str, data: dict[str, Any] | None = None) -> httpx.Response:
        return self.post(path, data, headers={"HX-Request": "true"})


def sign_in(client: TestClient, account: Account) -> DashboardClient:
    page = client.get("/dashboard/sign-in")
    response = client.post(
        "/dashboard/sign-in",
        data={
            "csrf_token": csrf_of(page.text),
            "email": account.email,
            "password": account.password,
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return DashboardClient(client, csrf_of(client.get("/dashboard/fine-tuning").text))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """OpenAI counts as configured so jobs can be created; the worker is off, so nothing
    reaches it."""
    return settings.model_copy(update={"openai_api_key": "sk-test"})


@pytest.fixture
def web(client: TestClient, account: Account) -> DashboardClient:
    return sign_in(client, account)
