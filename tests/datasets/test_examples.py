"""Example rows: paging, edits, re-validation from rows, and the stable train/validation split."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tests.fixtures.files import Upload, chat, jsonl, valid_jsonl
from tuneforge.datasets.ingest import assign_split
from tuneforge.db.tables.datasets import ExampleSplit

BASE = "/fine-tuning/datasets"


def _examples(client: TestClient, account: Account, dataset_id: str, **params: Any) -> dict:
    response = client.get(f"{BASE}/{dataset_id}/examples", headers=account.headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _splits(client: TestClient, account: Account, dataset_id: str) -> dict[int, str]:
    body = _examples(client, account, dataset_id, limit=500)
    return {item["line_number"]: item["split"] for item in body["items"]}


def test_examples_page_in_line_order_with_filters(
    client: TestClient, account: Account, upload: Upload
) -> None:
    lines = [chat(f"q{i}", f"a{i}") for i in range(10)]
    lines[3] = "{broken"  # type: ignore[call-overload]
    dataset = upload(jsonl(*lines), validation_fraction=0.5, split_seed=3).json()
    page = _examples(client, account, dataset["id"], limit=4, offset=2)
    assert page["total"] == 10 and (page["limit"], page["offset"]) == (4, 2)
    assert [item["line_number"] for item in page["items"]] == [3, 4, 5, 6]
    invalid = _examples(client, account, dataset["id"], valid=False)
    assert [(i["line_number"], i["raw_line"]) for i in invalid["items"]] == [(4, "{broken")]
    assert _examples(client, account, dataset["id"], valid=True)["total"] == 9
    validation = _examples(client, account, dataset["id"], split="validation")
    train = _examples(client, account, dataset["id"], split="train")
    assert validation["total"] + train["total"] == 10
    assert {i["split"] for i in validation["items"]} == {"validation"}
    assert (
        client.get(
            f"{BASE}/{dataset['id']}/examples", headers=account.headers, params={"limit": 0}
        ).status_code
        == 422
    )


def test_fixing_a_bad_line_then_validating_makes_the_dataset_valid(
    client: TestClient, account: Account, upload: Upload
) -> None:
    dataset = upload(jsonl(chat("a", "b"), '{"messages": oops}', chat("c", "d"))).json()
    assert dataset["status"] == "invalid"
    [bad] = _examples(client, account, dataset["id"], valid=False)["items"]
    assert bad["line_number"] == 2
    url = f"{BASE}/{dataset['id']}/examples/{bad['id']}"

    still_bad = client.patch(url, headers=account.headers, json={"messages": [{"role": "user"}]})
    assert still_bad.status_code == 200
    assert not still_bad.json()["is_valid"]
    assert {e["code"] for e in still_bad.json()["errors"]} >= {"message_missing_key"}

    fixed = client.patch(url, headers=account.headers, json=chat("fixed?", "yes"))
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["is_valid"] and fixed.json()["raw_line"] is None
    assert fixed.json()["token_count"] > 0
    edited = client.get(f"{BASE}/{dataset['id']}", headers=account.headers).json()
    assert edited["status"] == "uploaded" and edited["valid_examples"] == 3

    validated = client.post(f"{BASE}/{dataset['id']}/validate", headers=account.headers)
    assert validated.status_code == 200, validated.text
    body = validated.json()
    assert body["status"] == "valid"
    assert body["validation_report"]["errors"] == []
    assert body["validation_report"]["total_examples"] == 3


def test_revalidation_keeps_line_numbers_of_unreadable_rows(
    client: TestClient, account: Account, upload: Upload
) -> None:
    dataset = upload(jsonl(chat("a", "b"), chat("c", "d"), "nope", [1])).json()
    first = dataset["validation_report"]["errors"]
    again = client.post(f"{BASE}/{dataset['id']}/validate", headers=account.headers, json={})
    assert again.json()["validation_report"]["errors"] == first
    assert [(e["line"], e["code"]) for e in first] == [(3, "invalid_json"), (4, "data_type")]


def test_deleting_an_example_marks_the_dataset_for_revalidation(
    client: TestClient, account: Account, upload: Upload
) -> None:
    dataset = upload(jsonl(chat("a", "b"), "bad line", chat("c", "d"))).json()
    [bad] = _examples(client, account, dataset["id"], valid=False)["items"]
    url = f"{BASE}/{dataset['id']}/examples/{bad['id']}"
    assert client.delete(url, headers=account.headers).status_code == 204
    assert client.get(url, headers=account.headers).status_code == 404
    after = client.get(f"{BASE}/{dataset['id']}", headers=account.headers).json()
    assert (after["status"], after["total_examples"]) == ("uploaded", 2)
    validated = client.post(f"{BASE}/{dataset['id']}/validate", headers=account.headers).json()
    assert validated["status"] == "valid" and validated["total_examples"] == 2


def test_validate_against_another_model(
    client: TestClient, account: Account, dataset_id: str
) -> None:
    url = f"{BASE}/{dataset_id}/validate"
    body = client.post(url, headers=account.headers, json={"model": "gpt-3.5-turbo-0125"}).json()
    assert body["target_model"] == "gpt-3.5-turbo-0125"
    assert body["validation_report"]["tokenizer"] == "cl100k_base"
    unknown = client.post(url, headers=account.headers, json={"model": "gpt-99"})
    assert unknown.status_code == 422 and unknown.json()["field"] == "model"
    kept = client.get(f"{BASE}/{dataset_id}", headers=account.headers).json()
    assert kept["target_model"] == "gpt-3.5-turbo-0125" and kept["status"] == "valid"


def test_invalid_example_edit_is_422_and_changes_nothing(
    client: TestClient, account: Account, dataset_id: str
) -> None:
    example = _examples(client, account, dataset_id, limit=1)["items"][0]
    url = f"{BASE}/{dataset_id}/examples/{example['id']}"
    for body in ({"messages": []}, {"messages": "hi"}, {"messages": [{}], "colour": 1}):
        assert client.patch(url, headers=account.headers, json=body).status_code == 422
    assert client.get(url, headers=account.headers).json() == example
    status = client.get(f"{BASE}/{dataset_id}", headers=account.headers).json()["status"]
    assert status == "valid"


def test_weighted_and_tool_examples_are_editable(
    client: TestClient, account: Account, dataset_id: str
) -> None:
    example = _examples(client, account, dataset_id, limit=1)["items"][0]
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me check.", "weight": 0},
        {"role": "assistant", "content": "Sunny."},
    ]
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    url = f"{BASE}/{dataset_id}/examples/{example['id']}"
    body = client.patch(url, headers=account.headers, json={"messages": messages, "tools": tools})
    assert body.status_code == 200, body.text
    assert body.json()["messages"][1]["weight"] == 0 and body.json()["tools"] == tools
    assert body.json()["is_valid"]
    untooled = client.patch(url, headers=account.headers, json={"tools": None}).json()
    assert untooled["tools"] is None and untooled["messages"] == messages
    for bad in ({}, {"messages": None}, {"tools": "all"}):
        assert client.patch(url, headers=account.headers, json=bad).status_code == 422


def test_split_is_stable_for_a_seed(client: TestClient, account: Account, upload: Upload) -> None:
    content = valid_jsonl(200)
    first = upload(content, validation_fraction=0.2, split_seed=11).json()
    second = upload(content, validation_fraction=0.2, split_seed=11).json()
    other_seed = upload(content, validation_fraction=0.2, split_seed=12).json()
    splits = _splits(client, account, first["id"])
    assert splits == _splits(client, account, second["id"])
    assert splits != _splits(client, account, other_seed["id"])
    held_out = sum(split == "validation" for split in splits.values())
    assert 20 <= held_out <= 60
    assert first["validation_examples"] == held_out
    assert all(assign_split(line, 0.2, 11) is ExampleSplit(split) for line, split in splits.items())


def test_split_endpoint_reassigns_and_reports_overlap(
    client: TestClient, account: Account, upload: Upload
) -> None:
    repeated = [chat("same question", "same answer")] * 40
    dataset = upload(jsonl(*repeated, *(chat(f"q{i}", f"a{i}") for i in range(40)))).json()
    assert dataset["validation_examples"] == 0
    url = f"{BASE}/{dataset['id']}/split"
    body = client.post(url, headers=account.headers, json={"validation_fraction": 0.3, "seed": 5})
    assert body.status_code == 200, body.text
    resplit = body.json()
    assert (resplit["validation_fraction"], resplit["split_seed"]) == (0.3, 5)
    assert resplit["validation_examples"] > 0
    assert resplit["validation_report"]["train_validation_overlap"] > 0
    splits = _splits(client, account, dataset["id"])
    assert all(assign_split(line, 0.3, 5) is ExampleSplit(s) for line, s in splits.items())
    too_big = client.post(url, headers=account.headers, json={"validation_fraction": 0.7})
    assert too_big.status_code == 422
    back = client.post(url, headers=account.headers, json={"validation_fraction": 0}).json()
    assert back["validation_examples"] == 0
    assert set(_splits(client, account, dataset["id"]).values()) == {"train"}
