"""``POST /fine-tuning/jobs/{id}/sync``: poll the job's provider now.

A route of the jobs API that lives with the worker because it runs a worker step; this
keeps the jobs package from importing the worker (the worker imports jobs).
"""

from __future__ import annotations

from fastapi import APIRouter

from tuneforge.auth.deps import PrincipalDep
from tuneforge.db.session import SessionDep
from tuneforge.errors import InvalidInput, NotFound, Unauthorized, error_responses
from tuneforge.jobs import service as jobs_service
from tuneforge.jobs.schemas import JobOut
from tuneforge.state import SessionFactoryDep, SettingsDep
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
    principal: PrincipalDep,
    session: SessionDep,
    session_factory: SessionFactoryDep,
    settings: SettingsDep,
) -> JobOut:
    job = sync_job(session, session_factory, settings, principal.organization_id, job_id)
    return jobs_service.describe_job(session, principal.organization_id, job)
