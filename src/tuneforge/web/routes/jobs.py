"""Job pages: the list with live progress, and a job's timeline, loss chart and actions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from tuneforge.auth.service import Principal
from tuneforge.bounds import Offset
from tuneforge.datasets import service as datasets_service
from tuneforge.db.session import SessionDep
from tuneforge.db.tables.datasets import FineTuningDataset
from tuneforge.db.tables.jobs import FineTuningJob, JobStatus
from tuneforge.errors import NotFound
from tuneforge.evals import service as evals_service
from tuneforge.jobs import service as jobs_service
from tuneforge.jobs.repository import JobFilter
from tuneforge.jobs.states import ACTIVE_STATUSES, TERMINAL_STATUSES
from tuneforge.models import service as models_service
from tuneforge.providers.registry import provider_names
from tuneforge.state import SessionFactoryDep, SettingsDep
from tuneforge.web.deps import WebPrincipal, action_done, choice
from tuneforge.web.templating import render
from tuneforge.worker import loop as worker_loop

router = APIRouter(prefix="/dashboard/fine-tuning/jobs")

PAGE_SIZE = 20
TIMELINE_EVENTS = 50
CHART_POINTS = 10_000
BASE = "/dashboard/fine-tuning/jobs"

StatusFilter = Annotated[str, Query(max_length=20)]
ProviderFilter = Annotated[str | None, Query(max_length=50)]


def _rows_context(
    session: SessionDep,
    principal: Principal,
    status_value: str,
    provider: str | None,
    offset: int,
) -> dict[str, Any]:
    status = choice(JobStatus, status_value)
    job_filter = JobFilter(statuses=(status,) if status else (), provider=provider or None)
    org = principal.organization_id
    views, total = jobs_service.list_jobs(session, org, job_filter, limit=PAGE_SIZE, offset=offset)
    filters = {"status": status.value if status else "", "provider": provider or ""}
    return {
        "jobs": views,
        "total": total,
        "offset": offset,
        "page_size": PAGE_SIZE,
        "filters": filters,
        "live": any(job.status in ACTIVE_STATUSES for job in views),
    }


@router.get("")
def job_list(
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    status: StatusFilter = "",
    provider: ProviderFilter = None,
    offset: Offset = 0,
) -> Response:
    context = {
        **_rows_context(session, principal, status, provider, offset),
        "statuses": list(JobStatus),
        "providers": provider_names(),
    }
    return render(request, "jobs/list.html", context, principal=principal, section="jobs")


@router.get("/rows")
def job_rows(
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    status: StatusFilter = "",
    provider: ProviderFilter = None,
    offset: Offset = 0,
) -> Response:
    """The table alone, polled every few seconds while a listed job is still active."""
    context = _rows_context(session, principal, status, provider, offset)
    return render(request, "jobs/_rows.html", context, principal=principal)


def _dataset_or_none(session: SessionDep, org: str, dataset_id: str) -> FineTuningDataset | None:
    """A deleted dataset still names the job's data in its events; the page just links less."""
    try:
        return datasets_service.get_dataset(session, org, dataset_id)
    except NotFound:
        return None


def _chart_series(points: list[Any]) -> dict[str, list[list[float]]]:
    series: dict[str, list[list[float]]] = {}
    for point in points:
        series.setdefault(point.name, []).append([point.step, point.value])
    return series


def _status_context(session: SessionDep, org: str, job: FineTuningJob) -> dict[str, Any]:
    """What the status panel and checkpoints show, on the page and on every refresh."""
    return {
        "job": jobs_service.describe_job(session, org, job),
        "checkpoints": jobs_service.list_checkpoints(session, org, job.id),
        "checkpoint_models": models_service.checkpoint_models(session, org, job.id),
        "finished": job.status in TERMINAL_STATUSES,
        "evaluation": _evaluation_context(session, org, job.id),
        "active": job.status in ACTIVE_STATUSES,
    }


def _evaluation_context(session: SessionDep, org: str, job_id: str) -> dict[str, Any] | None:
    run = evals_service.job_evaluation(session, org, job_id)
    if run is None:
        return None
    return {"run": run, "figure": evals_service.before_after(run)}


@router.get("/{job_id}")
def job_detail(
    job_id: str, request: Request, principal: WebPrincipal, session: SessionDep
) -> Response:
    org = principal.organization_id
    job = jobs_service.get_job(session, org, job_id)
    events, more_events = jobs_service.list_events(
        session, org, job.id, after=None, limit=TIMELINE_EVENTS
    )
    points, _ = jobs_service.list_metrics(
        session, org, job.id, names=(), min_step=None, max_step=None, limit=CHART_POINTS
    )
    cursor = f"{events[0].id if events else 0}-{max((p.id for p in points), default=0)}"
    context = {
        **_status_context(session, org, job),
        "dataset": _dataset_or_none(session, org, job.dataset_id),
        "events": events,
        "more_events": more_events,
        "series": _chart_series(points),
        "verdict": jobs_service.training_verdict(session, job),
        "cursor": cursor,
    }
    return render(request, "jobs/detail.html", context, principal=principal, section="jobs")


@router.get("/{job_id}/summary")
def job_summary(
    job_id: str, request: Request, principal: WebPrincipal, session: SessionDep
) -> Response:
    """The status panel and checkpoints, re-read when the live stream reports a new status."""
    org = principal.organization_id
    job = jobs_service.get_job(session, org, job_id)
    context = _status_context(session, org, job)
    return render(request, "jobs/_refresh.html", context, principal=principal)


@router.get("/{job_id}/evaluation")
def job_evaluation(
    job_id: str, request: Request, principal: WebPrincipal, session: SessionDep
) -> Response:
    """The before/after line, polled while its evaluation runs."""
    org = principal.organization_id
    job = jobs_service.get_job(session, org, job_id)
    context = {"job": job, "evaluation": _evaluation_context(session, org, job.id)}
    return render(request, "jobs/_evaluation.html", context, principal=principal)


@router.post("/{job_id}/checkpoints/{step}/model")
def make_checkpoint_model(
    job_id: str,
    step: Annotated[int, Path(ge=0, le=10_000_000)],
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    model, _ = models_service.create_model_from_checkpoint(
        session, settings, principal.organization_id, job_id, step
    )
    return action_done(request, f"/dashboard/fine-tuning/models/{model.id}")


@router.post("/{job_id}/cancel")
def cancel_job(
    job_id: str, request: Request, principal: WebPrincipal, session: SessionDep
) -> Response:
    jobs_service.cancel_job(session, principal.organization_id, job_id)
    return action_done(request, f"{BASE}/{job_id}")


@router.post("/{job_id}/pause")
def pause_job(
    job_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    jobs_service.pause_job(session, settings, principal.organization_id, job_id)
    return action_done(request, f"{BASE}/{job_id}")


@router.post("/{job_id}/resume")
def resume_job(
    job_id: str, request: Request, principal: WebPrincipal, session: SessionDep
) -> Response:
    jobs_service.resume_job(session, principal.organization_id, job_id)
    return action_done(request, f"{BASE}/{job_id}")


@router.post("/{job_id}/sync")
def sync_job(
    job_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    session_factory: SessionFactoryDep,
    settings: SettingsDep,
) -> Response:
    org = principal.organization_id
    worker_loop.sync_job(session, session_factory, settings, org, job_id)
    return action_done(request, f"{BASE}/{job_id}")
