"""SQL for agents and conversations; every org-owned query starts from ``org_scoped``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from tuneforge.db.scoping import org_scoped
from tuneforge.db.tables.agents import Agent, Conversation, ConversationMessage, ConversationTag
from tuneforge.db.tables.models import FineTunedModel


@dataclass(frozen=True)
class ConversationFilter:
    """Which conversations a listing or an import covers; empty fields filter nothing.

    ``started_from`` is inclusive and ``started_to`` exclusive, so ranges tile without overlap;
    ``tags`` matches conversations having any of them; ``corrected`` those with a corrected
    reply. A rating bound leaves unrated conversations out.
    """

    agent_ids: Sequence[str] = ()
    started_from: datetime | None = None
    started_to: datetime | None = None
    min_rating: int | None = None
    max_rating: int | None = None
    tags: Sequence[str] = ()
    corrected: bool = False


def _count(session: Session, stmt: Select[Any]) -> int:
    subquery = stmt.order_by(None).subquery()
    return session.scalar(select(func.count()).select_from(subquery)) or 0


def list_agents(
    session: Session, organization_id: str, *, name_contains: str | None, limit: int, offset: int
) -> tuple[list[Agent], int]:
    stmt = org_scoped(Agent, organization_id)
    if name_contains:
        stmt = stmt.where(func.lower(Agent.name).contains(name_contains.lower(), autoescape=True))
    page = stmt.order_by(Agent.created_at.desc(), Agent.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(page)), _count(session, stmt)


def find_fine_tuned_model(
    session: Session, organization_id: str, model_id: str
) -> FineTunedModel | None:
    stmt = org_scoped(FineTunedModel, organization_id).where(FineTunedModel.id == model_id)
    return session.scalars(stmt).first()


def owned_agent_ids(session: Session, organization_id: str, agent_ids: Sequence[str]) -> set[str]:
    stmt = org_scoped(Agent, organization_id).where(Agent.id.in_(agent_ids))
    return {agent.id for agent in session.scalars(stmt)}


def _filtered_conversations(
    organization_id: str, conversation_filter: ConversationFilter
) -> Select[Any]:
    """Live conversations of live agents matching the filter."""
    f = conversation_filter
    stmt = (
        org_scoped(Conversation, organization_id)
        .join(Agent, Agent.id == Conversation.agent_id)
        .where(Agent.deleted_at.is_(None))
    )
    if f.agent_ids:
        stmt = stmt.where(Conversation.agent_id.in_(f.agent_ids))
    if f.started_from is not None:
        stmt = stmt.where(Conversation.started_at >= f.started_from)
    if f.started_to is not None:
        stmt = stmt.where(Conversation.started_at < f.started_to)
    if f.min_rating is not None:
        stmt = stmt.where(Conversation.rating >= f.min_rating)
    if f.max_rating is not None:
        stmt = stmt.where(Conversation.rating <= f.max_rating)
    if f.corrected:
        stmt = stmt.where(
            exists().where(
                ConversationMessage.conversation_id == Conversation.id,
                ConversationMessage.correction.is_not(None),
            )
        )
    if f.tags:
        stmt = stmt.where(
            exists().where(
                ConversationTag.conversation_id == Conversation.id,
                ConversationTag.tag.in_(f.tags),
            )
        )
    return stmt


def list_conversations(
    session: Session,
    organization_id: str,
    conversation_filter: ConversationFilter,
    *,
    limit: int,
    offset: int,
) -> tuple[list[tuple[Conversation, int]], int]:
    """A page of conversations, newest first, each with its message count, and the total."""
    stmt = _filtered_conversations(organization_id, conversation_filter)
    message_count = (
        select(func.count(ConversationMessage.id))
        .where(ConversationMessage.conversation_id == Conversation.id)
        .correlate(Conversation)
        .scalar_subquery()
    )
    page = (
        stmt.add_columns(message_count)
        .order_by(Conversation.started_at.desc(), Conversation.id.desc())
        .limit(limit)
        .offset(offset)
    )
    rows = [(conversation, count) for conversation, count in session.execute(page)]
    return rows, _count(session, stmt)


def count_conversations(
    session: Session, organization_id: str, conversation_filter: ConversationFilter
) -> int:
    return _count(session, _filtered_conversations(organization_id, conversation_filter))


def messages_by_conversation(
    session: Session, conversation_ids: Sequence[str]
) -> dict[str, list[ConversationMessage]]:
    """Messages in order, grouped by conversation; the ids must come from a scoped query."""
    grouped: dict[str, list[ConversationMessage]] = {cid: [] for cid in conversation_ids}
    stmt = (
        select(ConversationMessage)
        .where(ConversationMessage.conversation_id.in_(conversation_ids))
        .order_by(ConversationMessage.conversation_id, ConversationMessage.position)
    )
    for message in session.scalars(stmt):
        grouped[message.conversation_id].append(message)
    return grouped


def iter_conversation_batches(
    session: Session,
    organization_id: str,
    conversation_filter: ConversationFilter,
    batch_size: int,
) -> Iterator[list[Conversation]]:
    """Matching conversations oldest first, one batch per query.

    Keyset paging on (started_at, id) keeps each query cheap and stays correct when the
    caller writes rows between batches, which an OFFSET or an open cursor would not.
    """
    ordered = _filtered_conversations(organization_id, conversation_filter).order_by(
        Conversation.started_at, Conversation.id
    )
    after: tuple[datetime, str] | None = None
    while True:
        stmt = ordered
        if after is not None:
            started_at, conversation_id = after
            stmt = stmt.where(
                or_(
                    Conversation.started_at > started_at,
                    and_(Conversation.started_at == started_at, Conversation.id > conversation_id),
                )
            )
        batch = list(session.scalars(stmt.limit(batch_size)))
        if not batch:
            return
        after = (batch[-1].started_at, batch[-1].id)
        yield batch
        if len(batch) < batch_size:
            return
