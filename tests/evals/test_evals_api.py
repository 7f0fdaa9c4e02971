"""Evaluations end to end: create through the API, a worker runs them, results read back."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tests.fixtures.files import Upload, chat, jsonl
from tests.fixtures.tiny_model import TINY_BASE_MODEL
from tuneforge.config import Settings
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.inference.engine import InferenceEngine
from tuneforge.worker.loop import Worker

pytestmark = pytest.mark.usefixtures("installed_tiny_model")


@pytest.fixture
def dataset_id(upload: Upload) -> str:
    examples = [chat(f"Question {i}?", f"Answer {i}.") for i in range(12)]
    response = upload(jsonl(*examples), model=TINY_BASE_MODEL, validation_fraction=0.5)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def create(client: TestClient, account: Account, **body: Any) -> Any:
    return client.post("/evals", json=body, headers=account.headers)


def run_worker(app: FastAPI, settings: Settings) -> None:
    worker = Worker(app.state.session_factory, settings, engine=InferenceEngine(1024**3))
    assert worker.run_one_evaluation()


def test_an_evaluation_compares_a_fine_tune_with_its_base_example_by_example(
    client: TestClient,
    app: FastAPI,
    settings: Settings,
    account: Account,
    dataset_id: str,
    fine_tuned: FineTunedModel,
) -> None:
    models = [{"reference": TINY_BASE_MODEL}, {"reference": fine_tuned.id, "label": "tuned"}]
    created = create(client, account, dataset_id=dataset_id, models=models, max_tokens=6)
    assert created.status_code == 201, created.text
    run = created.json()
    total = run["examples_total"]
    assert (run["status"], run["examples_done"]) == ("queued", 0) and total >= 4
    assert run["graders"] == [{"type": "string_check", "name": None, "operation": "eq"}]
    assert [m["label"] for m in run["models"]] == [TINY_BASE_MODEL, "tuned"]

    run_worker(app, settings)

    done = client.get(f"/evals/{run['id']}", headers=account.headers).json()
    assert (done["status"], done["examples_done"]) == ("succeeded", total)
    base, tuned = done["summary"]
    assert (base["wins"], base["ties"], base["losses"]) == (0, total, 0)
    assert tuned["wins"] + tuned["ties"] + tuned["losses"] == total
    assert 0.0 <= tuned["pass_rate"] <= 1.0 and tuned["reference"] == fine_tuned.id
    results = client.get(f"/evals/{run['id']}/results?limit=4", headers=account.headers).json()
    assert results["total"] == total and len(results["items"]) == 4
    first = results["items"][0]
    assert first["expected"].startswith("Answer ") and first["messages"][-1]["role"] == "user"
    assert [reply["model"] for reply in first["replies"]] == [TINY_BASE_MODEL, "tuned"]
    assert first["replies"][0]["grades"][0]["grader"] == "exact match"
    regressions = client.get(
        f"/evals/{run['id']}/results?regressions_only=true&limit=100", headers=account.headers
    ).json()
    assert regressions["total"] == tuned["losses"]
    assert all(item["regression"] for item in regressions["items"])
    listed = client.get("/evals", headers=account.headers).json()
    assert [item["id"] for item in listed["items"]] == [run["id"]]


def test_wins_losses_and_regressions_follow_the_graded_replies(
    client: TestClient,
    app: FastAPI,
    settings: Settings,
    account: Account,
    dataset_id: str,
    fine_tuned: FineTunedModel,
) -> None:
    """The tiny fine-tune's random adapter makes it say "fox" where its base does not: with
    the fine-tune as the baseline, the base model loses on those examples."""
    models = [{"reference": fine_tuned.id, "label": "tuned"}, {"reference": TINY_BASE_MODEL}]
    graders = [{"type": "contains", "text": "fox"}]
    body = {"dataset_id": dataset_id, "models": models, "graders": graders, "max_tokens": 12}
    run = create(client, account, **body).json()
    run_worker(app, settings)

    tuned, base = client.get(f"/evals/{run['id']}", headers=account.headers).json()["summary"]
    assert (tuned["model"], tuned["losses"]) == ("tuned", 0)
    rows = client.get(f"/evals/{run['id']}/results?limit=100", headers=account.headers).json()
    scores = [(row["replies"][0]["score"], row["replies"][1]["score"]) for row in rows["items"]]
    assert base["losses"] == sum(b < t for t, b in scores) > 0
    assert base["wins"] == sum(b > t for t, b in scores)
    assert base["pass_rate"] == sum(b == 1.0 for _, b in scores) / len(scores)
    regressions = client.get(
        f"/evals/{run['id']}/results?regressions_only=true&limit=100", headers=account.headers
    ).json()
    assert regressions["total"] == base["losses"]
    assert all(
        item["replies"][1]["score"] < item["replies"][0]["score"] for item in regressions["items"]
    )


def test_a_queued_evaluation_cancels_at_once_and_only_once(
    client: TestClient, account: Account, dataset_id: str
) -> None:
    run = create(client, account, dataset_id=dataset_id, models=[{"reference": TINY_BASE_MODEL}])
    cancel = f"/evals/{run.json()['id']}/cancel"
    response = client.post(cancel, headers=account.headers)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = client.post(cancel, headers=account.headers)
    assert again.status_code == 409


def test_bad_requests_name_the_field_and_other_organizations_see_nothing(
    client: TestClient, account: Account, other_account: Account, dataset_id: str
) -> None:
    unknown = create(client, account, dataset_id=dataset_id, models=[{"reference": "nope"}])
    assert unknown.status_code == 422 and unknown.json()["field"] == "models.0.reference"
    empty = create(client, account, dataset_id=dataset_id, models=[])
    assert empty.status_code == 422 and "models" in empty.json()["detail"]
    bad_grader = create(
        client,
        account,
        dataset_id=dataset_id,
        models=[{"reference": TINY_BASE_MODEL}],
        graders=[{"type": "regex", "pattern": "("}],
    )
    assert bad_grader.status_code == 422 and "graders" in bad_grader.json()["detail"]
    same_label = create(
        client,
        account,
        dataset_id=dataset_id,
        models=[{"reference": TINY_BASE_MODEL}, {"reference": TINY_BASE_MODEL}],
    )
    assert same_label.status_code == 422 and same_label.json()["field"] == "models"
    run = create(client, account, dataset_id=dataset_id, models=[{"reference": TINY_BASE_MODEL}])
    foreign = client.get(f"/evals/{run.json()['id']}", headers=other_account.headers)
    assert foreign.status_code == 404
    stolen = create(
        client, other_account, dataset_id=dataset_id, models=[{"reference": TINY_BASE_MODEL}]
    )
    assert stolen.status_code == 404
