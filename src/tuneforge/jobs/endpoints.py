"""The fine-tuning jobs API, shaped after OpenAI's ``/fine_tuning/jobs``.

The list and the detail are the API's hottest reads. They are async endpoints that run
their service in one threadpool call: FastAPI validates a sync endpoint's response in a
second threadpool call of its own.

Paging: the job list pages by ``limit``/``offset`` with a ``total`` (the dashboard shows
page numbers); events page OpenAI's way, newest first with ``after`` = the last id seen.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from tuneforge.auth.deps import PrincipalDep
from tuneforge.bounds import MAX_ROW_ID, MAX_STEP, Offset
from tuneforge.db.session import SessionDep
from tuneforge.db.tables.jobs import JobStatus
from tuneforge.errors import Conflict, InvalidInput, NotFound, Unauthorized, error_responses
from tuneforge.jobs import service, stream
from tuneforge.jobs.repository import JobFilter
from tuneforge.jobs.schemas import (
    CheckpointList,
    EstimateOut,
    EstimateRequest,
    EventOut,
    EventPage,
    JobCreate,
    JobOut,
    JobPage,
    MetricPage,
    MetricPoint,
)
from tuneforge.state import SessionFactoryDep, SettingsDep

router = APIRouter(prefix="/fine-tuning/jobs", tags=["jobs"])

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]

METADATA_FILTER_DOC = {
    "parameters": [
        {
            "name": "metadata",
            "in": "query",
            "required": False,
            "style": "deepObject",
            "explode": True,
            "description": "Jobs whose metadata has every given pair: metadata[key]=value.",
            "schema": {"type": "object", "additionalProperties": {"type": "string"}},
        }
    ]
}


def metadata_filter(request: Request) -> dict[str, str]:
    """``metadata[key]=value`` pairs, which FastAPI cannot declare as parameters."""
    pairs = {}
    for name, value in request.query_params.multi_items():
        if name.startswith("metadata[") and name.endswith("]") and len(name) > len("metadata[]"):
            pairs[name[len("metadata[") : -1]] = value
    return pairs


@router.post(
    "",
    summary="Create a job on a validated dataset; it is queued for a worker at once",
    status_code=status.HTTP_201_CREATED,
    response_model=JobOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def create_job(
    body: JobCreate, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> JobOut:
    job = service.create_job(session, settings, principal.organization_id, principal.user_id, body)
    return service.describe_job(session, principal.organization_id, job)


@router.post(
    "/estimate",
    summary="Estimate epochs, billed tokens and cost of training a model on a dataset",
    response_model=EstimateOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def estimate_job(
    body: EstimateRequest, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> EstimateOut:
    return service.estimate_job(session, settings, principal.organization_id, body)


@router.get(
    "",
    summary="List the organization's jobs, newest first",
    response_model=JobPage,
    responses=error_responses(Unauthorized, InvalidInput),
    openapi_extra=METADATA_FILTER_DOC,
)
async def list_jobs(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    status_: Annotated[
        list[JobStatus] | None, Query(alias="status", description="Any of these statuses.")
    ] = None,
    provider: Annotated[str | None, Query(max_length=50)] = None,
    dataset_id: Annotated[str | None, Query(max_length=32)] = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> JobPage:
    job_filter = JobFilter(
        statuses=status_ or (),
        provider=provider,
        dataset_id=dataset_id,
        metadata=metadata_filter(request),
    )
    items, total = await run_in_threadpool(
        service.list_jobs,
        session,
        principal.organization_id,
        job_filter,
        limit=limit,
        offset=offset,
    )
    return JobPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{job_id}",
    summary="Get a job: status, progress, latest metrics, error and resulting model",
    response_model=JobOut,
    responses=error_responses(Unauthorized, NotFound),
)
async def get_job(job_id: str, principal: PrincipalDep, session: SessionDep) -> JobOut:
    return await run_in_threadpool(service.get_job_view, session, principal.organization_id, job_id)


@router.post(
    "/{job_id}/cancel",
    summary="Cancel a job: at once if no provider has it yet, else through its worker",
    response_model=JobOut,
    responses=error_responses(Unauthorized, NotFound, Conflict),
)
def cancel_job(job_id: str, principal: PrincipalDep, session: SessionDep) -> JobOut:
    job = service.cancel_job(session, principal.organization_id, job_id)
    return service.describe_job(session, principal.organization_id, job)


@router.post(
    "/{job_id}/pause",
    summary="Pause a job: its run is checkpointed and its worker freed until it is resumed",
    response_model=JobOut,
    responses=error_responses(Unauthorized, NotFound, Conflict, InvalidInput),
)
def pause_job(
    job_id: str, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> JobOut:
    job = service.pause_job(session, settings, principal.organization_id, job_id)
    return service.describe_job(session, principal.organization_id, job)


@router.post(
    "/{job_id}/resume",
    summary="Resume a paused job from the checkpoint it paused at",
    response_model=JobOut,
    responses=error_responses(Unauthorized, NotFound, Conflict),
)
def resume_job(job_id: str, principal: PrincipalDep, session: SessionDep) -> JobOut:
    job = service.resume_job(session, principal.organization_id, job_id)
    return service.describe_job(session, principal.organization_id, job)


@router.get(
    "/{job_id}/events",
    summary="List a job's events, newest first; pass the last id as `after` for older ones",
    response_model=EventPage,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def list_events(
    job_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ROW_ID, description="Events older than this id.")
    ] = None,
    limit: Limit = 20,
) -> EventPage:
    events, has_more = service.list_events(
        session, principal.organization_id, job_id, after=after, limit=limit
    )
    return EventPage(data=[EventOut.from_row(e) for e in events], has_more=has_more)


@router.get(
    "/{job_id}/metrics",
    summary="A job's metric points (step, name, value) by step, optionally filtered",
    response_model=MetricPage,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def list_metrics(
    job_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    name: Annotated[
        list[str] | None, Query(description="Only these metrics, e.g. train_loss.")
    ] = None,
    min_step: Annotated[int | None, Query(ge=0, le=MAX_STEP)] = None,
    max_step: Annotated[int | None, Query(ge=0, le=MAX_STEP)] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> MetricPage:
    points, has_more = service.list_metrics(
        session,
        principal.organization_id,
        job_id,
        names=name or (),
        min_step=min_step,
        max_step=max_step,
        limit=limit,
    )
    return MetricPage(data=[MetricPoint.from_row(p) for p in points], has_more=has_more)


@router.get(
    "/{job_id}/checkpoints",
    summary="A job's checkpoints, newest first",
    response_model=CheckpointList,
    responses=error_responses(Unauthorized, NotFound),
)
def list_checkpoints(job_id: str, principal: PrincipalDep, session: SessionDep) -> CheckpointList:
    return CheckpointList.from_rows(
        service.list_checkpoints(session, principal.organization_id, job_id)
    )


@router.get(
    "/{job_id}/stream",
    summary="Live Server-Sent Events of a job's status, events and metrics until it ends",
    description=(
        "`text/event-stream` of `status` (the whole job, as from GET), `event` and `metric` "
        "messages; each message's `id` is a cursor (`<event id>-<metric id>`) that "
        "`Last-Event-ID` (header, or the `last_event_id` query parameter) resumes from. "
        "Comments keep the connection alive; the stream ends after a terminal status."
    ),
    response_class=StreamingResponse,
    response_model=None,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The event stream."},
        **error_responses(Unauthorized, NotFound, InvalidInput),
    },
)
def stream_job(
    job_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    session_factory: SessionFactoryDep,
    last_event_id: Annotated[str | None, Header(max_length=50)] = None,
    last_event_id_query: Annotated[str | None, Query(alias="last_event_id", max_length=50)] = None,
) -> StreamingResponse:
    job = service.get_job(session, principal.organization_id, job_id)
    cursor = stream.StreamCursor.parse(last_event_id or last_event_id_query)
    return StreamingResponse(
        stream.stream_job(session_factory, principal.organization_id, job.id, cursor),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
