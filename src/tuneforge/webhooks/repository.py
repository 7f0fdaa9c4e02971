"""SQL for webhook endpoints, the delivery queue and the delivery log.

Endpoint queries start from ``org_scoped``; deliveries and attempts are reached through
their endpoint. Claiming mirrors the job queue (``worker/queue.py``): one
``UPDATE ... WHERE id = (SELECT ... LIMIT 1 FOR UPDATE SKIP LOCKED) AND <lease is free>
RETURNING`` on PostgreSQL, and the same statement on SQLite, where writers are serialized so
exactly one claimant's UPDATE matches. A claim must be its transaction's first statement.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from tuneforge.db.base import utcnow
from tuneforge.db.scoping import org_scoped
from tuneforge.db.tables.webhooks import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from tuneforge.errors import InvalidInput

Endpoint = WebhookEndpoint
Delivery = WebhookDelivery


def _newest_first(stmt: Select[Any]) -> Select[Any]:
    return stmt.order_by(Endpoint.created_at.desc(), Endpoint.id.desc())


def list_endpoints(
    session: Session, organization_id: str, *, limit: int, offset: int
) -> tuple[list[WebhookEndpoint], int]:
    stmt = org_scoped(Endpoint, organization_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    return list(session.scalars(_newest_first(stmt).limit(limit).offset(offset))), total


def endpoints_after(
    session: Session, organization_id: str, *, after: str | None, limit: int
) -> tuple[list[WebhookEndpoint], bool]:
    """A page of endpoints newest first, OpenAI's way: those older than ``after``."""
    stmt = org_scoped(Endpoint, organization_id)
    if after is not None:
        cursor = session.execute(
            select(Endpoint.created_at, Endpoint.id).where(
                Endpoint.organization_id == organization_id, Endpoint.id == after
            )
        ).first()
        if cursor is None:
            raise InvalidInput(f"No webhook endpoint {after} to page after", field="after")
        stmt = stmt.where(
            or_(
                Endpoint.created_at < cursor.created_at,
                and_(Endpoint.created_at == cursor.created_at, Endpoint.id < cursor.id),
            )
        )
    rows = list(session.scalars(_newest_first(stmt).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


class AttemptView(NamedTuple):
    """A delivery log line: the attempt, its event and where its delivery stands now."""

    attempt: WebhookAttempt
    event_id: str
    event_type: str
    test: bool
    delivery_status: DeliveryStatus
    next_attempt_at: datetime | None


def attempts_before(
    session: Session, endpoint_id: str, *, before: int | None, limit: int
) -> tuple[list[AttemptView], bool]:
    """An endpoint's attempts newest first; ``before`` an attempt id for the next page."""
    stmt = (
        select(
            WebhookAttempt,
            WebhookEvent.id,
            WebhookEvent.event_type,
            WebhookEvent.test,
            Delivery.status,
            Delivery.run_after,
        )
        .join(Delivery, Delivery.id == WebhookAttempt.delivery_id)
        .join(WebhookEvent, WebhookEvent.id == Delivery.event_id)
        .where(WebhookAttempt.endpoint_id == endpoint_id)
    )
    if before is not None:
        stmt = stmt.where(WebhookAttempt.id < before)
    rows = session.execute(stmt.order_by(WebhookAttempt.id.desc()).limit(limit + 1)).all()
    views = [
        AttemptView(
            attempt,
            event_id,
            event_type,
            test,
            status,
            run_after if status == DeliveryStatus.PENDING else None,
        )
        for attempt, event_id, event_type, test, status, run_after in rows
    ]
    return views[:limit], len(views) > limit


def _lease_is_free(now: datetime) -> ColumnElement[bool]:
    return or_(Delivery.lease_expires_at.is_(None), Delivery.lease_expires_at < now)


def _is_due(now: datetime) -> ColumnElement[bool]:
    return and_(
        Delivery.status == DeliveryStatus.PENDING, Delivery.run_after <= now, _lease_is_free(now)
    )


def has_due_delivery(session: Session) -> bool:
    """A read, so idle dispatchers poll without taking SQLite's write lock."""
    return bool(session.scalar(select(exists().where(_is_due(utcnow())))))


def claim_due_delivery(
    session: Session, owner: str, lease_seconds: float
) -> WebhookDelivery | None:
    """Lease the longest-due delivery and count the attempt it is about to make."""
    now = utcnow()
    next_id = (
        select(Delivery.id)
        .where(_is_due(now))
        .order_by(Delivery.run_after, Delivery.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(Delivery)
        .where(Delivery.id == next_id, _lease_is_free(now))
        .values(
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Delivery.attempts + 1,
        )
        .returning(Delivery)
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).first()
