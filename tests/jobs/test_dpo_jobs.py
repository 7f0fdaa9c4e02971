"""DPO jobs through both APIs: `method`, its beta, the data's kind, a fine-tune to start from."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tests.fixtures.files import Upload, jsonl, valid_jsonl
from tests.fixtures.tiny_model import TINY_BASE_MODEL
from tuneforge.db.tables.models import FineTunedModel

pytestmark = pytest.mark.usefixtures("installed_tiny_model")

DPO = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}}


def pairs(count: int) -> bytes:
    return jsonl(
        *(
            {
                "input": {"messages": [{"role": "user", "content": f"Question {i}?"}]},
                "preferred_output": [{"role": "assistant", "content": f"Happy to help! {i}."}],
                "non_preferred_output": [{"role": "assistant", "content": f"{i}."}],
            }
            for i in range(count)
        )
    )


@pytest.fixture
def pairs_id(upload: Upload) -> str:
    response = upload(pairs(20), filename="pairs.jsonl")
    assert response.status_code == 201, response.text
    assert response.json()["kind"] == "preference"
    return response.json()["id"]


def post_job(client: TestClient, account: Account, **body: Any) -> Any:
    return client.post(
        "/fine-tuning/jobs", json={"model": TINY_BASE_MODEL, **body}, headers=account.headers
    )


def test_a_dpo_job_keeps_its_method_and_beta(
    client: TestClient, account: Account, pairs_id: str
) -> None:
    response = post_job(client, account, dataset_id=pairs_id, method=DPO)

    assert response.status_code == 201, response.text
    job = response.json()
    assert job["method"]["type"] == "dpo" and job["method"]["supervised"] is None
    assert job["method"]["dpo"]["hyperparameters"] == job["hyperparameters"]
    assert job["hyperparameters"]["beta"] == 0.2 and job["hyperparameters"]["n_epochs"] == 2
    assert job["requested_hyperparameters"]["beta"] == 0.2
    assert job["parent_model"] is None and job["model"] == TINY_BASE_MODEL


def test_auto_beta_and_a_lower_auto_learning_rate_for_dpo(
    client: TestClient, account: Account, pairs_id: str, dataset_id: str
) -> None:
    dpo = post_job(client, account, dataset_id=pairs_id, method={"type": "dpo"}).json()
    supervised = post_job(client, account, dataset_id=dataset_id).json()

    assert dpo["requested_hyperparameters"]["beta"] == "auto"
    assert dpo["hyperparameters"]["beta"] == 0.1
    assert "beta" not in supervised["hyperparameters"]
    assert supervised["method"] == {
        "type": "supervised",
        "supervised": {"hyperparameters": supervised["hyperparameters"]},
        "dpo": None,
    }
    ratio = (
        dpo["hyperparameters"]["learning_rate_multiplier"]
        / supervised["hyperparameters"]["learning_rate_multiplier"]
    )
    assert ratio == pytest.approx(0.25, rel=0.05)


def test_method_and_data_must_agree_and_dpo_knobs_are_dpo_only(
    client: TestClient, account: Account, pairs_id: str, dataset_id: str
) -> None:
    refusals = [
        (dict(dataset_id=dataset_id, method=DPO), "dataset_id"),
        (dict(dataset_id=pairs_id), "dataset_id"),
        (dict(dataset_id=dataset_id, hyperparameters={"beta": 0.1}), "hyperparameters.beta"),
        (
            dict(dataset_id=dataset_id, hyperparameters={"nll_weight": 0.5}),
            "hyperparameters.nll_weight",
        ),
        (
            dict(
                dataset_id=pairs_id,
                method={"type": "dpo", "dpo": {"hyperparameters": {"nll_weight": -1}}},
            ),
            "hyperparameters.nll_weight",
        ),
        (
            dict(dataset_id=pairs_id, method=DPO, hyperparameters={"n_epochs": 1}),
            "hyperparameters",
        ),
        (
            dict(dataset_id=pairs_id, method={"type": "dpo"}, hyperparameters={"beta": 0}),
            "hyperparameters.beta",
        ),
        (
            dict(dataset_id=pairs_id, validation_dataset_id=dataset_id, method=DPO),
            "validation_dataset_id",
        ),
    ]
    for body, field in refusals:
        response = post_job(client, account, **body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["field"] == field, (body, response.text)
    assert "preference" in post_job(client, account, dataset_id=dataset_id, method=DPO).text
    mixed = post_job(client, account, dataset_id=pairs_id, method={"type": "dpo", "supervised": {}})
    assert mixed.status_code == 422 and "supervised settings" in mixed.text


def test_a_job_can_start_from_a_fine_tune_by_id_or_name(
    client: TestClient, account: Account, pairs_id: str, fine_tuned: FineTunedModel
) -> None:
    by_id = post_job(client, account, dataset_id=pairs_id, model=fine_tuned.id, method=DPO)
    by_name = post_job(client, account, dataset_id=pairs_id, model=fine_tuned.name, method=DPO)

    for response in (by_id, by_name):
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["model"] == TINY_BASE_MODEL and job["provider"] == fine_tuned.provider
        assert job["parent_model"] == fine_tuned.name
    other = post_job(
        client,
        account,
        dataset_id=pairs_id,
        model=fine_tuned.id,
        provider="openai",
        method=DPO,
    )
    assert other.status_code == 422 and other.json()["field"] == "provider"


def test_another_organizations_fine_tune_is_no_starting_point(
    client: TestClient, other_account: Account, fine_tuned: FineTunedModel, upload: Upload
) -> None:
    dataset = upload(pairs(5), filename="p.jsonl", headers=other_account.headers).json()
    response = post_job(
        client, other_account, dataset_id=dataset["id"], model=fine_tuned.id, method=DPO
    )
    assert response.status_code == 422 and response.json()["field"] == "model"


def test_the_openai_sdk_creates_a_dpo_job(sdk: openai.OpenAI, upload: Upload) -> None:
    file = sdk.files.create(file=("pairs.jsonl", pairs(12)), purpose="fine-tune")
    job = sdk.fine_tuning.jobs.create(
        model=TINY_BASE_MODEL,
        training_file=file.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3}}},
    )

    assert job.method is not None and job.method.type == "dpo"
    assert job.method.dpo is not None and job.method.dpo.hyperparameters is not None
    assert job.method.dpo.hyperparameters.beta == 0.3
    fetched = sdk.fine_tuning.jobs.retrieve(job.id)
    assert fetched.method is not None and fetched.method.type == "dpo"
    chat_file = sdk.files.create(file=("chat.jsonl", valid_jsonl(12)), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.fine_tuning.jobs.create(
            model=TINY_BASE_MODEL, training_file=chat_file.id, method={"type": "dpo"}
        )
    assert refused.value.param == "training_file"
