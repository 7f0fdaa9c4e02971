"""Agent pages: the list, creating one, and an agent's logged conversations.

Agents are where fine-tuning data comes from (imports) and where models go (deploys), so
the dashboard needs them even though they are not fine-tuning objects themselves.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from tuneforge.agents import service as agents_service
from tuneforge.agents.schemas import AgentCreate
from tuneforge.auth.service import Principal
from tuneforge.bounds import Offset
from tuneforge.config import Settings
from tuneforge.db.session import SessionDep
from tuneforge.db.tables.models import ModelStatus
from tuneforge.models import service as models_service
from tuneforge.providers.catalog import list_base_models
from tuneforge.state import SettingsDep
from tuneforge.web.deps import FormDep, WebPrincipal, field_errors
from tuneforge.web.templating import render

router = APIRouter(prefix="/dashboard/agents")

PAGE_SIZE = 25
CONVERSATIONS_PAGE = 20
MODEL_CHOICES = 100
AGENT_FIELDS = ("name", "description", "system_prompt", "model")


def _list_page(
    request: Request,
    principal: Principal,
    session: SessionDep,
    settings: Settings,
    *,
    offset: int = 0,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    org = principal.organization_id
    agents, total = agents_service.list_agents(
        session, org, name_contains=None, limit=PAGE_SIZE, offset=offset
    )
    fine_tuned, _ = models_service.list_models(
        session, org, status=ModelStatus.ACTIVE, limit=MODEL_CHOICES, offset=0
    )
    context: dict[str, Any] = {
        "agents": agents,
        "total": total,
        "offset": offset,
        "page_size": PAGE_SIZE,
        "base_models": list_base_models(settings),
        "fine_tuned": [item.model for item in fine_tuned],
        "values": values or {},
        "errors": errors or {},
    }
    return render(
        request,
        "agents/list.html",
        context,
        principal=principal,
        section="agents",
        status_code=status_code,
    )


@router.get("")
def agent_list(
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    offset: Offset = 0,
) -> Response:
    return _list_page(request, principal, session, settings, offset=offset)


@router.post("")
def create_agent(
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    form: FormDep,
) -> Response:
    values = {name: str(form.get(name) or "").strip() for name in AGENT_FIELDS}
    try:
        body = AgentCreate.model_validate({k: v or None for k, v in values.items()})
    except ValidationError as exc:
        return _list_page(
            request,
            principal,
            session,
            settings,
            values=values,
            errors=field_errors(exc),
            status_code=422,
        )
    agent = agents_service.create_agent(session, settings, principal.organization_id, body)
    return RedirectResponse(f"/dashboard/agents/{agent.id}", status_code=303)


@router.get("/{agent_id}")
def agent_detail(
    agent_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    offset: Offset = 0,
) -> Response:
    org = principal.organization_id
    agent = agents_service.get_agent(session, org, agent_id)
    conversations, total = agents_service.list_conversations(
        session,
        org,
        agent.id,
        started_from=None,
        started_to=None,
        min_rating=None,
        tags=None,
        limit=CONVERSATIONS_PAGE,
        offset=offset,
    )
    model = None
    if agent.fine_tuned_model_id:
        model = models_service.get_model(session, org, agent.fine_tuned_model_id).model
    context = {
        "agent": agent,
        "model": model,
        "conversations": conversations,
        "total": total,
        "offset": offset,
        "page_size": CONVERSATIONS_PAGE,
    }
    return render(request, "agents/detail.html", context, principal=principal, section="agents")


@router.get("/{agent_id}/conversations/{conversation_id}")
def conversation_detail(
    agent_id: str,
    conversation_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
) -> Response:
    org = principal.organization_id
    agent = agents_service.get_agent(session, org, agent_id)
    conversation, messages = agents_service.get_conversation(
        session, org, agent.id, conversation_id
    )
    context = {"agent": agent, "conversation": conversation, "messages": messages}
    return render(
        request, "agents/conversation.html", context, principal=principal, section="agents"
    )
