"""Evaluation pages: the runs with live progress, and a run's scores with every example's
replies side by side."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from tuneforge.auth.service import Principal
from tuneforge.bounds import Offset
from tuneforge.datasets import service as datasets_service
from tuneforge.db.session import SessionDep
from tuneforge.db.tables.evals import ACTIVE_EVAL_STATUSES, EvalRun
from tuneforge.errors import NotFound
from tuneforge.evals import service as evals_service
from tuneforge.evals.schemas import EvalOut, ResultOut
from tuneforge.web.deps import WebPrincipal, action_done
from tuneforge.web.templating import render

router = APIRouter(prefix="/dashboard/fine-tuning/evals")

PAGE_SIZE = 20
RESULTS_PAGE = 10
BASE = "/dashboard/fine-tuning/evals"

RegressionsOnly = Annotated[bool, Query()]


def _dataset_names(session: SessionDep, org: str, dataset_ids: Iterable[str]) -> dict[str, str]:
    """A deleted dataset still names a run's data by id; the page just links less."""
    names: dict[str, str] = {}
    for dataset_id in set(dataset_ids):
        try:
            names[dataset_id] = datasets_service.get_dataset(session, org, dataset_id).name
        except NotFound:
            continue
    return names


def _rows_context(session: SessionDep, principal: Principal, offset: int) -> dict[str, Any]:
    org = principal.organization_id
    runs, total = evals_service.list_runs(session, org, limit=PAGE_SIZE, offset=offset)
    return {
        "runs": [EvalOut.from_row(run) for run in runs],
        "datasets": _dataset_names(session, org, (run.dataset_id for run in runs)),
        "total": total,
        "offset": offset,
        "page_size": PAGE_SIZE,
        "live": any(run.status in ACTIVE_EVAL_STATUSES for run in runs),
    }


def _status_context(run: EvalRun) -> dict[str, Any]:
    return {
        "run": EvalOut.from_row(run),
        "active": run.status in ACTIVE_EVAL_STATUSES,
        "cancelling": run.cancel_requested,
        "percent": 100 * run.examples_done / run.examples_total if run.examples_total else 0.0,
    }


@router.get("")
def eval_list(
    request: Request, principal: WebPrincipal, session: SessionDep, offset: Offset = 0
) -> Response:
    context = _rows_context(session, principal, offset)
    return render(request, "evals/list.html", context, principal=principal, section="evals")


@router.get("/rows")
def eval_rows(
    request: Request, principal: WebPrincipal, session: SessionDep, offset: Offset = 0
) -> Response:
    """The table alone, polled every few seconds while a listed run is still active."""
    context = _rows_context(session, principal, offset)
    return render(request, "evals/_rows.html", context, principal=principal)


@router.get("/{eval_id}")
def eval_detail(
    eval_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    regressions_only: RegressionsOnly = False,
    offset: Offset = 0,
) -> Response:
    org = principal.organization_id
    run = evals_service.get_run(session, org, eval_id)
    results, results_total = evals_service.list_results(
        session,
        org,
        run.id,
        regressions_only=regressions_only,
        limit=RESULTS_PAGE,
        offset=offset,
    )
    context = {
        **_status_context(run),
        "dataset_name": _dataset_names(session, org, [run.dataset_id]).get(run.dataset_id),
        "results": [ResultOut.from_row(row) for row in results],
        "results_total": results_total,
        "offset": offset,
        "page_size": RESULTS_PAGE,
        "regressions_only": regressions_only,
    }
    return render(request, "evals/detail.html", context, principal=principal, section="evals")


@router.get("/{eval_id}/status")
def eval_status(
    eval_id: str, request: Request, principal: WebPrincipal, session: SessionDep
) -> Response:
    """The status panel, polled while the run is active; once it ends the whole page reloads,
    so the scores and examples appear."""
    run = evals_service.get_run(session, principal.organization_id, eval_id)
    response = render(request, "evals/_status.html", _status_context(run), principal=principal)
    if run.status not in ACTIVE_EVAL_STATUSES:
        response.headers["HX-Refresh"] = "true"
    return response


@router.post("/{eval_id}/cancel")
def cancel_eval(
    eval_id: str, request: Request, principal: WebPrincipal, session: SessionDep
) -> Response:
    evals_service.cancel_run(session, principal.organization_id, eval_id)
    return action_done(request, f"{BASE}/{eval_id}")
