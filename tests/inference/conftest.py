"""The app served by a real HTTP server, and the official ``openai`` SDK pointed at it."""

from __future__ import annotations

import openai
import pytest
from fastapi.testclient import TestClient

from tests.fixtures.api import Account


@pytest.fixture
def api_key(client: TestClient, account: Account) -> str:
    response = client.post("/auth/api-keys", json={"name": "sdk"}, headers=account.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


@pytest.fixture
def sdk(live_server: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0, timeout=60)
