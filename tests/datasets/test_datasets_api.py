"""Listing, reading, renaming and deleting datasets; statistics; scoping and authentication."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.fixtures.api import Account
from tests.fixtures.files import Upload, chat, jsonl, valid_jsonl
from tuneforge.datasets.service import require_valid_dataset
from tuneforge.datasets.validation import default_epochs
from tuneforge.db.tables.datasets import FineTuningDataset, TrainingExample
from tuneforge.errors import InvalidInput, NotFound

BASE = "/fine-tuning/datasets"


def test_list_filters_and_pages(client: TestClient, account: Account, upload: Upload) -> None:
    for name in ("Alpha support", "Beta sales", "Gamma support"):
        assert upload(valid_jsonl(3), name=name).status_code == 201
    assert upload(jsonl("not json"), name="Broken support").status_code == 201
    assert upload(b"user,assistant\nhi,hello\n", "c.csv", name="Delta").status_code == 201

    def names(**params: Any) -> tuple[list[str], int]:
        response = client.get(BASE, headers=account.headers, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        return [item["name"] for item in body["items"]], body["total"]

    newest_first = ["Delta", "Broken support", "Gamma support", "Beta sales", "Alpha support"]
    assert names() == (newest_first, 5)
    assert names(limit=2, offset=1) == (["Broken support", "Gamma support"], 5)
    assert names(status="invalid") == (["Broken support"], 1)
    assert names(format="csv") == (["Delta"], 1)
    assert names(name="SUPPORT", status="valid") == (["Gamma support", "Alpha support"], 2)
    assert client.get(BASE, headers=account.headers, params={"status": "odd"}).status_code == 422


def test_get_includes_the_report(client: TestClient, account: Account, dataset_id: str) -> None:
    body = client.get(f"{BASE}/{dataset_id}", headers=account.headers).json()
    assert body["id"] == dataset_id
    assert body["validation_report"]["total_examples"] == 20


def test_update_name_and_description(client: TestClient, account: Account, dataset_id: str) -> None:
    url = f"{BASE}/{dataset_id}"
    response = client.patch(url, headers=account.headers, json={"description": "v2"})
    assert response.status_code == 200
    assert response.json()["description"] == "v2" and response.json()["name"] == "My dataset"
    response = client.patch(url, headers=account.headers, json={"name": "Renamed"})
    assert response.json()["name"] == "Renamed" and response.json()["description"] == "v2"
    cleared = client.patch(url, headers=account.headers, json={"description": None})
    assert cleared.json()["description"] is None
    for bad in ({"name": None}, {"name": ""}, {"status": "valid"}):
        assert client.patch(url, headers=account.headers, json=bad).status_code == 422


def test_soft_delete_hides_the_dataset_but_keeps_rows(
    client: TestClient, account: Account, dataset_id: str, db_session: Session
) -> None:
    url = f"{BASE}/{dataset_id}"
    assert client.delete(url, headers=account.headers).status_code == 204
    assert client.get(url, headers=account.headers).status_code == 404
    assert client.delete(url, headers=account.headers).status_code == 404
    assert client.get(BASE, headers=account.headers).json()["total"] == 0
    dataset = db_session.get(FineTuningDataset, dataset_id)
    assert dataset is not None and dataset.deleted_at is not None
    examples = db_session.scalars(
        select(TrainingExample.id).where(TrainingExample.dataset_id == dataset_id)
    ).all()
    assert len(examples) == 20


def test_statistics(client: TestClient, account: Account, upload: Upload) -> None:
    content = jsonl(*(chat(f"q{i}", f"a{i}") for i in range(30)), "oops")
    dataset = upload(content, validation_fraction=0.2, split_seed=7).json()
    stats = client.get(f"{BASE}/{dataset['id']}/statistics", headers=account.headers).json()
    assert stats["total_examples"] == 31 and stats["invalid_examples"] == 1
    assert stats["train_examples"] + stats["validation_examples"] == 30
    assert stats["validation_examples"] > 0
    assert stats["distributions"]["tokens_per_example"]["max"] > 0
    assert stats["distributions"]["error_counts"] == {"invalid_json": 1}
    assert stats["estimated_epochs"] == default_epochs(stats["train_examples"])
    epochs_times_tokens = stats["estimated_epochs"] * stats["billed_tokens_per_epoch"]
    assert stats["estimated_billed_tokens"] == epochs_times_tokens
    assert stats["estimated_cost_usd"] == pytest.approx(
        stats["estimated_billed_tokens"] / 1e6 * stats["price_per_million_tokens"]
    )
    assert stats["report_is_stale"] is False


def test_require_valid_dataset(
    upload: Upload, dataset_id: str, account: Account, db_session: Session
) -> None:
    org = account.organization_id
    assert require_valid_dataset(db_session, org, dataset_id).id == dataset_id
    broken = upload(jsonl(chat("a", "b"), "{nope"), name="Broken").json()["id"]
    with pytest.raises(InvalidInput, match=r"'Broken' .* is invalid: 1 of its 2 examples"):
        require_valid_dataset(db_session, org, broken)
    with pytest.raises(NotFound):
        require_valid_dataset(db_session, "another-org", dataset_id)


def _every_endpoint(dataset_id: str, example_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    one = f"{BASE}/{dataset_id}"
    example = f"{one}/examples/{example_id}"
    messages = chat("x", "y")
    return [
        ("GET", one, {}),
        ("PATCH", one, {"json": {"name": "stolen"}}),
        ("DELETE", one, {}),
        ("POST", f"{one}/validate", {"json": {}}),
        ("POST", f"{one}/split", {"json": {"validation_fraction": 0.1, "seed": 1}}),
        ("GET", f"{one}/statistics", {}),
        ("GET", f"{one}/examples", {}),
        ("GET", example, {}),
        ("PATCH", example, {"json": messages}),
        ("DELETE", example, {}),
        ("POST", f"{BASE}/import", {"json": {"dataset_id": dataset_id}}),
    ]


def test_another_organization_gets_404_everywhere(
    client: TestClient, account: Account, other_account: Account, dataset_id: str
) -> None:
    examples = client.get(f"{BASE}/{dataset_id}/examples", headers=account.headers).json()
    example_id = examples["items"][0]["id"]
    for method, url, kwargs in _every_endpoint(dataset_id, example_id):
        response = client.request(method, url, headers=other_account.headers, **kwargs)
        assert response.status_code == 404, (method, url, response.text)
    # Nothing was touched: the owner still sees the same, valid dataset and example.
    owner_view = client.get(f"{BASE}/{dataset_id}", headers=account.headers).json()
    assert (owner_view["name"], owner_view["status"]) == ("My dataset", "valid")
    url = f"{BASE}/{dataset_id}/examples/{example_id}"
    assert client.get(url, headers=account.headers).status_code == 200


def test_an_example_is_only_reachable_through_its_own_dataset(
    client: TestClient, account: Account, upload: Upload, dataset_id: str
) -> None:
    other = upload(valid_jsonl(2), name="Other").json()["id"]
    example_id = client.get(f"{BASE}/{dataset_id}/examples", headers=account.headers).json()[
        "items"
    ][0]["id"]
    url = f"{BASE}/{other}/examples/{example_id}"
    assert client.get(url, headers=account.headers).status_code == 404


def test_every_endpoint_needs_authentication(client: TestClient, dataset_id: str) -> None:
    endpoints = [
        *_every_endpoint(dataset_id, "any"),
        ("GET", BASE, {}),
        ("POST", BASE, {"files": {"file": ("a.jsonl", b"{}")}, "data": {"name": "x"}}),
        ("POST", f"{BASE}/import/preview", {"json": {}}),
    ]
    for method, url, kwargs in endpoints:
        response = client.request(method, url, **kwargs)
        assert response.status_code == 401, (method, url, response.text)
        assert response.json()["error"] == "unauthorized"
