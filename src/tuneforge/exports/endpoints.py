"""The exports API: queue an export of a model, follow it, download its file, delete it."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import FileResponse

from tuneforge.auth.deps import PrincipalDep
from tuneforge.bounds import Offset
from tuneforge.db.session import SessionDep
from tuneforge.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    error_responses,
)
from tuneforge.exports import service
from tuneforge.exports.schemas import ExportCreate, ExportDeleted, ExportOut, ExportPage
from tuneforge.state import SettingsDep

router = APIRouter(prefix="/fine-tuning/models/{model_id}/exports", tags=["exports"])

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
SHA256_HEADER = "X-Content-SHA256"


@router.post(
    "",
    summary="Queue an export of the model: adapter, merged model, GGUF or Ollama bundle",
    status_code=status.HTTP_201_CREATED,
    response_model=ExportOut,
    responses=error_responses(Unauthorized, NotFound, Conflict, InvalidInput, ServiceUnavailable),
)
def create_export(
    model_id: str,
    body: ExportCreate,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
) -> ExportOut:
    export = service.create_export(
        session, settings, principal.organization_id, principal.user_id, model_id, body
    )
    return ExportOut.from_row(export)


@router.get(
    "",
    summary="List the model's exports, newest first",
    response_model=ExportPage,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def list_exports(
    model_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    limit: Limit = 20,
    offset: Offset = 0,
) -> ExportPage:
    exports, total = service.list_exports(
        session, principal.organization_id, model_id, limit=limit, offset=offset
    )
    items = [ExportOut.from_row(export) for export in exports]
    return ExportPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{export_id}",
    summary="An export: status, progress, and once written its size and SHA-256",
    response_model=ExportOut,
    responses=error_responses(Unauthorized, NotFound),
)
def get_export(
    model_id: str, export_id: str, principal: PrincipalDep, session: SessionDep
) -> ExportOut:
    export = service.get_export(session, principal.organization_id, model_id, export_id)
    return ExportOut.from_row(export)


@router.get(
    "/{export_id}/download",
    summary="Stream the export's file; its SHA-256 is in X-Content-SHA256 and Repr-Digest",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file."},
        **error_responses(Unauthorized, NotFound, Conflict),
    },
)
def download_export(
    model_id: str,
    export_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
) -> FileResponse:
    found = service.export_file(session, settings, principal.organization_id, model_id, export_id)
    digest = base64.b64encode(bytes.fromhex(found.sha256)).decode()
    return FileResponse(
        found.path,
        media_type="application/octet-stream",
        filename=found.path.name,
        headers={SHA256_HEADER: found.sha256, "Repr-Digest": f"sha-256=:{digest}:"},
    )


@router.delete(
    "/{export_id}",
    summary="Delete an export and its file (refused while a worker writes it)",
    response_model=ExportDeleted,
    responses=error_responses(Unauthorized, NotFound, Conflict),
)
def delete_export(
    model_id: str,
    export_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
) -> ExportDeleted:
    export = service.delete_export(
        session, settings, principal.organization_id, model_id, export_id
    )
    return ExportDeleted(id=export.id)
