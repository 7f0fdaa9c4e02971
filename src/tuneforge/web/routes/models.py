"""Model pages: the list with deploy/archive/delete actions, and a model's usage and try-it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from tuneforge.agents import service as agents_service
from tuneforge.bounds import Offset
from tuneforge.db.session import SessionDep
from tuneforge.db.tables.models import ModelStatus
from tuneforge.errors import InvalidInput
from tuneforge.evals import service as evals_service
from tuneforge.exports import service as exports_service
from tuneforge.exports.schemas import ExportCreate
from tuneforge.inference import service as inference_service
from tuneforge.inference.deps import RuntimeDep
from tuneforge.inference.schemas import AgentChatRequest
from tuneforge.models import service as models_service
from tuneforge.models import usage
from tuneforge.providers.registry import get_provider
from tuneforge.state import SettingsDep
from tuneforge.web.deps import WebPrincipal, action_done, choice, parse_form, safe_next
from tuneforge.web.templating import render

router = APIRouter(prefix="/dashboard/fine-tuning/models")

PAGE_SIZE = 20
AGENT_CHOICES = 100
BASE = "/dashboard/fine-tuning/models"
TRY_MAX_TOKENS = 128
EXPORTS_SHOWN = 10

NextField = Annotated[str, Form(alias="next")]
AgentField = Annotated[str, Form()]


def _agents(session: SessionDep, organization_id: str) -> list[Any]:
    agents, _ = agents_service.list_agents(
        session, organization_id, name_contains=None, limit=AGENT_CHOICES, offset=0
    )
    return agents


@router.get("")
def model_list(
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    status: Annotated[str, Query(max_length=20)] = "",
    offset: Offset = 0,
) -> Response:
    org = principal.organization_id
    status_filter = choice(ModelStatus, status)
    models, total = models_service.list_models(
        session, org, status=status_filter, limit=PAGE_SIZE, offset=offset
    )
    context = {
        "models": models,
        "total": total,
        "offset": offset,
        "page_size": PAGE_SIZE,
        "status": status_filter,
        "statuses": list(ModelStatus),
        "agents": _agents(session, org),
    }
    return render(request, "models/list.html", context, principal=principal, section="models")


@router.get("/{model_id}")
def model_detail(
    model_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    org = principal.organization_id
    item = models_service.get_model(session, org, model_id)
    served_here = get_provider(item.model.provider, settings).serves_models_here
    report = usage.usage_report(
        session,
        org,
        item.model.id,
        from_date=None,
        to_date=None,
        settings=settings,
    )
    run = (
        evals_service.job_evaluation(session, org, item.model.job_id)
        if item.model.checkpoint_step is None
        else None
    )
    context = {
        "item": item,
        "evaluation": {"run": run, "figure": evals_service.before_after(run)} if run else None,
        "report": report,
        "agents": _agents(session, org),
        "served_here": served_here,
        "can_try": served_here and bool(item.agents),
        "exports": _exports(session, org, item.model.id) if served_here else None,
        "usage_series": [
            {
                "date": day.date.isoformat(),
                "requests": day.requests,
                "tokens": day.prompt_tokens + day.completion_tokens,
            }
            for day in report.series
        ],
    }
    return render(request, "models/detail.html", context, principal=principal, section="models")


def _back(request: Request, model_id: str, next_url: str) -> Response:
    return action_done(request, safe_next(next_url or f"{BASE}/{model_id}"))


@router.post("/{model_id}/deploy")
def deploy(
    model_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    agent_id: AgentField = "",
    next_url: NextField = "",
) -> Response:
    if not agent_id:
        raise InvalidInput("Choose the agent to deploy this model to", field="agent_id")
    models_service.deploy_model(session, principal.organization_id, model_id, agent_id)
    return _back(request, model_id, next_url)


@router.post("/{model_id}/undeploy")
def undeploy(
    model_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    agent_id: AgentField = "",
    next_url: NextField = "",
) -> Response:
    org = principal.organization_id
    models_service.undeploy_model(session, org, model_id, agent_id or None)
    return _back(request, model_id, next_url)


@router.post("/{model_id}/archive")
def archive(
    model_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    next_url: NextField = "",
) -> Response:
    models_service.archive_model(session, principal.organization_id, model_id)
    return _back(request, model_id, next_url)


@router.post("/{model_id}/unarchive")
def unarchive(
    model_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    next_url: NextField = "",
) -> Response:
    models_service.unarchive_model(session, principal.organization_id, model_id)
    return _back(request, model_id, next_url)


@router.post("/{model_id}/try")
def try_model(
    model_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    runtime: RuntimeDep,
    agent_id: AgentField = "",
    message: Annotated[str, Form()] = "",
    conversation_id: Annotated[str, Form()] = "",
) -> Response:
    """One chat turn through an agent serving the model, logged and metered like the API's."""
    org = principal.organization_id
    item = models_service.get_model(session, org, model_id)
    if agent_id not in {agent.id for agent in item.agents}:
        raise InvalidInput("Choose an agent this model is deployed to", field="agent_id")
    if not message.strip():
        raise InvalidInput("Type a message first", field="message")
    body = parse_form(
        AgentChatRequest,
        {
            "messages": [{"role": "user", "content": message}],
            "conversation_id": conversation_id or None,
            "max_tokens": TRY_MAX_TOKENS,
        },
    )
    reply = inference_service.chat_with_agent(runtime, org, agent_id, body)
    context = {"message": message, "reply": reply}
    return render(request, "models/_chat_turn.html", context, principal=principal)


def _exports(session: SessionDep, organization_id: str, model_id: str) -> list[Any]:
    exports, _ = exports_service.list_exports(
        session, organization_id, model_id, limit=EXPORTS_SHOWN, offset=0
    )
    return exports


@router.get("/{model_id}/exports")
def model_exports(
    model_id: str, request: Request, principal: WebPrincipal, session: SessionDep
) -> Response:
    """The model's exports, polled while one is queued or being written."""
    item = models_service.get_model(session, principal.organization_id, model_id)
    context = {"item": item, "exports": _exports(session, principal.organization_id, model_id)}
    return render(request, "models/_exports.html", context, principal=principal)


@router.post("/{model_id}/exports")
def create_export(
    model_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    export_format: Annotated[str, Form(alias="format", max_length=20)] = "",
    quantization: Annotated[str, Form(max_length=20)] = "",
    agent_id: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    body = parse_form(
        ExportCreate,
        {
            "format": export_format,
            "quantization": quantization or None,
            "agent_id": agent_id or None,
        },
    )
    org = principal.organization_id
    exports_service.create_export(session, settings, org, principal.user_id, model_id, body)
    return _back(request, model_id, "")


@router.post("/{model_id}/exports/{export_id}/delete")
def delete_export(
    model_id: str,
    export_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    org = principal.organization_id
    exports_service.delete_export(session, settings, org, model_id, export_id)
    return _back(request, model_id, "")


@router.post("/{model_id}/delete")
def delete(
    model_id: str, request: Request, principal: WebPrincipal, session: SessionDep
) -> Response:
    models_service.delete_model(session, principal.organization_id, model_id)
    return action_done(request, BASE)
