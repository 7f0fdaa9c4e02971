"""The outbox: an event is written in the same transaction as the change that causes it.

A job that succeeds and the ``fine_tuning.job.succeeded`` event for it commit together or
not at all, so no event is lost to a crash after the commit and none is sent for a change
that rolled back. ``record_event`` adds the event and one pending delivery per endpoint of
the organization that subscribed to its type; the dispatcher (``delivery.py``) sends them.
"""

from __future__ import annotations

import json
from typing import Literal, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.db.base import utcnow
from tuneforge.db.tables.evals import EvalStatus
from tuneforge.db.tables.jobs import JobStatus
from tuneforge.db.tables.webhooks import WebhookDelivery, WebhookEndpoint, WebhookEvent, event_id

EventType = Literal[
    "fine_tuning.job.succeeded",
    "fine_tuning.job.failed",
    "fine_tuning.job.cancelled",
    "eval.run.succeeded",
    "eval.run.failed",
    "eval.run.canceled",
]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)

# OpenAI spells the eval run's event "canceled" and the job's "cancelled".
JOB_EVENTS: dict[JobStatus, EventType] = {
    JobStatus.SUCCEEDED: "fine_tuning.job.succeeded",
    JobStatus.FAILED: "fine_tuning.job.failed",
    JobStatus.CANCELLED: "fine_tuning.job.cancelled",
}
EVAL_RUN_EVENTS: dict[EvalStatus, EventType] = {
    EvalStatus.SUCCEEDED: "eval.run.succeeded",
    EvalStatus.FAILED: "eval.run.failed",
    EvalStatus.CANCELLED: "eval.run.canceled",
}


def record_event(
    session: Session, organization_id: str, event_type: EventType, object_id: str
) -> WebhookEvent | None:
    """Queue the event for every endpoint subscribed to its type, in the caller's
    transaction; None (and nothing written) when no endpoint wants it."""
    rows = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
            WebhookEndpoint.organization_id == organization_id
        )
    ).all()
    endpoint_ids = [row.id for row in rows if event_type in row.event_types]
    if not endpoint_ids:
        return None
    now = utcnow()
    event = WebhookEvent(
        id=event_id(),
        organization_id=organization_id,
        event_type=event_type,
        object_id=object_id,
        created_at=now,
    )
    session.add(event)
    session.flush()  # the deliveries reference it
    session.add_all(
        WebhookDelivery(event_id=event.id, endpoint_id=endpoint_id, run_after=now)
        for endpoint_id in endpoint_ids
    )
    session.flush()
    return event


def payload(event: WebhookEvent) -> bytes:
    """OpenAI's event body; the same bytes on every attempt, so retries are identical."""
    document = {
        "id": event.id,
        "object": "event",
        "created_at": int(event.created_at.timestamp()),
        "type": event.event_type,
        "data": {"id": event.object_id},
    }
    return json.dumps(document, separators=(",", ":")).encode()
