"""Agents and their logged conversations, and the stream that turns those into datasets."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from tuneforge.agents import repository
from tuneforge.agents.repository import ConversationFilter
from tuneforge.agents.schemas import (
    AgentCreate,
    AgentUpdate,
    ConversationCreate,
    ConversationUpdate,
    CorrectionIn,
    ToolDefinition,
    normalize_tags,
)
from tuneforge.bounds import utc_moment
from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.scoping import get_owned
from tuneforge.db.tables.agents import Agent, Conversation, ConversationMessage, ConversationTag
from tuneforge.db.tables.models import FineTunedModel, ModelStatus
from tuneforge.errors import Conflict, InvalidInput, NotFound
from tuneforge.providers.catalog import DEFAULT_PROVIDER, find_base_model


def _linkable_fine_tuned_model(
    session: Session, settings: Settings, organization_id: str, model: str
) -> FineTunedModel | None:
    """The org's fine-tuned model named by ``model``, or None for a base model the
    platform knows; anything else (another organization's model, a typo) is refused.
    An archived model cannot serve an agent."""
    fine_tuned = repository.find_fine_tuned_model(session, organization_id, model)
    if fine_tuned is None:
        find_base_model(model, settings)  # raises, naming the field and the known models
        return None
    if fine_tuned.status == ModelStatus.ARCHIVED:
        raise Conflict(f"Model {fine_tuned.id} is archived; unarchive it first", field="model")
    return fine_tuned


def create_agent(
    session: Session, settings: Settings, organization_id: str, request: AgentCreate
) -> Agent:
    fine_tuned = _linkable_fine_tuned_model(session, settings, organization_id, request.model)
    agent = Agent(
        organization_id=organization_id,
        name=request.name,
        description=request.description,
        system_prompt=request.system_prompt,
        model=request.model,
        provider=request.provider or (fine_tuned.provider if fine_tuned else DEFAULT_PROVIDER),
        fine_tuned_model_id=fine_tuned.id if fine_tuned else None,
        tools=_tools(request.tools),
    )
    session.add(agent)
    session.flush()
    return agent


def _tools(tools: list[ToolDefinition] | None) -> list[dict[str, Any]] | None:
    return [tool.model_dump(exclude_none=True) for tool in tools] if tools else None


def list_agents(
    session: Session, organization_id: str, *, name_contains: str | None, limit: int, offset: int
) -> tuple[list[Agent], int]:
    return repository.list_agents(
        session, organization_id, name_contains=name_contains, limit=limit, offset=offset
    )


def get_agent(session: Session, organization_id: str, agent_id: str) -> Agent:
    return get_owned(session, Agent, agent_id, organization_id, label="Agent")


def update_agent(
    session: Session, settings: Settings, organization_id: str, agent_id: str, request: AgentUpdate
) -> Agent:
    agent = get_agent(session, organization_id, agent_id)
    changes = request.model_dump(exclude_unset=True)
    if "tools" in changes:
        changes["tools"] = _tools(request.tools)
    for field, value in changes.items():
        setattr(agent, field, value)
    if "model" in changes:
        fine_tuned = _linkable_fine_tuned_model(session, settings, organization_id, agent.model)
        agent.fine_tuned_model_id = fine_tuned.id if fine_tuned else None
    session.flush()
    return agent


def delete_agent(session: Session, organization_id: str, agent_id: str) -> Agent:
    """Soft delete: the agent and its conversations disappear from listings and imports."""
    agent = get_agent(session, organization_id, agent_id)
    agent.deleted_at = utcnow()
    session.flush()
    return agent


def create_conversation(
    session: Session, organization_id: str, agent_id: str, request: ConversationCreate
) -> tuple[Conversation, list[ConversationMessage]]:
    agent = get_agent(session, organization_id, agent_id)
    messages = [
        ConversationMessage(
            position=position,
            role=message.role.value,
            content=message.content,
            name=message.name,
            tool_calls=(
                [call.model_dump() for call in message.tool_calls] if message.tool_calls else None
            ),
            tool_call_id=message.tool_call_id,
            correction=message.correction.as_message() if message.correction else None,
        )
        for position, message in enumerate(request.messages)
    ]
    conversation = Conversation(
        organization_id=organization_id,
        agent_id=agent.id,
        title=request.title,
        started_at=request.started_at or utcnow(),
        rating=request.rating,
        feedback=request.feedback,
        tags=[ConversationTag(tag=tag) for tag in request.tags],
        messages=messages,
    )
    session.add(conversation)
    session.flush()
    return conversation, messages


def list_conversations(
    session: Session,
    organization_id: str,
    agent_id: str,
    *,
    started_from: datetime | None,
    started_to: datetime | None,
    min_rating: int | None,
    tags: list[str] | None,
    limit: int,
    offset: int,
) -> tuple[list[tuple[Conversation, int]], int]:
    """A page of the agent's conversations with message counts, and the total matching."""
    agent = get_agent(session, organization_id, agent_id)
    _check_range(started_from, started_to, field="to")
    conversation_filter = _conversation_filter(
        agent_ids=[agent.id],
        started_from=started_from,
        started_to=started_to,
        min_rating=min_rating,
        tags=tags,
    )
    return repository.list_conversations(
        session, organization_id, conversation_filter, limit=limit, offset=offset
    )


def _get_conversation(
    session: Session, organization_id: str, agent_id: str, conversation_id: str
) -> Conversation:
    agent = get_agent(session, organization_id, agent_id)
    conversation = get_owned(
        session, Conversation, conversation_id, organization_id, label="Conversation"
    )
    if conversation.agent_id != agent.id:
        raise NotFound(f"Conversation {conversation_id} not found")
    return conversation


def get_conversation(
    session: Session, organization_id: str, agent_id: str, conversation_id: str
) -> tuple[Conversation, list[ConversationMessage]]:
    conversation = _get_conversation(session, organization_id, agent_id, conversation_id)
    messages = repository.messages_by_conversation(session, [conversation.id])[conversation.id]
    return conversation, messages


def update_conversation(
    session: Session,
    organization_id: str,
    agent_id: str,
    conversation_id: str,
    request: ConversationUpdate,
) -> tuple[Conversation, list[ConversationMessage]]:
    conversation = _get_conversation(session, organization_id, agent_id, conversation_id)
    changes = request.model_dump(exclude_unset=True)
    if "rating" in changes:
        conversation.rating = changes["rating"]
    if "feedback" in changes:
        conversation.feedback = changes["feedback"]
    if "tags" in changes:
        conversation.tags = [ConversationTag(tag=tag) for tag in changes["tags"]]
    if changes:
        # Tag rows live in another table, so the row's own onupdate would not fire for them.
        conversation.updated_at = utcnow()
    session.flush()
    messages = repository.messages_by_conversation(session, [conversation.id])[conversation.id]
    return conversation, messages


def set_correction(
    session: Session,
    organization_id: str,
    agent_id: str,
    conversation_id: str,
    index: int,
    correction: CorrectionIn | None,
) -> tuple[Conversation, list[ConversationMessage]]:
    """Record (or with None, remove) a better reply to the assistant message at ``index``."""
    conversation = _get_conversation(session, organization_id, agent_id, conversation_id)
    messages = repository.messages_by_conversation(session, [conversation.id])[conversation.id]
    if not 0 <= index < len(messages):
        raise NotFound(
            f"Conversation {conversation.id} has no message {index} (it has {len(messages)})",
            field="index",
        )
    message = messages[index]
    if message.role != "assistant":
        raise InvalidInput(
            f"index: message {index} is a {message.role} message; only an assistant reply "
            "can be corrected",
            field="index",
        )
    message.correction = correction.as_message() if correction else None
    conversation.updated_at = utcnow()
    session.flush()
    return conversation, messages


def delete_conversation(
    session: Session, organization_id: str, agent_id: str, conversation_id: str
) -> Conversation:
    conversation = _get_conversation(session, organization_id, agent_id, conversation_id)
    conversation.deleted_at = utcnow()
    session.flush()
    return conversation


def count_conversations_for_import(
    session: Session,
    organization_id: str,
    *,
    agent_ids: list[str] | None = None,
    started_from: datetime | None = None,
    started_to: datetime | None = None,
    min_rating: int | None = None,
    max_rating: int | None = None,
    tags: list[str] | None = None,
    corrected: bool = False,
) -> int:
    """How many conversations an import with these filters would read, for a preview.

    Filters mean what they mean in ``iter_conversations_for_import``.
    """
    conversation_filter = _import_filter(
        session,
        organization_id,
        agent_ids,
        started_from,
        started_to,
        (min_rating, max_rating),
        tags,
        corrected,
    )
    return repository.count_conversations(session, organization_id, conversation_filter)


def iter_conversations_for_import(
    session: Session,
    organization_id: str,
    *,
    agent_ids: list[str] | None = None,
    started_from: datetime | None = None,
    started_to: datetime | None = None,
    min_rating: int | None = None,
    max_rating: int | None = None,
    tags: list[str] | None = None,
    corrected: bool = False,
    batch_size: int = 500,
) -> Iterator[tuple[Conversation, list[ConversationMessage]]]:
    """Stream matching conversations, oldest first, each with its messages in order.

    Only ``batch_size`` conversations (and their messages) are loaded at a time. ``None`` or
    an empty list filters nothing; ``started_from`` is inclusive, ``started_to`` exclusive;
    ``tags`` match any of them; ``corrected`` keeps conversations with at least one corrected
    reply. Conversations of deleted agents are skipped. The filters are
    checked now, not on the first ``next()``: an agent id the organization does not own
    raises ``NotFound`` and a bad ``batch_size`` or rating raises ``InvalidInput``.
    """
    if batch_size < 1:
        raise InvalidInput("batch_size must be at least 1", field="batch_size")
    conversation_filter = _import_filter(
        session,
        organization_id,
        agent_ids,
        started_from,
        started_to,
        (min_rating, max_rating),
        tags,
        corrected,
    )
    return _stream_with_messages(session, organization_id, conversation_filter, batch_size)


def _stream_with_messages(
    session: Session, organization_id: str, conversation_filter: ConversationFilter, size: int
) -> Iterator[tuple[Conversation, list[ConversationMessage]]]:
    for batch in repository.iter_conversation_batches(
        session, organization_id, conversation_filter, size
    ):
        messages = repository.messages_by_conversation(session, [c.id for c in batch])
        for conversation in batch:
            yield conversation, messages[conversation.id]


def _import_filter(
    session: Session,
    organization_id: str,
    agent_ids: list[str] | None,
    started_from: datetime | None,
    started_to: datetime | None,
    ratings: tuple[int | None, int | None],
    tags: list[str] | None,
    corrected: bool,
) -> ConversationFilter:
    if agent_ids:
        missing = set(agent_ids) - repository.owned_agent_ids(session, organization_id, agent_ids)
        if missing:
            raise NotFound(f"Agent {sorted(missing)[0]} not found", field="agent_ids")
    _check_range(started_from, started_to, field="started_to")
    min_rating, max_rating = ratings
    for name, rating in (("min_rating", min_rating), ("max_rating", max_rating)):
        if rating is not None and not 1 <= rating <= 5:
            raise InvalidInput(f"{name} must be between 1 and 5", field=name)
    if min_rating is not None and max_rating is not None and min_rating > max_rating:
        raise InvalidInput("max_rating is below min_rating", field="max_rating")
    return _conversation_filter(
        agent_ids=agent_ids,
        started_from=started_from,
        started_to=started_to,
        min_rating=min_rating,
        tags=tags,
        max_rating=max_rating,
        corrected=corrected,
    )


def _check_range(started_from: datetime | None, started_to: datetime | None, *, field: str) -> None:
    if started_from and started_to and utc_moment(started_from) > utc_moment(started_to):
        raise InvalidInput("The end of the started_at range is before its start", field=field)


def _conversation_filter(
    *,
    agent_ids: list[str] | None,
    started_from: datetime | None,
    started_to: datetime | None,
    min_rating: int | None,
    tags: list[str] | None,
    max_rating: int | None = None,
    corrected: bool = False,
) -> ConversationFilter:
    return ConversationFilter(
        agent_ids=tuple(agent_ids or ()),
        started_from=utc_moment(started_from) if started_from else None,
        started_to=utc_moment(started_to) if started_to else None,
        min_rating=min_rating,
        max_rating=max_rating,
        tags=tuple(normalize_tags(tags or ())),
        corrected=corrected,
    )
