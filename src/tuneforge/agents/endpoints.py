"""HTTP surface for agents and their logged conversations; the service holds the logic."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from tuneforge.agents import service
from tuneforge.agents.schemas import (
    MAX_MESSAGES,
    AgentCreate,
    AgentOut,
    AgentPage,
    AgentUpdate,
    ConversationCreate,
    ConversationOut,
    ConversationPage,
    ConversationSummary,
    ConversationUpdate,
    CorrectionIn,
    Deleted,
    Rating,
    Tag,
)
from tuneforge.auth.deps import PrincipalDep
from tuneforge.bounds import Offset, UTCDatetime
from tuneforge.db.session import SessionDep
from tuneforge.errors import Conflict, InvalidInput, NotFound, Unauthorized, error_responses
from tuneforge.state import SettingsDep

router = APIRouter(prefix="/agents", tags=["agents"])

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]


@router.post(
    "",
    summary="Create an agent on a base model or one of the organization's fine-tuned models",
    status_code=status.HTTP_201_CREATED,
    response_model=AgentOut,
    responses=error_responses(Unauthorized, InvalidInput, Conflict),
)
def create_agent(
    body: AgentCreate, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> AgentOut:
    agent = service.create_agent(session, settings, principal.organization_id, body)
    return AgentOut.model_validate(agent)


@router.get(
    "",
    summary="List the organization's agents, newest first",
    response_model=AgentPage,
    responses=error_responses(Unauthorized, InvalidInput),
)
def list_agents(
    principal: PrincipalDep,
    session: SessionDep,
    name: Annotated[
        str | None, Query(max_length=200, description="Case-insensitive name substring.")
    ] = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> AgentPage:
    agents, total = service.list_agents(
        session, principal.organization_id, name_contains=name, limit=limit, offset=offset
    )
    return AgentPage(
        items=[AgentOut.model_validate(a) for a in agents], total=total, limit=limit, offset=offset
    )


@router.get(
    "/{agent_id}",
    summary="Get an agent",
    response_model=AgentOut,
    responses=error_responses(Unauthorized, NotFound),
)
def get_agent(agent_id: str, principal: PrincipalDep, session: SessionDep) -> AgentOut:
    return AgentOut.model_validate(service.get_agent(session, principal.organization_id, agent_id))


@router.patch(
    "/{agent_id}",
    summary="Change some of an agent's fields; a new model re-links its fine-tuned model",
    response_model=AgentOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput, Conflict),
)
def update_agent(
    agent_id: str,
    body: AgentUpdate,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
) -> AgentOut:
    agent = service.update_agent(session, settings, principal.organization_id, agent_id, body)
    return AgentOut.model_validate(agent)


@router.delete(
    "/{agent_id}",
    summary="Soft-delete an agent, hiding it and its conversations",
    response_model=Deleted,
    responses=error_responses(Unauthorized, NotFound),
)
def delete_agent(agent_id: str, principal: PrincipalDep, session: SessionDep) -> Deleted:
    agent = service.delete_agent(session, principal.organization_id, agent_id)
    return Deleted(id=agent.id)


@router.post(
    "/{agent_id}/conversations",
    summary="Log a whole conversation with its messages, rating and tags",
    status_code=status.HTTP_201_CREATED,
    response_model=ConversationOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def create_conversation(
    agent_id: str, body: ConversationCreate, principal: PrincipalDep, session: SessionDep
) -> ConversationOut:
    conversation, messages = service.create_conversation(
        session, principal.organization_id, agent_id, body
    )
    return ConversationOut.from_parts(conversation, messages)


@router.get(
    "/{agent_id}/conversations",
    summary="List an agent's conversations, newest first, without their messages",
    description=(
        "`from` is inclusive and `to` exclusive (both compare `started_at`). "
        "`tag` may repeat: a conversation matches when it has ANY of the given tags. "
        "`total` counts every match, not just this page."
    ),
    response_model=ConversationPage,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def list_conversations(
    agent_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    started_from: Annotated[
        UTCDatetime | None, Query(alias="from", description="Earliest started_at (inclusive).")
    ] = None,
    started_to: Annotated[
        UTCDatetime | None, Query(alias="to", description="Latest started_at (exclusive).")
    ] = None,
    min_rating: Annotated[Rating | None, Query(description="Only ratings at least this.")] = None,
    tag: Annotated[list[Tag] | None, Query(description="Any of these tags; repeatable.")] = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> ConversationPage:
    rows, total = service.list_conversations(
        session,
        principal.organization_id,
        agent_id,
        started_from=started_from,
        started_to=started_to,
        min_rating=min_rating,
        tags=tag,
        limit=limit,
        offset=offset,
    )
    return ConversationPage(
        items=[ConversationSummary.from_row(c, count) for c, count in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/{agent_id}/conversations/{conversation_id}",
    summary="Get a conversation with its messages in order",
    response_model=ConversationOut,
    responses=error_responses(Unauthorized, NotFound),
)
def get_conversation(
    agent_id: str, conversation_id: str, principal: PrincipalDep, session: SessionDep
) -> ConversationOut:
    conversation, messages = service.get_conversation(
        session, principal.organization_id, agent_id, conversation_id
    )
    return ConversationOut.from_parts(conversation, messages)


@router.patch(
    "/{agent_id}/conversations/{conversation_id}",
    summary="Rate a conversation after the fact, or change its feedback or tags",
    response_model=ConversationOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def update_conversation(
    agent_id: str,
    conversation_id: str,
    body: ConversationUpdate,
    principal: PrincipalDep,
    session: SessionDep,
) -> ConversationOut:
    conversation, messages = service.update_conversation(
        session, principal.organization_id, agent_id, conversation_id, body
    )
    return ConversationOut.from_parts(conversation, messages)


MessageIndex = Annotated[
    int, Path(ge=0, le=MAX_MESSAGES, description="The message's 0-based place in the conversation.")
]


@router.put(
    "/{agent_id}/conversations/{conversation_id}/messages/{index}/correction",
    summary="Record a better reply to one of the conversation's assistant messages",
    description=(
        "Replaces any earlier correction of that message. A low-rated conversation's logged "
        "and corrected replies import as a preference pair (`kind: preference` imports)."
    ),
    response_model=ConversationOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def set_correction(
    agent_id: str,
    conversation_id: str,
    index: MessageIndex,
    body: CorrectionIn,
    principal: PrincipalDep,
    session: SessionDep,
) -> ConversationOut:
    conversation, messages = service.set_correction(
        session, principal.organization_id, agent_id, conversation_id, index, body
    )
    return ConversationOut.from_parts(conversation, messages)


@router.delete(
    "/{agent_id}/conversations/{conversation_id}/messages/{index}/correction",
    summary="Remove the correction of an assistant message",
    response_model=ConversationOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def delete_correction(
    agent_id: str,
    conversation_id: str,
    index: MessageIndex,
    principal: PrincipalDep,
    session: SessionDep,
) -> ConversationOut:
    conversation, messages = service.set_correction(
        session, principal.organization_id, agent_id, conversation_id, index, None
    )
    return ConversationOut.from_parts(conversation, messages)


@router.delete(
    "/{agent_id}/conversations/{conversation_id}",
    summary="Soft-delete a conversation so listings and imports skip it",
    response_model=Deleted,
    responses=error_responses(Unauthorized, NotFound),
)
def delete_conversation(
    agent_id: str, conversation_id: str, principal: PrincipalDep, session: SessionDep
) -> Deleted:
    conversation = service.delete_conversation(
        session, principal.organization_id, agent_id, conversation_id
    )
    return Deleted(id=conversation.id)
