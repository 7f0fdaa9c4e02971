"""The fine-tuning dashboard's front page: counts, recent jobs, deployed models, usage."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tuneforge.db.session import SessionDep
from tuneforge.jobs import service as jobs_service
from tuneforge.jobs.repository import JobFilter
from tuneforge.models import service as models_service
from tuneforge.models.stats import fine_tuning_stats
from tuneforge.web.deps import WebPrincipal
from tuneforge.web.templating import render

router = APIRouter(prefix="/dashboard/fine-tuning")

RECENT_JOBS = 5
DEPLOYED_MODELS = 6


@router.get("")
def overview(request: Request, principal: WebPrincipal, session: SessionDep) -> Response:
    org = principal.organization_id
    jobs, _ = jobs_service.list_jobs(session, org, JobFilter(), limit=RECENT_JOBS, offset=0)
    deployed, _ = models_service.list_models(
        session, org, deployed=True, limit=DEPLOYED_MODELS, offset=0
    )
    context = {
        "stats": fine_tuning_stats(session, org),
        "jobs": jobs,
        "deployed": deployed,
    }
    return render(request, "overview.html", context, principal=principal, section="overview")
