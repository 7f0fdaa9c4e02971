"""SQL for datasets and their example rows; every org-owned query starts from ``org_scoped``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Row, Select, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from tuneforge.db.scoping import get_owned, org_scoped
from tuneforge.db.tables.datasets import (
    DatasetFormat,
    DatasetStatus,
    ExampleSplit,
    FineTuningDataset,
    TrainingExample,
)
from tuneforge.errors import NotFound

# Columns re-validation reads; selecting columns, not entities, keeps the identity map empty.
_VALIDATION_COLUMNS = (
    TrainingExample.id,
    TrainingExample.line_number,
    TrainingExample.messages,
    TrainingExample.tools,
    TrainingExample.raw_line,
    TrainingExample.errors,
    TrainingExample.split,
    TrainingExample.is_valid,
    TrainingExample.token_count,
    TrainingExample.assistant_token_count,
)


def _count(session: Session, stmt: Select[Any]) -> int:
    subquery = stmt.order_by(None).subquery()
    return session.scalar(select(func.count()).select_from(subquery)) or 0


def get_dataset(
    session: Session, organization_id: str, dataset_id: str, *, for_update: bool = False
) -> FineTuningDataset:
    return get_owned(
        session,
        FineTuningDataset,
        dataset_id,
        organization_id,
        label="Dataset",
        for_update=for_update,
    )


def list_datasets(
    session: Session,
    organization_id: str,
    *,
    status: DatasetStatus | None,
    fmt: DatasetFormat | None,
    name_contains: str | None,
    limit: int,
    offset: int,
) -> tuple[list[FineTuningDataset], int]:
    stmt = org_scoped(FineTuningDataset, organization_id)
    if status is not None:
        stmt = stmt.where(FineTuningDataset.status == status)
    if fmt is not None:
        stmt = stmt.where(FineTuningDataset.format == fmt)
    if name_contains:
        stmt = stmt.where(
            func.lower(FineTuningDataset.name).contains(name_contains.lower(), autoescape=True)
        )
    page = (
        stmt.order_by(FineTuningDataset.created_at.desc(), FineTuningDataset.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(page)), _count(session, stmt)


def insert_examples(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """One executemany INSERT for a batch of example rows (no ORM objects kept)."""
    if rows:
        session.execute(insert(TrainingExample), list(rows))


def update_examples(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """One executemany UPDATE by primary key for a batch of example rows."""
    if rows:
        session.execute(update(TrainingExample), list(rows))


def iter_example_batches(
    session: Session, dataset_id: str, batch_size: int
) -> Iterator[Sequence[Row[Any]]]:
    """The dataset's rows in line order, ``batch_size`` at a time by keyset pagination.

    Each batch is a fresh query, so callers may update the rows of a batch before the next.
    """
    after: tuple[int, str] | None = None
    while True:
        stmt = select(*_VALIDATION_COLUMNS).where(TrainingExample.dataset_id == dataset_id)
        if after is not None:
            stmt = stmt.where(tuple_(TrainingExample.line_number, TrainingExample.id) > after)
        stmt = stmt.order_by(TrainingExample.line_number, TrainingExample.id).limit(batch_size)
        batch = session.execute(stmt).all()
        if not batch:
            return
        yield batch
        after = (batch[-1].line_number, batch[-1].id)


def max_line_number(session: Session, dataset_id: str) -> int:
    stmt = select(func.max(TrainingExample.line_number)).where(
        TrainingExample.dataset_id == dataset_id
    )
    return session.scalar(stmt) or 0


def _examples_of(organization_id: str, dataset_id: str) -> Select[Any]:
    return org_scoped(TrainingExample, organization_id).where(
        TrainingExample.dataset_id == dataset_id
    )


def list_examples(
    session: Session,
    organization_id: str,
    dataset_id: str,
    *,
    split: ExampleSplit | None,
    valid: bool | None,
    limit: int,
    offset: int,
) -> tuple[list[TrainingExample], int]:
    stmt = _examples_of(organization_id, dataset_id)
    if split is not None:
        stmt = stmt.where(TrainingExample.split == split)
    if valid is not None:
        stmt = stmt.where(TrainingExample.is_valid.is_(valid))
    page = (
        stmt.order_by(TrainingExample.line_number, TrainingExample.id).limit(limit).offset(offset)
    )
    return list(session.scalars(page)), _count(session, stmt)


def get_example(
    session: Session, organization_id: str, dataset_id: str, example_id: str
) -> TrainingExample:
    """The example, if it belongs to this dataset of this organization; a 404 otherwise."""
    stmt = _examples_of(organization_id, dataset_id).where(TrainingExample.id == example_id)
    example = session.scalars(stmt).first()
    if example is None:
        raise NotFound(f"Example {example_id} not found")
    return example
