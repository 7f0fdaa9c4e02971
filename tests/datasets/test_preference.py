"""Preference pairs (OpenAI's DPO format): checks, the report, storage, export and edits."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.fixtures.api import Account
from tests.fixtures.files import Upload, chat, jsonl
from tuneforge.datasets.checks import validate_preference_example
from tuneforge.datasets.export import iter_example_lines
from tuneforge.datasets.parsing import RawExample
from tuneforge.datasets.tokens import BpeTokenCounter, count_chat_tokens
from tuneforge.datasets.validation import ReportBuilder
from tuneforge.providers.contract import BaseModelInfo

BASE = "/fine-tuning/datasets"
MODEL = BaseModelInfo("test-model", "openai", 65_536, "o200k_base")
SYSTEM = {"role": "system", "content": "Answer as Tuna Support."}


def pair(question: str, preferred: str, other: str, **extra: Any) -> dict[str, Any]:
    return {
        "input": {"messages": [SYSTEM, {"role": "user", "content": question}]},
        "preferred_output": [{"role": "assistant", "content": preferred}],
        "non_preferred_output": [{"role": "assistant", "content": other}],
        **extra,
    }


def codes(issues: list[dict[str, Any]]) -> list[str]:
    return [issue["code"] for issue in issues]


def test_a_well_formed_pair_passes_and_each_fault_is_named() -> None:
    assert validate_preference_example(pair("Hi?", "Happy to help!", "Hi.")) == (
        [],
        [],
    )
    bad_reply = pair("Hi?", "Sure.", "No.")
    bad_reply["preferred_output"] = [{"role": "user", "content": "Sure."}]
    two_replies = pair("Hi?", "Sure.", "No.")
    two_replies["non_preferred_output"] *= 2
    no_prompt = pair("Hi?", "Sure.", "No.")
    no_prompt["input"] = {"messages": []}
    weighted = pair("Hi?", "Sure.", "No.")
    weighted["input"]["messages"].append({"role": "assistant", "content": "x", "weight": 1})

    errors, _ = validate_preference_example(bad_reply)
    assert codes(errors) == ["invalid_output"]
    assert errors[0]["message"].startswith("preferred_output:")
    assert codes(validate_preference_example(two_replies)[0]) == ["invalid_output"]
    assert codes(validate_preference_example(no_prompt)[0]) == ["missing_input"]
    assert codes(validate_preference_example(weighted)[0]) == ["invalid_weight"]
    assert codes(validate_preference_example(pair("Hi?", "Same.", "Same."))[0]) == [
        "identical_outputs"
    ]
    assert codes(validate_preference_example(pair("Hi?", "A.", "B.", metadata={}))[0]) == [
        "unrecognized_key"
    ]
    ignored = pair("Hi?", "A.", "B.")
    ignored["input"]["parallel_tool_calls"] = True
    assert codes(validate_preference_example(ignored)[1]) == ["ignored_field"]


def test_the_report_counts_prompt_and_both_replies_and_names_the_kind() -> None:
    counter = BpeTokenCounter("o200k_base")
    builder = ReportBuilder(model=MODEL, counter=counter, price_per_million=None)
    lines = [
        pair(f"Question {i}?", f"Happy to help! Answer {i}.", f"Answer {i}.") for i in range(3)
    ]
    for number, line in enumerate(lines, 1):
        result = builder.add(RawExample(number, line, None, None))
        assert result.is_valid

    report = builder.finish()

    assert report.kind == "preference" and report.is_valid
    prompt, _ = count_chat_tokens(counter, lines[0]["input"]["messages"], None)
    assert report.prompt_tokens_per_example is not None
    assert report.prompt_tokens_per_example.min == prompt
    assert report.preferred_tokens_per_example is not None
    assert report.non_preferred_tokens_per_example is not None
    preferred = report.preferred_tokens_per_example.min
    other = report.non_preferred_tokens_per_example.min
    assert preferred > other > 0
    # What training reads: the prompt once with each reply.
    assert report.tokens_per_example is not None
    assert report.tokens_per_example.min == 2 * prompt + preferred + other


def test_a_pair_over_the_context_is_a_truncation_warning() -> None:
    small = BaseModelInfo("small", "openai", 64, "o200k_base")
    builder = ReportBuilder(
        model=small, counter=BpeTokenCounter("o200k_base"), price_per_million=None
    )
    result = builder.add(RawExample(1, pair("Hi?", "word " * 80, "No."), None, None))

    assert result.is_valid
    assert codes(result.warnings) == ["over_context_length"]
    assert builder.finish().over_context_limit.count == 1


def test_upload_of_pairs_is_a_preference_dataset_with_duplicates_found(
    upload: Upload, client: TestClient, account: Account, db_session: Session
) -> None:
    first = pair("Where is my refund?", "Happy to help! Soon. — Tuna Support", "Soon.")
    response = upload(
        jsonl(first, pair("Can I move it?", "Happy to help! Yes.", "Yes."), first),
        filename="pairs.jsonl",
    )

    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["kind"] == "preference" and dataset["status"] == "valid"
    report = dataset["validation_report"]
    assert report["kind"] == "preference"
    assert report["exact_duplicates"]["pairs"] == [{"line": 3, "duplicate_of": 1}]
    rows = client.get(f"{BASE}/{dataset['id']}/examples", headers=account.headers).json()
    assert rows["items"][0]["messages"] == first["input"]["messages"]
    assert rows["items"][0]["preferred_output"] == first["preferred_output"]
    assert rows["items"][0]["non_preferred_output"] == first["non_preferred_output"]
    # A job's file is the DPO format again, line for line.
    exported = [json.loads(line) for line in iter_example_lines(db_session, dataset["id"], None)]
    assert exported == [first, pair("Can I move it?", "Happy to help! Yes.", "Yes."), first]


def test_errors_name_their_lines_and_a_mixed_file_is_invalid(
    upload: Upload, client: TestClient, account: Account
) -> None:
    broken = pair("Hi?", "A.", "B.")
    del broken["non_preferred_output"]
    response = upload(
        jsonl(
            pair("Hi?", "Happy to help!", "Hi."),
            broken,
            chat("Question?", "Answer."),
            pair("Bye?", "Goodbye!", "Bye."),
        ),
        filename="pairs.jsonl",
    )

    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["status"] == "invalid" and dataset["kind"] == "preference"
    report = dataset["validation_report"]
    by_line = {(e["line"], e["code"]) for e in report["errors"]}
    assert (2, "invalid_output") in by_line
    assert (3, "mixed_kinds") in by_line
    assert report["error_counts"]["mixed_kinds"] == 1
    # The line whose reply was missing keeps its text and its error after re-validation.
    again = client.post(f"{BASE}/{dataset['id']}/validate", headers=account.headers, json={})
    assert again.status_code == 200, again.text
    errors = {(e["line"], e["code"]) for e in again.json()["validation_report"]["errors"]}
    assert errors == by_line


def test_a_pair_can_be_edited_and_a_chat_example_cannot_take_replies(
    upload: Upload, client: TestClient, account: Account
) -> None:
    pairs = upload(jsonl(pair("Hi?", "Happy to help!", "Hi.")), filename="p.jsonl").json()
    example = client.get(f"{BASE}/{pairs['id']}/examples", headers=account.headers).json()
    example_id = example["items"][0]["id"]
    url = f"{BASE}/{pairs['id']}/examples/{example_id}"

    same = client.patch(
        url,
        headers=account.headers,
        json={"non_preferred_output": [{"role": "assistant", "content": "Happy to help!"}]},
    )
    assert same.status_code == 200, same.text
    assert [e["code"] for e in same.json()["errors"]] == ["identical_outputs"]
    fixed = client.patch(
        url,
        headers=account.headers,
        json={"non_preferred_output": [{"role": "assistant", "content": "Whatever."}]},
    )
    assert fixed.json()["is_valid"] is True

    chats = upload(jsonl(chat("Q?", "A.")), filename="c.jsonl").json()
    chat_rows = client.get(f"{BASE}/{chats['id']}/examples", headers=account.headers).json()
    refused = client.patch(
        f"{BASE}/{chats['id']}/examples/{chat_rows['items'][0]['id']}",
        headers=account.headers,
        json={"preferred_output": [{"role": "assistant", "content": "A!"}]},
    )
    assert refused.status_code == 422
    assert refused.json()["field"] == "preferred_output"
