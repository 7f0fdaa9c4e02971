"""SQL for fine-tuned models and their usage; org-owned queries start from the scoping helper."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, Select, case, exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from tuneforge.db.scoping import get_owned, org_scoped
from tuneforge.db.tables.agents import Agent
from tuneforge.db.tables.models import FineTunedModel, ModelStatus, ModelUsage


class utc_day(FunctionElement[date]):  # noqa: N801 - named like the SQL functions it stands for
    """The UTC calendar day of a timestamp column, on every supported backend."""

    type = Date()
    inherit_cache = True
    name = "utc_day"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite stores UTC timestamps as ISO text, so the day is its date part.
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # A literal zone (not a bound parameter) so SELECT and GROUP BY render identically.
    return f"CAST(({compiler.process(element.clauses, **kw)}) AT TIME ZONE 'UTC' AS DATE)"


def get_model(
    session: Session, organization_id: str, model_id: str, *, for_update: bool = False
) -> FineTunedModel:
    return get_owned(
        session,
        FineTunedModel,
        model_id,
        organization_id,
        label="Fine-tuned model",
        for_update=for_update,
    )


def find_model_for_job(
    session: Session, organization_id: str, job_id: str, checkpoint_step: int | None = None
) -> FineTunedModel | None:
    """The job's model (or its model of one checkpoint) even when soft-deleted: a job keeps
    one model per step across deletes."""
    step = FineTunedModel.checkpoint_step
    stmt = org_scoped(FineTunedModel, organization_id, include_deleted=True).where(
        FineTunedModel.job_id == job_id,
        step.is_(None) if checkpoint_step is None else step == checkpoint_step,
    )
    return session.scalars(stmt).first()


def checkpoint_models(session: Session, organization_id: str, job_id: str) -> dict[int, str]:
    stmt = (
        org_scoped(FineTunedModel, organization_id)
        .where(FineTunedModel.job_id == job_id, FineTunedModel.checkpoint_step.is_not(None))
        .with_only_columns(FineTunedModel.checkpoint_step, FineTunedModel.id)
    )
    return {step: model_id for step, model_id in session.execute(stmt)}


def insert_model_unless_job_has_one(session: Session, values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on the job's final model or its checkpoint's, so
    concurrent requests create one row.

    Preferred over SAVEPOINT + IntegrityError: pysqlite's legacy transaction handling lets
    a SAVEPOINT opened before the transaction's first write commit on release.
    """
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    if values.get("checkpoint_step") is None:
        stmt = insert(FineTunedModel).on_conflict_do_nothing(
            index_elements=["job_id"], index_where=FineTunedModel.checkpoint_step.is_(None)
        )
    else:
        stmt = insert(FineTunedModel).on_conflict_do_nothing(
            index_elements=["job_id", "checkpoint_step"]
        )
    session.execute(stmt.values(values))


def _deployed(organization_id: str) -> ColumnElement[bool]:
    return exists().where(
        Agent.fine_tuned_model_id == FineTunedModel.id,
        Agent.organization_id == organization_id,
        Agent.deleted_at.is_(None),
    )


def _count(session: Session, stmt: Select[Any]) -> int:
    subquery = stmt.order_by(None).subquery()
    return session.scalar(select(func.count()).select_from(subquery)) or 0


def list_models(
    session: Session,
    organization_id: str,
    *,
    status: ModelStatus | None,
    deployed: bool | None,
    base_model: str | None,
    limit: int,
    offset: int,
) -> tuple[list[FineTunedModel], int]:
    stmt = org_scoped(FineTunedModel, organization_id)
    if status is not None:
        stmt = stmt.where(FineTunedModel.status == status)
    if deployed is not None:
        is_deployed = _deployed(organization_id)
        stmt = stmt.where(is_deployed if deployed else ~is_deployed)
    if base_model:
        stmt = stmt.where(FineTunedModel.base_model == base_model)
    page = (
        stmt.order_by(FineTunedModel.created_at.desc(), FineTunedModel.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(page)), _count(session, stmt)


def agents_serving(
    session: Session, organization_id: str, model_ids: Sequence[str]
) -> dict[str, list[Agent]]:
    """Live agents per model id, oldest first; every requested id has an entry."""
    grouped: dict[str, list[Agent]] = {model_id: [] for model_id in model_ids}
    if not model_ids:
        return grouped
    stmt = (
        org_scoped(Agent, organization_id)
        .where(Agent.fine_tuned_model_id.in_(model_ids))
        .order_by(Agent.created_at, Agent.id)
    )
    for agent in session.scalars(stmt):
        grouped[agent.fine_tuned_model_id].append(agent)  # type: ignore[index]
    return grouped


@dataclass(frozen=True)
class DailyUsage:
    day: date
    requests: int
    successes: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms_sum: float


def _usage_in_range(
    organization_id: str, model_id: str, start: datetime, end: datetime
) -> Select[Any]:
    return org_scoped(ModelUsage, organization_id).where(
        ModelUsage.model_id == model_id,
        ModelUsage.created_at >= start,
        ModelUsage.created_at < end,
    )


def daily_usage(
    session: Session, organization_id: str, model_id: str, start: datetime, end: datetime
) -> list[DailyUsage]:
    """Usage per UTC day with at least one request in [start, end), oldest first."""
    day = utc_day(ModelUsage.created_at).label("day")
    stmt = (
        _usage_in_range(organization_id, model_id, start, end)
        .with_only_columns(
            day,
            func.count(),
            func.coalesce(func.sum(case((ModelUsage.success, 1), else_=0)), 0),
            func.coalesce(func.sum(ModelUsage.prompt_tokens), 0),
            func.coalesce(func.sum(ModelUsage.completion_tokens), 0),
            func.coalesce(func.sum(ModelUsage.latency_ms), 0.0),
        )
        .group_by(day)
        .order_by(day)
    )
    return [
        DailyUsage(
            day=row[0],
            requests=int(row[1]),
            successes=int(row[2]),
            prompt_tokens=int(row[3]),
            completion_tokens=int(row[4]),
            latency_ms_sum=float(row[5]),
        )
        for row in session.execute(stmt)
    ]


def latency_percentile(
    session: Session,
    organization_id: str,
    model_id: str,
    start: datetime,
    end: datetime,
    *,
    requests: int,
    fraction: float,
) -> float | None:
    """Nearest-rank percentile by ORDER BY + OFFSET, which both backends run alike."""
    if requests <= 0:
        return None
    rank = max(math.ceil(fraction * requests), 1)
    stmt = (
        _usage_in_range(organization_id, model_id, start, end)
        .with_only_columns(ModelUsage.latency_ms)
        .order_by(ModelUsage.latency_ms)
        .offset(rank - 1)
        .limit(1)
    )
    value = session.scalar(stmt)
    return float(value) if value is not None else None
