"""OpenAI's ``/v1/files`` and ``/v1/fine_tuning/jobs``, as the official SDK calls them.

Point the SDK's ``base_url`` at ``<server>/v1`` and use a TuneForge API key: the same calls
upload a fine-tune file (a TuneForge dataset) and create, watch, pause, resume and cancel a
job (a TuneForge job) that trains here. Errors come in OpenAI's shape, lists page with
``after`` cursors.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from tuneforge.auth.deps import BriefPrincipalDep, PrincipalDep
from tuneforge.datasets import ingest
from tuneforge.db.session import SessionDep, request_unit_of_work
from tuneforge.errors import (
    BadRequest,
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from tuneforge.jobs import service as jobs_service
from tuneforge.jobs.endpoints import METADATA_FILTER_DOC, metadata_filter
from tuneforge.jobs.schemas import ObjectId
from tuneforge.openai_compat import service
from tuneforge.openai_compat.schemas import (
    CheckpointList,
    FileDeleted,
    FileId,
    FileList,
    FileObject,
    FineTuningJobCreate,
    FineTuningJobList,
    FineTuningJobObject,
    JobEventList,
)
from tuneforge.openai_errors import OpenAIErrorRoute, openai_error_responses
from tuneforge.state import SettingsDep, app_state

router = APIRouter(prefix="/v1", tags=["openai-fine-tuning"], route_class=OpenAIErrorRoute)

Cursor = Annotated[
    str | None, Query(min_length=1, max_length=40, description="The last id of the page before.")
]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
FileLimit = Annotated[int, Query(ge=1, le=10_000, description="Page size.")]
READ_ERRORS = openai_error_responses(Unauthorized, NotFound, InvalidInput)
WRITE_ERRORS = openai_error_responses(Unauthorized, NotFound, BadRequest, InvalidInput, Conflict)


@router.post(
    "/files",
    summary="Upload a fine-tune file: it is stored and validated as a dataset",
    description=(
        "Multipart `file` plus `purpose`, which must be `fine-tune`. The file object's "
        "`status` is `processed` when every line is valid, else `error` with the first "
        "errors by line in `status_details`; the dataset and its report are in the dashboard."
    ),
    response_model=FileObject,
    responses=openai_error_responses(
        Unauthorized, BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMediaType
    ),
)
async def upload_file(request: Request, principal: BriefPrincipalDep) -> FileObject:
    state = app_state(request)
    settings = state.settings
    upload = await ingest.receive_upload(
        request.headers.get("content-type"),
        request.headers.get("content-length"),
        request.stream(),
        settings,
    )
    async with request_unit_of_work(state, read_only=False) as session:
        dataset = await run_in_threadpool(
            service.upload_file,
            session,
            settings,
            principal.organization_id,
            principal.user_id,
            upload,
        )
        return service.file_object(dataset)


@router.get(
    "/files",
    summary="List the organization's files",
    response_model=FileList,
    responses=READ_ERRORS,
)
def list_files(
    principal: PrincipalDep,
    session: SessionDep,
    after: Cursor = None,
    limit: FileLimit = 10_000,
    order: Literal["asc", "desc"] = "desc",
    purpose: Annotated[str | None, Query(max_length=40)] = None,
) -> FileList:
    datasets, has_more = service.list_files(
        session,
        principal.organization_id,
        after=after,
        limit=limit,
        newest_first=order == "desc",
        purpose=purpose,
    )
    data = [service.file_object(d) for d in datasets]
    return FileList(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/files/{file_id}", summary="A file", response_model=FileObject, responses=READ_ERRORS)
def retrieve_file(file_id: FileId, principal: PrincipalDep, session: SessionDep) -> FileObject:
    return service.retrieve_file(session, principal.organization_id, file_id)


@router.delete(
    "/files/{file_id}",
    summary="Delete a file (its dataset is soft-deleted; jobs that used it keep it)",
    response_model=FileDeleted,
    responses=READ_ERRORS,
)
def delete_file(file_id: FileId, principal: PrincipalDep, session: SessionDep) -> FileDeleted:
    service.delete_file(session, principal.organization_id, file_id)
    return FileDeleted(id=file_id, deleted=True)


@router.get(
    "/files/{file_id}/content",
    summary="The file's bytes as uploaded",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}} | READ_ERRORS,
)
def file_content(
    file_id: FileId, principal: PrincipalDep, session: SessionDep
) -> StreamingResponse:
    chunks = service.file_content(session, principal.organization_id, file_id)
    return StreamingResponse(chunks, media_type="application/octet-stream")


@router.post(
    "/fine_tuning/jobs",
    summary="Create a fine-tuning job on a fine-tune file; a worker trains it here",
    description=(
        "OpenAI's request: `model` (a local base model), `training_file`, `validation_file`, "
        "`suffix`, `seed`, `metadata` and `method` `{type: supervised, supervised: "
        "{hyperparameters}}` (or the deprecated top-level `hyperparameters`); values may be "
        '`"auto"`. `dpo` and `reinforcement` are refused until TuneForge trains them.'
    ),
    response_model=FineTuningJobObject,
    responses=WRITE_ERRORS,
)
def create_job(
    body: FineTuningJobCreate, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> FineTuningJobObject:
    job = service.create_job(session, settings, principal.organization_id, principal.user_id, body)
    return service.describe(session, principal.organization_id, job)


@router.get(
    "/fine_tuning/jobs",
    summary="List the organization's jobs, newest first",
    response_model=FineTuningJobList,
    responses=READ_ERRORS,
    openapi_extra=METADATA_FILTER_DOC,
)
def list_jobs(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    after: Cursor = None,
    limit: Limit = 20,
) -> FineTuningJobList:
    jobs, has_more = service.list_jobs(
        session,
        principal.organization_id,
        after=after,
        limit=limit,
        metadata=metadata_filter(request),
    )
    return FineTuningJobList(data=jobs, has_more=has_more)


@router.get(
    "/fine_tuning/jobs/{job_id}",
    summary="A job",
    response_model=FineTuningJobObject,
    responses=READ_ERRORS,
)
def retrieve_job(
    job_id: ObjectId, principal: PrincipalDep, session: SessionDep
) -> FineTuningJobObject:
    job = jobs_service.get_job(session, principal.organization_id, job_id)
    return service.describe(session, principal.organization_id, job)


@router.post(
    "/fine_tuning/jobs/{job_id}/cancel",
    summary="Cancel a job",
    response_model=FineTuningJobObject,
    responses=WRITE_ERRORS,
)
def cancel_job(
    job_id: ObjectId, principal: PrincipalDep, session: SessionDep
) -> FineTuningJobObject:
    job = jobs_service.cancel_job(session, principal.organization_id, job_id)
    return service.describe(session, principal.organization_id, job)


@router.post(
    "/fine_tuning/jobs/{job_id}/pause",
    summary="Pause a job: its run is checkpointed and its worker freed",
    response_model=FineTuningJobObject,
    responses=WRITE_ERRORS,
)
def pause_job(
    job_id: ObjectId, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> FineTuningJobObject:
    job = jobs_service.pause_job(session, settings, principal.organization_id, job_id)
    return service.describe(session, principal.organization_id, job)


@router.post(
    "/fine_tuning/jobs/{job_id}/resume",
    summary="Resume a paused job from its checkpoint",
    response_model=FineTuningJobObject,
    responses=WRITE_ERRORS,
)
def resume_job(
    job_id: ObjectId, principal: PrincipalDep, session: SessionDep
) -> FineTuningJobObject:
    job = jobs_service.resume_job(session, principal.organization_id, job_id)
    return service.describe(session, principal.organization_id, job)


@router.get(
    "/fine_tuning/jobs/{job_id}/events",
    summary="A job's events, newest first; `type` is `metrics` for training steps",
    response_model=JobEventList,
    responses=READ_ERRORS,
)
def list_events(
    job_id: ObjectId,
    principal: PrincipalDep,
    session: SessionDep,
    after: Cursor = None,
    limit: Limit = 20,
) -> JobEventList:
    events, has_more = jobs_service.list_events(
        session,
        principal.organization_id,
        job_id,
        after=service.event_cursor(after),
        limit=limit,
    )
    return JobEventList(data=[service.event_object(e) for e in events], has_more=has_more)


@router.get(
    "/fine_tuning/jobs/{job_id}/checkpoints",
    summary="A job's kept checkpoints, newest first; each name answers chat completions",
    response_model=CheckpointList,
    responses=READ_ERRORS,
)
def list_checkpoints(
    job_id: ObjectId,
    principal: PrincipalDep,
    session: SessionDep,
    after: Cursor = None,
    limit: Limit = 10,
) -> CheckpointList:
    page, has_more = service.list_checkpoints(
        session, principal.organization_id, job_id, after=after, limit=limit
    )
    return CheckpointList(
        data=page,
        has_more=has_more,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
    )
