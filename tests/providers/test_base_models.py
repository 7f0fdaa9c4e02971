from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tuneforge.config import Settings
from tuneforge.store.base_models import register_local_model


def _by_name(client: TestClient, account: Account) -> dict[str, dict]:
    response = client.get("/fine-tuning/base-models", headers=account.headers)
    assert response.status_code == 200, response.text
    return {model["name"]: model for model in response.json()}


def test_lists_every_provider_with_readiness(client: TestClient, account: Account) -> None:
    models = _by_name(client, account)

    smollm2 = models["smollm2-135m-instruct"]
    assert (smollm2["provider"], smollm2["pricing"], smollm2["ready"]) == ("local", "local", False)
    assert "tuneforge models pull" in smollm2["ready_detail"]
    gpt = models["gpt-4o-mini-2024-07-18"]
    assert gpt["provider"] == "openai"
    assert gpt["price_per_million_training_tokens"] == 3.0
    assert gpt["ready"] is False  # no API key in the test settings


def test_pulled_and_registered_local_models_are_ready(
    client: TestClient, account: Account, settings: Settings, installed_tiny_model: Path
) -> None:
    register_local_model(settings, installed_tiny_model, "my-local-model")

    models = _by_name(client, account)

    assert models["smollm2-135m-instruct"]["ready"] is True
    registered = models["my-local-model"]
    assert (registered["provider"], registered["ready"]) == ("local", True)
    assert registered["context_length"] > 0


def test_requires_authentication(client: TestClient) -> None:
    assert client.get("/fine-tuning/base-models").status_code == 401
