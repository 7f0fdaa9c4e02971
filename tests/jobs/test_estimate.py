from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tests.fixtures.files import Upload, chat, jsonl

URL = "/fine-tuning/jobs/estimate"
MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def report(client: TestClient, account: Account, dataset_id: str) -> dict[str, Any]:
    response = client.get(f"/fine-tuning/datasets/{dataset_id}", headers=account.headers)
    return response.json()["validation_report"]


def estimate(client: TestClient, account: Account, **body: Any) -> Any:
    return client.post(URL, json=body, headers=account.headers)


def test_auto_epochs_estimate_equals_the_validation_report(
    client: TestClient, account: Account, dataset_id: str, report: dict[str, Any]
) -> None:
    response = estimate(client, account, dataset_id=dataset_id, model=MODEL)
    assert response.status_code == 200, response.text
    body = response.json()
    assert report["model"] == MODEL
    assert body["requested_n_epochs"] == "auto"
    assert body["n_epochs"] == report["n_epochs"]
    assert body["billed_tokens_per_epoch"] == report["billed_tokens_per_epoch"]
    assert body["billed_tokens"] == report["total_billed_tokens"]
    assert body["price_per_million_tokens"] == report["price_per_million_tokens"]
    assert body["estimated_cost_usd"] == report["estimated_cost_usd"]
    assert body["provider"] == "openai"


def test_explicit_epochs_and_another_priced_model(
    client: TestClient, account: Account, dataset_id: str, report: dict[str, Any]
) -> None:
    body = estimate(
        client,
        account,
        dataset_id=dataset_id,
        model="gpt-4o-2024-08-06",
        hyperparameters={"n_epochs": 2},
    ).json()
    billed = report["billed_tokens_per_epoch"] * 2
    assert (body["n_epochs"], body["billed_tokens"]) == (2, billed)
    assert body["price_per_million_tokens"] == 25.0
    assert body["estimated_cost_usd"] == round(billed / 1_000_000 * 25.0, 6)


def test_a_model_with_another_tokenizer_needs_its_own_validation(
    client: TestClient, account: Account, dataset_id: str
) -> None:
    response = estimate(client, account, dataset_id=dataset_id, model="gpt-3.5-turbo-0125")
    assert response.status_code == 422
    assert response.json()["field"] == "model"
    assert "gpt-3.5-turbo-0125" in response.json()["detail"]


def test_an_invalid_dataset_or_model_is_rejected(
    client: TestClient, account: Account, upload: Upload, dataset_id: str
) -> None:
    broken = upload(jsonl(chat("Hi", "Hello"), "{oops")).json()["id"]
    response = estimate(client, account, dataset_id=broken, model=MODEL)
    assert response.status_code == 422 and broken in response.json()["detail"]
    response = estimate(client, account, dataset_id=dataset_id, model="no-such-model")
    assert response.status_code == 422 and "no-such-model" in response.json()["detail"]
    response = estimate(
        client, account, dataset_id=dataset_id, model=MODEL, hyperparameters={"n_epochs": 99}
    )
    assert response.status_code == 422 and "n_epochs" in response.json()["detail"]


@pytest.mark.usefixtures("installed_tiny_model")
def test_a_local_model_estimate_uses_its_own_report_and_costs_nothing(
    client: TestClient, account: Account, upload: Upload
) -> None:
    examples = [chat(f"Question {i}?", f"Answer {i}.") for i in range(12)]
    uploaded = upload(jsonl(*examples), model="smollm2-135m-instruct")
    assert uploaded.status_code == 201, uploaded.text
    report = uploaded.json()["validation_report"]

    response = estimate(client, account, dataset_id=uploaded.json()["id"], model=report["model"])

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provider"] == "local"
    # "auto" by the local rules: a token budget per step, so all 12 examples in one batch,
    # and epochs enough for a few dozen optimizer steps (OpenAI's rule would say 8).
    assert body["hyperparameters"]["batch_size"] == 12
    assert body["n_epochs"] == body["hyperparameters"]["n_epochs"] == 10
    assert body["billed_tokens"] == report["billed_tokens_per_epoch"] * 10
    assert body["estimated_cost_usd"] is None


@pytest.mark.usefixtures("installed_tiny_model")
def test_hyperparameters_are_checked_by_the_models_provider(
    client: TestClient, account: Account, upload: Upload, dataset_id: str
) -> None:
    local_knobs = {"n_epochs": 2, "lora_r": 8, "micro_batch_tokens": 512}
    response = estimate(
        client, account, dataset_id=dataset_id, model=MODEL, hyperparameters=local_knobs
    )
    assert response.status_code == 422
    assert response.json()["field"] == "hyperparameters.lora_r"

    examples = [chat(f"Question {i}?", f"Answer {i}.") for i in range(12)]
    local = upload(jsonl(*examples), model="smollm2-135m-instruct").json()
    response = estimate(
        client,
        account,
        dataset_id=local["id"],
        model=local["validation_report"]["model"],
        hyperparameters=local_knobs,
    )
    assert response.status_code == 200, response.text
    assert response.json()["n_epochs"] == 2
    response = estimate(
        client,
        account,
        dataset_id=local["id"],
        model=local["validation_report"]["model"],
        hyperparameters={"lora_dropout": 1.5},
    )
    assert response.status_code == 422
    assert response.json()["field"] == "hyperparameters.lora_dropout"
