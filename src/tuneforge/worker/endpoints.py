"""``POST /fine-tuning/jobs/{id}/sync``: poll the job's provider now.

A route of the jobs API that lives with the worker because it runs a worker step; this
keeps the jobs package from importing the worker (the worker imports jobs).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from tuneforge.auth.deps import PrincipalDep
from tuneforge.db.session import SessionDep, SettingsDep
from tuneforge.errors import InvalidInput, NotFound, Unauthorized, error_responses
from tuneforge.jobs import service as jobs_service
from tuneforge.jobs.schemas import JobOut
from tuneforge.worker.loop import sync_job

router = APIRouter(prefix="/fine-tuning/jobs", tags=["jobs"])


@router.post(
    "/{job_id}/sync",
    summary="Poll the job's provider now instead of waiting for the next scheduled poll",
    response_model=JobOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def sync_job_now(
    job_id: str,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
) -> JobOut:
    factory = request.app.state.session_factory
    job = sync_job(session, factory, settings, principal.organization_id, job_id)
    return jobs_service.describe_job(session, principal.organization_id, job)
