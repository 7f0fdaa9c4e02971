"""Numbers and dates out of range are a 422 naming the field on every route, never a 500.

Each case was a 500 before: an offset past 64 bits reached SQL, a date at the edge of
datetime's range overflowed when converted to UTC or moved by a day, a seed past 64 bits
reached torch.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tests.fixtures.factories import Ids
from tests.web.conftest import sign_in
from tuneforge.app import create_app
from tuneforge.config import Settings
from tuneforge.inference.calls import InferenceRuntime

HUGE = 2**63
EARLY = "0001-01-01T00:00:00+05:00"
LATE = "9999-12-31T23:59:59-05:00"


def api_cases(ids: Ids) -> list[tuple[str, str, dict | None, str]]:
    """(method, path, JSON body, the field the error names)."""
    lists = [
        "/agents",
        f"/agents/{ids.agent}/conversations",
        "/fine-tuning/datasets",
        f"/fine-tuning/datasets/{ids.dataset}/examples",
        "/fine-tuning/jobs",
        "/fine-tuning/models",
        "/evals",
    ]
    window = {"agent_ids": [ids.agent]}
    return [
        *(("GET", f"{path}?offset={HUGE}", None, "offset") for path in lists),
        ("GET", f"/fine-tuning/jobs/{ids.job}/events?after={HUGE}", None, "after"),
        ("GET", f"/fine-tuning/jobs/{ids.job}/metrics?min_step={HUGE}", None, "min_step"),
        ("GET", f"/fine-tuning/jobs/{ids.job}/metrics?max_step={HUGE}", None, "max_step"),
        (
            "GET",
            f"/fine-tuning/models/{ids.model}/usage?from=9999-12-31&to=9999-12-31",
            None,
            "from",
        ),
        ("GET", f"/fine-tuning/models/{ids.model}/usage?to=0001-01-05", None, "to"),
        ("GET", f"/agents/{ids.agent}/conversations?from={EARLY}", None, "from"),
        ("GET", f"/agents/{ids.agent}/conversations?to={LATE}", None, "to"),
        (
            "POST",
            f"/agents/{ids.agent}/conversations",
            {"messages": [{"role": "user", "content": "hi"}], "started_at": EARLY},
            "started_at",
        ),
        (
            "POST",
            "/fine-tuning/datasets/import/preview",
            {**window, "started_from": LATE},
            "started_from",
        ),
        (
            "POST",
            "/fine-tuning/datasets/import",
            {**window, "name": "x", "started_to": EARLY},
            "started_to",
        ),
    ]


def test_out_of_range_numbers_and_dates_are_422s_naming_the_field(
    client: TestClient, account: Account, ids: Ids
) -> None:
    for method, path, body, field in api_cases(ids):
        response = client.request(method, path, json=body, headers=account.headers)
        assert response.status_code == 422, (path, response.text)
        assert field in response.text, (path, response.text)


@pytest.mark.usefixtures("installed_tiny_model")
@pytest.mark.parametrize("seed", [2**64, -1])
def test_a_seed_out_of_range_is_an_openai_shaped_422(
    client: TestClient, account: Account, seed: int
) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "x"}],
            "seed": seed,
        },
        headers=account.headers,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "seed"


def test_dashboard_lists_and_forms_refuse_out_of_range_input(
    client: TestClient, account: Account, ids: Ids
) -> None:
    dashboard = sign_in(client, account)
    for path in (
        "/dashboard/fine-tuning/datasets",
        "/dashboard/fine-tuning/jobs",
        "/dashboard/fine-tuning/models",
        "/dashboard/fine-tuning/evals",
        "/dashboard/agents",
        f"/dashboard/fine-tuning/datasets/{ids.dataset}/examples",
    ):
        assert dashboard.get(f"{path}?offset={HUGE}").status_code == 422, path
    imported = dashboard.htmx(
        "/dashboard/fine-tuning/datasets/import", {"name": "x", "to": "9999-12-31"}
    )
    assert imported.status_code == 422
    assert "to: must be between the years 1900 and 9000" in imported.text


def test_json_bodies_over_the_limit_are_413s_before_anything_reads_them(
    settings: Settings, account: Account
) -> None:
    small = settings.model_copy(update={"json_body_limit_bytes": 2_000})
    with TestClient(create_app(small)) as client:
        big = {"name": "x" * 3_000, "model": "smollm2-135m-instruct"}
        declared = client.post("/agents", json=big, headers=account.headers)
        assert declared.status_code == 413, declared.text
        assert declared.json()["error"] == "payload_too_large"
        openai_shaped = client.post("/v1/chat/completions", json=big, headers=account.headers)
        assert openai_shaped.status_code == 413
        assert openai_shaped.json()["error"]["code"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:
            yield b'{"name": "'
            yield b"y" * 3_000
            yield b'", "model": "smollm2-135m-instruct"}'

        chunked = client.post(
            "/agents",
            content=chunks(),
            headers={**account.headers, "Content-Type": "application/json"},
        )
        assert chunked.status_code == 413, chunked.text
        fits = client.post(
            "/agents",
            json={"name": "ok", "model": "smollm2-135m-instruct"},
            headers=account.headers,
        )
        assert fits.status_code == 201, fits.text


def test_messages_are_capped_in_characters(client: TestClient, account: Account, ids: Ids) -> None:
    long = {"role": "user", "content": "x" * 200_001}
    logged = client.post(
        f"/agents/{ids.agent}/conversations", json={"messages": [long]}, headers=account.headers
    )
    assert logged.status_code == 422 and "content" in logged.text


@pytest.mark.usefixtures("installed_tiny_model")
def test_a_prompt_far_past_the_context_is_refused_before_tokenizing(
    client: TestClient, account: Account
) -> None:
    messages = [{"role": "user", "content": "word " * 30_000} for _ in range(20)]
    response = client.post(
        "/v1/chat/completions",
        json={"model": "smollm2-135m-instruct", "messages": messages, "max_tokens": 1},
        headers=account.headers,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "messages"
    assert "characters" in response.json()["error"]["message"]  # refused before tokenizing


@pytest.mark.usefixtures("installed_tiny_model")
def test_an_organization_past_its_concurrent_generations_gets_429_with_retry_after(
    settings: Settings, account: Account, other_account: Account
) -> None:
    one_at_a_time = settings.model_copy(update={"inference_concurrency_per_organization": 1})
    ask = {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 2,
    }
    app = create_app(one_at_a_time)
    with TestClient(app) as client:
        slots = app.state.shared(InferenceRuntime).slots
        release = slots.take(account.organization_id)  # a generation already running
        refused = client.post("/v1/chat/completions", json=ask, headers=account.headers)
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "2"
        assert refused.json()["error"]["code"] == "rate_limited"
        streamed = client.post(
            "/v1/chat/completions", json={**ask, "stream": True}, headers=account.headers
        )
        assert streamed.status_code == 429
        others = client.post("/v1/chat/completions", json=ask, headers=other_account.headers)
        assert others.status_code == 200, others.text  # the limit is per organization
        release()
        for stream in (True, False, True):  # each call gives its slot back when it ends
            done = client.post(
                "/v1/chat/completions", json={**ask, "stream": stream}, headers=account.headers
            )
            assert done.status_code == 200, done.text


@pytest.mark.usefixtures("installed_tiny_model")
def test_a_nul_character_anywhere_in_a_json_body_is_a_422_naming_the_field(
    client: TestClient, account: Account, ids: Ids
) -> None:
    cases = [
        ("/agents", {"name": "Bot\x00", "model": "smollm2-135m-instruct"}, "body.name"),
        (
            f"/agents/{ids.agent}/conversations",
            {"messages": [{"role": "user", "content": "hi\x00there"}]},
            "body.messages.0.content",
        ),
    ]
    for path, body, field in cases:
        response = client.post(path, json=body, headers=account.headers)
        assert response.status_code == 422, response.text
        assert response.json()["fields"][0]["field"] == field
    chat = client.post(
        "/v1/chat/completions",
        json={"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "\x00"}]},
        headers=account.headers,
    )
    assert chat.status_code == 422 and chat.json()["error"]["param"] == "messages.0.content"
    assert client.get("/agents", headers=account.headers).json()["total"] == 1  # nothing stored
