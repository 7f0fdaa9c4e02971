"""The one place organization scoping lives: every org-owned query goes through here."""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

from sqlalchemy import BindParameter, Select, bindparam, select
from sqlalchemy.orm import Session

from tuneforge.errors import NotFound

T = TypeVar("T")


def org_scoped(
    model: type[T], organization_id: str | BindParameter[str], *, include_deleted: bool = False
) -> Select[Any]:
    """A SELECT of ``model`` rows owned by the organization, hiding soft-deleted ones.

    ``organization_id`` may be a bind parameter, for a statement built once and reused."""
    stmt = select(model).where(model.organization_id == organization_id)  # type: ignore[attr-defined]
    if not include_deleted and hasattr(model, "deleted_at"):
        stmt = stmt.where(model.deleted_at.is_(None))  # type: ignore[attr-defined]
    return stmt


@cache
def _owned(model: type, for_update: bool) -> Select[Any]:
    """Built once per table: most requests read a row by id, and building the statement
    costs more CPU than running it from SQLAlchemy's compiled cache."""
    stmt = org_scoped(model, bindparam("organization_id")).where(
        model.id == bindparam("object_id")  # type: ignore[attr-defined]
    )
    return stmt.with_for_update() if for_update else stmt


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
    params = {"organization_id": organization_id, "object_id": object_id}
    row = session.scalars(_owned(model, for_update), params).first()
    if row is None:
        name = label or model.__name__
        raise NotFound(f"{name} {object_id} not found")
    return row
