"""SQL for model exports; every query of the organization's exports starts from scoping."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneforge.db.scoping import org_scoped
from tuneforge.db.tables.exports import ModelExport
from tuneforge.errors import NotFound


def get_export(
    session: Session,
    organization_id: str,
    model_id: str,
    export_id: str,
    *,
    for_update: bool = False,
) -> ModelExport:
    """The model's export; another model's or organization's is a 404 like a missing one."""
    stmt = org_scoped(ModelExport, organization_id).where(
        ModelExport.id == export_id, ModelExport.model_id == model_id
    )
    export = session.scalars(stmt.with_for_update() if for_update else stmt).first()
    if export is None:
        raise NotFound(f"Export {export_id} of model {model_id} not found")
    return export


def list_exports(
    session: Session, organization_id: str, model_id: str, *, limit: int, offset: int
) -> tuple[list[ModelExport], int]:
    stmt = org_scoped(ModelExport, organization_id).where(ModelExport.model_id == model_id)
    page = (
        stmt.order_by(ModelExport.created_at.desc(), ModelExport.id.desc())
        .limit(limit)
        .offset(offset)
    )
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    return list(session.scalars(page)), total
