"""Per-request usage of fine-tuned models and the daily report built from it.

Inference records one row per call; reports aggregate those rows by UTC day in SQL and
fill the days without traffic here, so a chart gets one point per day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.tables.models import FineTunedModel, ModelUsage
from tuneforge.errors import InvalidInput
from tuneforge.models import repository
from tuneforge.models.repository import DailyUsage
from tuneforge.models.schemas import ModelUsageReport, UsageCost, UsageDay, UsageTotals
from tuneforge.providers.catalog import training_cost_usd, training_price_per_million
from tuneforge.providers.registry import get_provider

DEFAULT_RANGE_DAYS = 30
MAX_RANGE_DAYS = 366
P95 = 0.95


def record_usage(
    session: Session,
    *,
    organization_id: str,
    model_id: str,
    agent_id: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    latency_ms: float,
    success: bool,
) -> ModelUsage:
    """Log one inference call; ids must come from org-scoped reads the caller already did."""
    if prompt_tokens < 0 or completion_tokens < 0 or latency_ms < 0:
        raise InvalidInput("Token counts and latency cannot be negative")
    usage = ModelUsage(
        organization_id=organization_id,
        model_id=model_id,
        agent_id=agent_id,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_ms=latency_ms,
        success=success,
    )
    session.add(usage)
    return usage


def usage_report(
    session: Session,
    organization_id: str,
    model_id: str,
    *,
    from_date: date | None,
    to_date: date | None,
    settings: Settings,
) -> ModelUsageReport:
    """Totals and a zero-filled daily series over [from_date, to_date], both inclusive.

    Without dates the report covers the last 30 days up to today (UTC).
    """
    model = repository.get_model(session, organization_id, model_id)
    to_date = to_date or utcnow().date()
    from_date = from_date or to_date - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if from_date > to_date:
        raise InvalidInput("from must not be after to", field="from")
    if (to_date - from_date).days + 1 > MAX_RANGE_DAYS:
        raise InvalidInput(f"A usage report covers at most {MAX_RANGE_DAYS} days", field="from")
    start = datetime.combine(from_date, time(), tzinfo=UTC)
    end = datetime.combine(to_date + timedelta(days=1), time(), tzinfo=UTC)

    by_day = {
        row.day: row
        for row in repository.daily_usage(session, organization_id, model.id, start, end)
    }
    days = [from_date + timedelta(days=n) for n in range((to_date - from_date).days + 1)]
    series = [_usage_day(day, by_day.get(day)) for day in days]

    requests = sum(row.requests for row in by_day.values())
    successes = sum(row.successes for row in by_day.values())
    prompt_tokens = sum(row.prompt_tokens for row in by_day.values())
    completion_tokens = sum(row.completion_tokens for row in by_day.values())
    latency_sum = sum(row.latency_ms_sum for row in by_day.values())
    totals = UsageTotals(
        requests=requests,
        successes=successes,
        errors=requests - successes,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        avg_latency_ms=latency_sum / requests if requests else None,
        p95_latency_ms=repository.latency_percentile(
            session, organization_id, model.id, start, end, requests=requests, fraction=P95
        ),
    )
    return ModelUsageReport(
        model_id=model.id,
        from_date=from_date,
        to_date=to_date,
        granularity="day",
        totals=totals,
        series=series,
        cost=_cost(model, settings),
    )


def _usage_day(day: date, row: DailyUsage | None) -> UsageDay:
    if row is None:
        row = DailyUsage(
            day, requests=0, successes=0, prompt_tokens=0, completion_tokens=0, latency_ms_sum=0.0
        )
    return UsageDay(
        date=day,
        requests=row.requests,
        successes=row.successes,
        errors=row.requests - row.successes,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        avg_latency_ms=row.latency_ms_sum / row.requests if row.requests else None,
    )


def _cost(model: FineTunedModel, settings: Settings) -> UsageCost:
    """Models served here run on the operator's hardware: no per-token bill to report."""
    if get_provider(model.provider, settings).serves_models_here:
        return UsageCost(
            inference_usd=0.0,
            training_usd=0.0,
            note="Local model: trained and served on your own hardware, no per-token charges.",
        )
    trained_tokens = (model.metrics_summary or {}).get("trained_tokens")
    price = training_price_per_million(model.base_model, settings)
    training_usd = None if trained_tokens is None else training_cost_usd(trained_tokens, price)
    if training_usd is None:
        training_note = f"No training price is configured for {model.base_model}."
    else:
        training_note = "Training cost uses the configured price per million training tokens."
    return UsageCost(
        inference_usd=None,
        training_usd=training_usd,
        note=f"No inference price is configured for {model.provider} models, so inference "
        f"cost is unknown. {training_note}",
    )
