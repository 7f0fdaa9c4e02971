"""The native webhooks API (``/webhooks``); ``/v1/webhook_endpoints`` is OpenAI's shape of it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from tuneforge.auth.deps import BriefPrincipalDep, PrincipalDep
from tuneforge.bounds import MAX_ROW_ID, Offset
from tuneforge.db.session import SessionDep
from tuneforge.errors import BadRequest, InvalidInput, NotFound, Unauthorized, error_responses
from tuneforge.state import SessionFactoryDep, SettingsDep
from tuneforge.webhooks import service
from tuneforge.webhooks.schemas import (
    DeletedWebhookEndpoint,
    RotateSecretRequest,
    TestEventRequest,
    WebhookAttemptList,
    WebhookEndpointCreate,
    WebhookEndpointOut,
    WebhookEndpointPage,
    WebhookEndpointTestResult,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
AttemptsBefore = Annotated[
    int | None, Query(ge=0, le=MAX_ROW_ID, description="Attempts older than this id.")
]


@router.post(
    "",
    summary="Register a webhook endpoint (its signing secret is returned only this once)",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookEndpointWithSecret,
    responses=error_responses(Unauthorized, InvalidInput),
)
def create_endpoint(
    body: WebhookEndpointCreate, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> WebhookEndpointWithSecret:
    endpoint, secret = service.create_endpoint(session, settings, principal.organization_id, body)
    return WebhookEndpointWithSecret.with_secret(endpoint, secret)


@router.get(
    "",
    summary="List the organization's webhook endpoints, newest first",
    response_model=WebhookEndpointPage,
    responses=error_responses(Unauthorized, InvalidInput),
)
def list_endpoints(
    principal: PrincipalDep, session: SessionDep, limit: Limit = 20, offset: Offset = 0
) -> WebhookEndpointPage:
    rows, total = service.list_endpoints(
        session, principal.organization_id, limit=limit, offset=offset
    )
    items = [WebhookEndpointOut.from_row(row) for row in rows]
    return WebhookEndpointPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{webhook_endpoint_id}",
    summary="Get a webhook endpoint (with a hint of its secret)",
    response_model=WebhookEndpointOut,
    responses=error_responses(Unauthorized, NotFound),
)
def get_endpoint(
    webhook_endpoint_id: str, principal: PrincipalDep, session: SessionDep
) -> WebhookEndpointOut:
    endpoint = service.get_endpoint(session, principal.organization_id, webhook_endpoint_id)
    return WebhookEndpointOut.from_row(endpoint)


@router.patch(
    "/{webhook_endpoint_id}",
    summary="Change a webhook endpoint's name, URL or event types",
    response_model=WebhookEndpointOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def update_endpoint(
    webhook_endpoint_id: str,
    body: WebhookEndpointUpdate,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
) -> WebhookEndpointOut:
    endpoint = service.update_endpoint(
        session, settings, principal.organization_id, webhook_endpoint_id, body
    )
    return WebhookEndpointOut.from_row(endpoint)


@router.delete(
    "/{webhook_endpoint_id}",
    summary="Delete a webhook endpoint with its pending deliveries and its log",
    response_model=DeletedWebhookEndpoint,
    responses=error_responses(Unauthorized, NotFound),
)
def delete_endpoint(
    webhook_endpoint_id: str, principal: PrincipalDep, session: SessionDep
) -> DeletedWebhookEndpoint:
    deleted = service.delete_endpoint(session, principal.organization_id, webhook_endpoint_id)
    return DeletedWebhookEndpoint(id=deleted)


@router.post(
    "/{webhook_endpoint_id}/rotate-secret",
    summary="Replace the signing secret (the new one is returned only this once)",
    response_model=WebhookEndpointWithSecret,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def rotate_secret(
    webhook_endpoint_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    body: RotateSecretRequest | None = None,
) -> WebhookEndpointWithSecret:
    keep_old = body is not None and body.keep_old_secret_active_for_24_hours
    endpoint, secret = service.rotate_secret(
        session, principal.organization_id, webhook_endpoint_id, keep_old=keep_old
    )
    return WebhookEndpointWithSecret.with_secret(endpoint, secret)


@router.post(
    "/{webhook_endpoint_id}/test",
    summary="Send a signed sample event now and report the receiver's status code",
    response_model=WebhookEndpointTestResult,
    responses=error_responses(Unauthorized, NotFound, BadRequest, InvalidInput),
)
def send_test_event(
    webhook_endpoint_id: str,
    body: TestEventRequest,
    principal: BriefPrincipalDep,
    session_factory: SessionFactoryDep,
    settings: SettingsDep,
) -> WebhookEndpointTestResult:
    """Holds no session while the receiver answers (up to ``webhook_timeout_seconds``)."""
    sent = service.send_test_event(
        session_factory, settings, principal.organization_id, webhook_endpoint_id, body.event_type
    )
    return WebhookEndpointTestResult(
        webhook_endpoint_id=sent.endpoint_id,
        event_type=sent.event_type,
        status_code=sent.status_code,
    )


@router.get(
    "/{webhook_endpoint_id}/deliveries",
    summary="An endpoint's delivery log: every attempt, newest first",
    response_model=WebhookAttemptList,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def list_deliveries(
    webhook_endpoint_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    after: AttemptsBefore = None,
    limit: Limit = 20,
) -> WebhookAttemptList:
    views, has_more = service.list_attempts(
        session, principal.organization_id, webhook_endpoint_id, before=after, limit=limit
    )
    return WebhookAttemptList.of(views, has_more)
