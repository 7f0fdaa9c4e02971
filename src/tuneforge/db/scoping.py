"""The one place organization scoping lives: every org-owned query goes through here."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from tuneforge.errors import NotFound

T = TypeVar("T")


def org_scoped(
    model: type[T], organization_id: str, *, include_deleted: bool = False
) -> Select[Any]:
    """A SELECT of ``model`` rows owned by the organization, hiding soft-deleted ones."""
    stmt = select(model).where(model.organization_id == organization_id)  # type: ignore[attr-defined]
    if not include_deleted and hasattr(model, "deleted_at"):
        stmt = stmt.where(model.deleted_at.is_(None))  # type: ignore[attr-defined]
    return stmt


def get_owned(
    session: Session,
    model: type[T],
    object_id: str,
    organization_id: str,
    *,
    label: str | None = None,
    for_update: bool = False,
) -> T:
    """The organization's row by id; anything else (missing, deleted, foreign) is a 404."""
    stmt = org_scoped(model, organization_id).where(model.id == object_id)  # type: ignore[attr-defined]
    if for_update:
        stmt = stmt.with_for_update()
    row = session.scalars(stmt).first()
    if row is None:
        name = label or model.__name__
        raise NotFound(f"{name} {object_id} not found")
    return row
