from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi import status as http_status

from tuneforge.auth.deps import PrincipalDep
from tuneforge.bounds import Day, Offset
from tuneforge.db.session import SessionDep
from tuneforge.db.tables.models import ModelStatus
from tuneforge.errors import Conflict, InvalidInput, NotFound, Unauthorized, error_responses
from tuneforge.models import service, usage
from tuneforge.models.schemas import (
    AgentRef,
    DeployRequest,
    FineTuningStats,
    ModelDeleted,
    ModelOut,
    ModelPage,
    ModelUpdate,
    ModelUsageReport,
    UndeployRequest,
)
from tuneforge.models.service import ModelWithAgents
from tuneforge.models.stats import fine_tuning_stats
from tuneforge.state import SettingsDep

router = APIRouter(prefix="/fine-tuning/models", tags=["models"])
stats_router = APIRouter(prefix="/fine-tuning", tags=["stats"])
checkpoint_router = APIRouter(prefix="/fine-tuning/jobs", tags=["models"])

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]


def _out(item: ModelWithAgents) -> ModelOut:
    return ModelOut.model_validate(item.model).model_copy(
        update={"deployed_agents": [AgentRef.model_validate(a) for a in item.agents]}
    )


@router.get(
    "",
    summary="List the organization's fine-tuned models, newest first",
    response_model=ModelPage,
    responses=error_responses(Unauthorized, InvalidInput),
)
def list_models(
    principal: PrincipalDep,
    session: SessionDep,
    status: Annotated[ModelStatus | None, Query(description="active or archived.")] = None,
    deployed: Annotated[
        bool | None, Query(description="Only models serving (or not serving) an agent.")
    ] = None,
    base_model: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> ModelPage:
    items, total = service.list_models(
        session,
        principal.organization_id,
        status=status,
        deployed=deployed,
        base_model=base_model,
        limit=limit,
        offset=offset,
    )
    return ModelPage(items=[_out(i) for i in items], total=total, limit=limit, offset=offset)


@router.get(
    "/{model_id}",
    summary="Get a fine-tuned model with the agents it is deployed to",
    response_model=ModelOut,
    responses=error_responses(Unauthorized, NotFound),
)
def get_model(model_id: str, principal: PrincipalDep, session: SessionDep) -> ModelOut:
    return _out(service.get_model(session, principal.organization_id, model_id))


@router.patch(
    "/{model_id}",
    summary="Rename a fine-tuned model or change its description",
    response_model=ModelOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def update_model(
    model_id: str, body: ModelUpdate, principal: PrincipalDep, session: SessionDep
) -> ModelOut:
    return _out(service.update_model(session, principal.organization_id, model_id, body))


@router.post(
    "/{model_id}/deploy",
    summary="Deploy the model to an agent, which then answers with it",
    response_model=ModelOut,
    responses=error_responses(Unauthorized, NotFound, Conflict, InvalidInput),
)
def deploy_model(
    model_id: str, body: DeployRequest, principal: PrincipalDep, session: SessionDep
) -> ModelOut:
    item = service.deploy_model(session, principal.organization_id, model_id, body.agent_id)
    return _out(item)


@router.post(
    "/{model_id}/undeploy",
    summary="Put one agent, or every agent on this model, back on the base model",
    response_model=ModelOut,
    responses=error_responses(Unauthorized, NotFound, Conflict, InvalidInput),
)
def undeploy_model(
    model_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    body: UndeployRequest | None = None,
) -> ModelOut:
    agent_id = body.agent_id if body else None
    item = service.undeploy_model(session, principal.organization_id, model_id, agent_id)
    return _out(item)


@router.post(
    "/{model_id}/archive",
    summary="Archive a model that no agent uses; archived models cannot be deployed",
    response_model=ModelOut,
    responses=error_responses(Unauthorized, NotFound, Conflict),
)
def archive_model(model_id: str, principal: PrincipalDep, session: SessionDep) -> ModelOut:
    return _out(service.archive_model(session, principal.organization_id, model_id))


@router.post(
    "/{model_id}/unarchive",
    summary="Make an archived model active again",
    response_model=ModelOut,
    responses=error_responses(Unauthorized, NotFound),
)
def unarchive_model(model_id: str, principal: PrincipalDep, session: SessionDep) -> ModelOut:
    return _out(service.unarchive_model(session, principal.organization_id, model_id))


@router.delete(
    "/{model_id}",
    summary="Soft-delete a model; refused (naming the agents) while it is deployed",
    response_model=ModelDeleted,
    responses=error_responses(Unauthorized, NotFound, Conflict),
)
def delete_model(model_id: str, principal: PrincipalDep, session: SessionDep) -> ModelDeleted:
    model = service.delete_model(session, principal.organization_id, model_id)
    return ModelDeleted(id=model.id)


@router.get(
    "/{model_id}/usage",
    summary="Requests, tokens, latency and cost of a model, per UTC day",
    response_model=ModelUsageReport,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def model_usage(
    model_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    from_date: Annotated[
        Day | None, Query(alias="from", description="First day (UTC); default 29 days before to.")
    ] = None,
    to_date: Annotated[
        Day | None, Query(alias="to", description="Last day (UTC), inclusive; default today.")
    ] = None,
    granularity: Annotated[Literal["day"], Query(description="Bucket size.")] = "day",
) -> ModelUsageReport:
    return usage.usage_report(
        session,
        principal.organization_id,
        model_id,
        from_date=from_date,
        to_date=to_date,
        settings=settings,
    )


@stats_router.get(
    "/stats",
    summary="Dashboard counts: datasets, jobs, models, tokens trained, this month's usage",
    response_model=FineTuningStats,
    responses=error_responses(Unauthorized),
)
def stats(principal: PrincipalDep, session: SessionDep) -> FineTuningStats:
    return fine_tuning_stats(session, principal.organization_id)


@checkpoint_router.post(
    "/{job_id}/checkpoints/{step}/model",
    summary="Make a model from one of a finished job's kept checkpoints (201; 200 if made)",
    status_code=http_status.HTTP_201_CREATED,
    response_model=ModelOut,
    responses=error_responses(Unauthorized, NotFound, Conflict),
)
def create_checkpoint_model(
    job_id: str,
    step: Annotated[int, Path(ge=0, le=10_000_000)],
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> ModelOut:
    model, created = service.create_model_from_checkpoint(
        session, settings, principal.organization_id, job_id, step
    )
    if not created:
        response.status_code = http_status.HTTP_200_OK
    return _out(service.get_model(session, principal.organization_id, model.id))
