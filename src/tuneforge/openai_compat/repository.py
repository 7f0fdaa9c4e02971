"""Cursor pages of the organization's files (datasets) and jobs, OpenAI-style: ``after`` is
the id of the last row seen, and the order is creation time with the id as tie-break."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import Session

from tuneforge.db.scoping import org_scoped
from tuneforge.db.tables.datasets import FineTuningDataset
from tuneforge.db.tables.jobs import FineTuningJob
from tuneforge.errors import InvalidInput

CursorTable = type[FineTuningDataset] | type[FineTuningJob]


def _page(
    session: Session,
    table: CursorTable,
    stmt: Select[Any],
    organization_id: str,
    *,
    after: str | None,
    limit: int,
    newest_first: bool,
) -> tuple[list[Any], bool]:
    key = tuple_(table.created_at, table.id)
    if after is not None:
        cursor = session.execute(
            org_scoped(table, organization_id, include_deleted=True)
            .where(table.id == after)
            .with_only_columns(table.created_at, table.id)
        ).first()
        if cursor is None:
            raise InvalidInput(f"after: no object {after} to page after", field="after")
        stmt = stmt.where(key < tuple_(*cursor) if newest_first else key > tuple_(*cursor))
    order = (
        (table.created_at.desc(), table.id.desc())
        if newest_first
        else (table.created_at.asc(), table.id.asc())
    )
    rows = list(session.scalars(stmt.order_by(*order).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def file_page(
    session: Session, organization_id: str, *, after: str | None, limit: int, newest_first: bool
) -> tuple[list[FineTuningDataset], bool]:
    stmt = org_scoped(FineTuningDataset, organization_id)
    return _page(
        session,
        FineTuningDataset,
        stmt,
        organization_id,
        after=after,
        limit=limit,
        newest_first=newest_first,
    )


def job_page(
    session: Session,
    organization_id: str,
    *,
    after: str | None,
    limit: int,
    metadata: dict[str, str],
) -> tuple[list[FineTuningJob], bool]:
    stmt = org_scoped(FineTuningJob, organization_id)
    for key, value in metadata.items():
        stmt = stmt.where(FineTuningJob.job_metadata[key].as_string() == value)
    return _page(
        session,
        FineTuningJob,
        stmt,
        organization_id,
        after=after,
        limit=limit,
        newest_first=True,
    )
