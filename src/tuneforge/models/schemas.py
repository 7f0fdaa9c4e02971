"""Request and response shapes for fine-tuned models, their usage and the dashboard stats."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneforge.db.tables.models import ModelStatus


class AgentRef(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str | None
    provider: str
    base_model: str
    provider_model_id: str = Field(description="The name the provider serves the model under.")
    status: ModelStatus
    job_id: str
    checkpoint_step: int | None = Field(
        description="The checkpoint's step for a model made from one; null for the job's model."
    )
    dataset_id: str | None
    metrics_summary: dict[str, Any] | None
    deployed_agents: list[AgentRef] = Field(
        default_factory=list, description="Live agents currently answering with this model."
    )
    created_at: datetime
    updated_at: datetime


class ModelPage(BaseModel):
    items: list[ModelOut]
    total: int
    limit: int
    offset: int


class ModelUpdate(BaseModel):
    """Only the fields sent change; ``description`` may be cleared with null."""

    name: str | None = Field(default=None, min_length=1, max_length=300)
    description: str | None = Field(default=None, max_length=10_000)

    @field_validator("name")
    @classmethod
    def reject_null(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("may not be null")
        return value


class DeployRequest(BaseModel):
    agent_id: str = Field(min_length=1, max_length=32)


class UndeployRequest(BaseModel):
    agent_id: str | None = Field(
        default=None, max_length=32, description="One agent; omit to undeploy from every agent."
    )


class ModelDeleted(BaseModel):
    id: str
    deleted: bool = True


class UsageTotals(BaseModel):
    requests: int
    successes: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    avg_latency_ms: float | None = Field(description="Null when there were no requests.")
    p95_latency_ms: float | None = Field(description="Nearest-rank p95; null without requests.")


class UsageDay(BaseModel):
    date: date
    requests: int
    successes: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    avg_latency_ms: float | None


class UsageCost(BaseModel):
    """Costs in USD; null where no price is known rather than a made-up number."""

    currency: str = "USD"
    inference_usd: float | None = Field(description="Inference cost of the requests in range.")
    training_usd: float | None = Field(description="One-time training cost of the model.")
    note: str


class ModelUsageReport(BaseModel):
    model_id: str
    from_date: date
    to_date: date = Field(description="Inclusive.")
    granularity: str
    totals: UsageTotals
    series: list[UsageDay] = Field(description="One entry per day in range, zero-filled.")
    cost: UsageCost


class CountsByStatus(BaseModel):
    total: int
    by_status: dict[str, int]


class ModelCounts(BaseModel):
    total: int
    active: int
    archived: int
    deployed: int = Field(description="Models serving at least one live agent.")


class MonthUsage(BaseModel):
    since: datetime = Field(description="Start of the current UTC month.")
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FineTuningStats(BaseModel):
    datasets: CountsByStatus
    jobs: CountsByStatus
    models: ModelCounts
    trained_tokens: int = Field(description="Tokens processed by training, over every job.")
    usage_this_month: MonthUsage
