"""The evaluations API: run datasets through models, score replies, compare them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from tuneforge.auth.deps import PrincipalDep
from tuneforge.bounds import Offset
from tuneforge.db.session import SessionDep
from tuneforge.errors import Conflict, InvalidInput, NotFound, Unauthorized, error_responses
from tuneforge.evals import service
from tuneforge.evals.schemas import EvalCreate, EvalOut, EvalPage, ResultOut, ResultPage
from tuneforge.state import SettingsDep

router = APIRouter(prefix="/evals", tags=["evals"])

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]


@router.post(
    "",
    summary="Queue an evaluation of one or more models on a dataset's examples",
    status_code=status.HTTP_201_CREATED,
    response_model=EvalOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def create_eval(
    body: EvalCreate, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> EvalOut:
    run = service.create_run(session, settings, principal.organization_id, principal.user_id, body)
    return EvalOut.from_row(run)


@router.get(
    "",
    summary="List the organization's evaluations, newest first",
    response_model=EvalPage,
    responses=error_responses(Unauthorized, InvalidInput),
)
def list_evals(
    principal: PrincipalDep,
    session: SessionDep,
    job_id: Annotated[
        str | None,
        Query(max_length=32, description="Only the before/after evaluations of this job."),
    ] = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> EvalPage:
    runs, total = service.list_runs(
        session, principal.organization_id, limit=limit, offset=offset, job_id=job_id
    )
    return EvalPage(items=[EvalOut.from_row(run) for run in runs], total=total)


@router.get(
    "/{eval_id}",
    summary="An evaluation: progress, and per model mean score, pass rate, win/tie/loss",
    response_model=EvalOut,
    responses=error_responses(Unauthorized, NotFound),
)
def get_eval(eval_id: str, principal: PrincipalDep, session: SessionDep) -> EvalOut:
    return EvalOut.from_row(service.get_run(session, principal.organization_id, eval_id))


@router.post(
    "/{eval_id}/cancel",
    summary="Cancel an evaluation: at once if queued, else after its current batch",
    response_model=EvalOut,
    responses=error_responses(Unauthorized, NotFound, Conflict),
)
def cancel_eval(eval_id: str, principal: PrincipalDep, session: SessionDep) -> EvalOut:
    return EvalOut.from_row(service.cancel_run(session, principal.organization_id, eval_id))


@router.get(
    "/{eval_id}/results",
    summary="Per example: the prompt, the expected reply and every model's graded reply",
    response_model=ResultPage,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def list_results(
    eval_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    regressions_only: Annotated[
        bool, Query(description="Only examples where a model scored below the baseline.")
    ] = False,
    limit: Limit = 20,
    offset: Offset = 0,
) -> ResultPage:
    rows, total = service.list_results(
        session,
        principal.organization_id,
        eval_id,
        regressions_only=regressions_only,
        limit=limit,
        offset=offset,
    )
    return ResultPage(items=[ResultOut.from_row(row) for row in rows], total=total)
