from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.fixtures.api import Account
from tests.fixtures.factories import Factories
from tuneforge.errors import InvalidInput
from tuneforge.models.usage import record_usage

MODELS = "/fine-tuning/models"


def at(day: int, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


def test_usage_report_zero_fills_days_and_totals_the_range(
    client: TestClient, factories: Factories, account: Account, other_account: Account
) -> None:
    org = account.organization_id
    model = factories.model(org)
    agent = factories.agent(org)
    factories.usage(org, model.id, created_at=at(1, 0, 0, 0), agent_id=agent.id)
    factories.usage(org, model.id, created_at=at(1, 18), latency_ms=300.0, success=False)
    factories.usage(
        org,
        model.id,
        created_at=at(4, 23, 59, 59),
        prompt_tokens=20,
        completion_tokens=10,
        latency_ms=200.0,
    )
    factories.usage(org, model.id, created_at=at(1) - timedelta(days=1))  # before the range
    factories.usage(org, model.id, created_at=at(5, 0, 0, 0))  # after it
    factories.usage(org, factories.model(org).id, created_at=at(2))  # another model
    theirs = factories.model(other_account.organization_id)
    factories.usage(other_account.organization_id, theirs.id, created_at=at(2))

    response = client.get(
        f"{MODELS}/{model.id}/usage",
        params={"from": "2026-03-01", "to": "2026-03-04", "granularity": "day"},
        headers=account.headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["from_date"], body["to_date"], body["granularity"]) == (
        "2026-03-01",
        "2026-03-04",
        "day",
    )
    series = body["series"]
    assert [day["date"] for day in series] == [f"2026-03-0{d}" for d in (1, 2, 3, 4)]
    assert [day["requests"] for day in series] == [2, 0, 0, 1]
    assert [day["errors"] for day in series] == [1, 0, 0, 0]
    assert [day["prompt_tokens"] for day in series] == [20, 0, 0, 20]
    assert [day["avg_latency_ms"] for day in series] == [200.0, None, None, 200.0]
    assert body["totals"] == {
        "requests": 3,
        "successes": 2,
        "errors": 1,
        "prompt_tokens": 40,
        "completion_tokens": 20,
        "total_tokens": 60,
        "avg_latency_ms": pytest.approx(200.0),
        "p95_latency_ms": 300.0,
    }
    assert body["cost"]["inference_usd"] == 0.0
    assert body["cost"]["training_usd"] == 0.0


def test_empty_range_reports_zeros(
    client: TestClient, factories: Factories, account: Account
) -> None:
    model = factories.model(account.organization_id)

    body = client.get(
        f"{MODELS}/{model.id}/usage",
        params={"from": "2026-02-27", "to": "2026-03-02"},
        headers=account.headers,
    ).json()

    assert len(body["series"]) == 4  # across the end of February
    assert body["totals"]["requests"] == 0
    assert body["totals"]["avg_latency_ms"] is None
    assert body["totals"]["p95_latency_ms"] is None


def test_recorded_usage_shows_up_today_by_default(
    client: TestClient, db_session: Session, factories: Factories, account: Account
) -> None:
    model = factories.model(account.organization_id)
    for success in (True, True, False):
        record_usage(
            db_session,
            organization_id=account.organization_id,
            model_id=model.id,
            agent_id=None,
            prompt_tokens=7,
            completion_tokens=3,
            latency_ms=50.0,
            success=success,
        )
    db_session.commit()

    body = client.get(f"{MODELS}/{model.id}/usage", headers=account.headers).json()

    assert len(body["series"]) == 30
    assert body["series"][-1]["date"] == datetime.now(UTC).date().isoformat()
    assert body["series"][-1]["requests"] == 3
    assert body["totals"]["successes"] == 2
    assert body["totals"]["total_tokens"] == 30


def test_record_usage_rejects_negative_counts(
    db_session: Session, factories: Factories, account: Account
) -> None:
    model = factories.model(account.organization_id)

    with pytest.raises(InvalidInput):
        record_usage(
            db_session,
            organization_id=account.organization_id,
            model_id=model.id,
            agent_id=None,
            prompt_tokens=-1,
            completion_tokens=0,
            latency_ms=1.0,
            success=True,
        )


def test_training_cost_uses_the_price_table_and_inference_cost_stays_unknown(
    client: TestClient, factories: Factories, account: Account
) -> None:
    job = factories.succeeded_job(
        account.organization_id, provider="openai", base_model="gpt-4o-mini-2024-07-18"
    )
    priced = factories.model(account.organization_id, job=job)
    unpriced = factories.model(
        account.organization_id,
        job=factories.succeeded_job(account.organization_id, provider="openai", base_model="x"),
    )

    cost = client.get(f"{MODELS}/{priced.id}/usage", headers=account.headers).json()["cost"]
    assert cost["training_usd"] == pytest.approx(12_345 * 3.0 / 1_000_000)
    assert cost["inference_usd"] is None
    assert cost["currency"] == "USD"
    cost = client.get(f"{MODELS}/{unpriced.id}/usage", headers=account.headers).json()["cost"]
    assert (cost["training_usd"], cost["inference_usd"]) == (None, None)
    assert "x" in cost["note"]


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-03-05", "to": "2026-03-01"},
        {"from": "2025-01-01", "to": "2026-03-01"},
        {"granularity": "hour"},
        {"from": "not-a-date"},
    ],
)
def test_bad_ranges_are_rejected(
    client: TestClient, factories: Factories, account: Account, params: dict[str, str]
) -> None:
    model = factories.model(account.organization_id)

    response = client.get(f"{MODELS}/{model.id}/usage", params=params, headers=account.headers)

    assert response.status_code == 422, response.text
