"""Webhook endpoints: create, change, rotate, delete, send a test event, read the log.

Endpoints go through ``get_owned``, so another organization's endpoint is a 404. Secrets are
returned only by create and rotate. A test event is sent at once, from the request, and
logged like any delivery; it is never retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.engine import unit_of_work
from tuneforge.db.scoping import get_owned
from tuneforge.db.tables.webhooks import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    event_id,
)
from tuneforge.errors import BadRequest
from tuneforge.webhooks import repository
from tuneforge.webhooks.delivery import DeliveryConfig, Outcome, message_for, new_client, send
from tuneforge.webhooks.destinations import check_destination
from tuneforge.webhooks.outbox import EventType
from tuneforge.webhooks.repository import AttemptView
from tuneforge.webhooks.schemas import WebhookEndpointCreate, WebhookEndpointUpdate
from tuneforge.webhooks.signing import new_secret

LABEL = "Webhook endpoint"
OLD_SECRET_GRACE = timedelta(hours=24)
TEST_OBJECT_ID = "test"  # a test event's ``data.id`` names no real object


def get_endpoint(session: Session, organization_id: str, endpoint_id: str) -> WebhookEndpoint:
    return get_owned(session, WebhookEndpoint, endpoint_id, organization_id, label=LABEL)


def create_endpoint(
    session: Session, settings: Settings, organization_id: str, body: WebhookEndpointCreate
) -> tuple[WebhookEndpoint, str]:
    """The new endpoint and its signing secret, which is shown this once."""
    check_destination(body.url, allow_private=settings.webhook_allow_private_destinations)
    secret = new_secret()
    endpoint = WebhookEndpoint(
        organization_id=organization_id,
        name=body.name,
        url=body.url,
        event_types=list(body.event_types),
        signing_secret=secret,
    )
    session.add(endpoint)
    session.flush()
    return endpoint, secret


def list_endpoints(
    session: Session, organization_id: str, *, limit: int, offset: int
) -> tuple[list[WebhookEndpoint], int]:
    return repository.list_endpoints(session, organization_id, limit=limit, offset=offset)


def list_endpoints_after(
    session: Session, organization_id: str, *, after: str | None, limit: int
) -> tuple[list[WebhookEndpoint], bool]:
    return repository.endpoints_after(session, organization_id, after=after, limit=limit)


def update_endpoint(
    session: Session,
    settings: Settings,
    organization_id: str,
    endpoint_id: str,
    body: WebhookEndpointUpdate,
) -> WebhookEndpoint:
    """Only fields that change are written, so an unchanged update keeps ``updated_at``."""
    endpoint = get_owned(
        session, WebhookEndpoint, endpoint_id, organization_id, label=LABEL, for_update=True
    )
    if body.url is not None and body.url != endpoint.url:
        check_destination(body.url, allow_private=settings.webhook_allow_private_destinations)
        endpoint.url = body.url
    if body.name is not None and body.name != endpoint.name:
        endpoint.name = body.name
    if body.event_types is not None and list(body.event_types) != endpoint.event_types:
        endpoint.event_types = list(body.event_types)
    session.flush()
    return endpoint


def delete_endpoint(session: Session, organization_id: str, endpoint_id: str) -> str:
    """Deletes its pending deliveries and its log too: nothing is sent to it afterwards."""
    endpoint = get_endpoint(session, organization_id, endpoint_id)
    session.delete(endpoint)
    session.flush()
    return endpoint_id


def rotate_secret(
    session: Session, organization_id: str, endpoint_id: str, *, keep_old: bool
) -> tuple[WebhookEndpoint, str]:
    """A new secret at once; with ``keep_old`` deliveries carry both signatures for 24 h."""
    endpoint = get_owned(
        session, WebhookEndpoint, endpoint_id, organization_id, label=LABEL, for_update=True
    )
    secret = new_secret()
    now = utcnow()
    endpoint.previous_signing_secret = endpoint.signing_secret if keep_old else None
    endpoint.previous_secret_expires_at = now + OLD_SECRET_GRACE if keep_old else None
    endpoint.signing_secret = secret
    session.flush()
    return endpoint, secret


@dataclass(frozen=True)
class TestSent:
    endpoint_id: str
    event_type: EventType
    status_code: int


def send_test_event(
    session_factory: sessionmaker[Session],
    settings: Settings,
    organization_id: str,
    endpoint_id: str,
    event_type: EventType,
) -> TestSent:
    """Send a sample event now and log it. No transaction stays open while the receiver
    answers; a receiver that cannot be reached is a 400 naming ``url``."""
    config = DeliveryConfig.from_settings(settings)
    now = utcnow()
    event = WebhookEvent(
        id=event_id(),
        organization_id=organization_id,
        event_type=event_type,
        object_id=TEST_OBJECT_ID,
        test=True,
        created_at=now,
    )
    with unit_of_work(session_factory) as session:
        message = message_for(get_endpoint(session, organization_id, endpoint_id), event)
    with new_client(config) as client:
        outcome = send(client, config, message)
    with unit_of_work(session_factory) as session:
        if session.get(WebhookEndpoint, endpoint_id) is not None:  # not deleted meanwhile
            _log_test(session, event, endpoint_id, outcome)
    if outcome.status_code is None:
        raise BadRequest(f"The test event was not delivered: {outcome.error}", field="url")
    return TestSent(endpoint_id, event_type, outcome.status_code)


def _log_test(session: Session, event: WebhookEvent, endpoint_id: str, outcome: Outcome) -> None:
    now = utcnow()
    session.add(event)
    session.flush()
    delivery = WebhookDelivery(
        event_id=event.id,
        endpoint_id=endpoint_id,
        status=DeliveryStatus.SUCCEEDED if outcome.succeeded else DeliveryStatus.FAILED,
        attempts=1,
        finished_at=now,
    )
    session.add(delivery)
    session.flush()
    session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            endpoint_id=endpoint_id,
            attempt=1,
            status_code=outcome.status_code,
            duration_ms=outcome.duration_ms,
            error=outcome.error,
        )
    )


def list_attempts(
    session: Session,
    organization_id: str,
    endpoint_id: str,
    *,
    before: int | None,
    limit: int,
) -> tuple[list[AttemptView], bool]:
    """The endpoint's delivery log, newest attempt first."""
    endpoint = get_endpoint(session, organization_id, endpoint_id)
    return repository.attempts_before(session, endpoint.id, before=before, limit=limit)
