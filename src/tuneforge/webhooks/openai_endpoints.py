"""``/v1/webhook_endpoints``, as the ``openai`` SDK's ``client.webhooks`` calls it.

The same service as the native ``/webhooks`` API, with OpenAI's paths, cursor paging and
error shape; the delivery log (``/deliveries``) is ours.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tuneforge.auth.deps import BriefPrincipalDep, PrincipalDep
from tuneforge.bounds import MAX_ROW_ID
from tuneforge.db.session import SessionDep
from tuneforge.errors import BadRequest, InvalidInput, NotFound, Unauthorized
from tuneforge.openai_errors import OpenAIErrorRoute, openai_error_responses
from tuneforge.state import SessionFactoryDep, SettingsDep
from tuneforge.webhooks import service
from tuneforge.webhooks.outbox import EVENT_TYPES
from tuneforge.webhooks.schemas import (
    DeletedWebhookEndpoint,
    RotateSecretRequest,
    TestEventRequest,
    WebhookAttemptList,
    WebhookEndpointCreate,
    WebhookEndpointList,
    WebhookEndpointOut,
    WebhookEndpointTestResult,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
    WebhookEventTypeList,
)

router = APIRouter(prefix="/v1", tags=["openai-compatible"], route_class=OpenAIErrorRoute)

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
After = Annotated[str | None, Query(max_length=64, description="The last id of the previous page.")]
AttemptsBefore = Annotated[
    int | None, Query(ge=0, le=MAX_ROW_ID, description="Attempts older than this id.")
]
BASE = "/webhook_endpoints"
ONE = BASE + "/{webhook_endpoint_id}"


@router.post(
    BASE,
    summary="Create a webhook endpoint (its signing secret is returned only this once)",
    response_model=WebhookEndpointWithSecret,
    responses=openai_error_responses(Unauthorized, InvalidInput),
)
def create_webhook_endpoint(
    body: WebhookEndpointCreate, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> WebhookEndpointWithSecret:
    endpoint, secret = service.create_endpoint(session, settings, principal.organization_id, body)
    return WebhookEndpointWithSecret.with_secret(endpoint, secret)


@router.get(
    BASE,
    summary="List webhook endpoints, newest first, with OpenAI's cursor paging",
    response_model=WebhookEndpointList,
    responses=openai_error_responses(Unauthorized, InvalidInput),
)
def list_webhook_endpoints(
    principal: PrincipalDep, session: SessionDep, after: After = None, limit: Limit = 20
) -> WebhookEndpointList:
    rows, has_more = service.list_endpoints_after(
        session, principal.organization_id, after=after, limit=limit
    )
    return WebhookEndpointList.of(rows, has_more)


@router.get(
    ONE,
    summary="Retrieve a webhook endpoint",
    response_model=WebhookEndpointOut,
    responses=openai_error_responses(Unauthorized, NotFound),
)
def retrieve_webhook_endpoint(
    webhook_endpoint_id: str, principal: PrincipalDep, session: SessionDep
) -> WebhookEndpointOut:
    endpoint = service.get_endpoint(session, principal.organization_id, webhook_endpoint_id)
    return WebhookEndpointOut.from_row(endpoint)


@router.post(
    ONE,
    summary="Update a webhook endpoint's name, URL or event types",
    response_model=WebhookEndpointOut,
    responses=openai_error_responses(Unauthorized, NotFound, InvalidInput),
)
def update_webhook_endpoint(
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
    ONE,
    summary="Delete a webhook endpoint with its pending deliveries and its log",
    response_model=DeletedWebhookEndpoint,
    responses=openai_error_responses(Unauthorized, NotFound),
)
def delete_webhook_endpoint(
    webhook_endpoint_id: str, principal: PrincipalDep, session: SessionDep
) -> DeletedWebhookEndpoint:
    deleted = service.delete_endpoint(session, principal.organization_id, webhook_endpoint_id)
    return DeletedWebhookEndpoint(id=deleted)


@router.post(
    ONE + "/rotate_secret",
    summary="Rotate a webhook endpoint's signing secret (returned only this once)",
    response_model=WebhookEndpointWithSecret,
    responses=openai_error_responses(Unauthorized, NotFound, InvalidInput),
)
def rotate_webhook_secret(
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
    ONE + "/test",
    summary="Send a signed sample event to a webhook endpoint now",
    response_model=WebhookEndpointTestResult,
    responses=openai_error_responses(Unauthorized, NotFound, BadRequest, InvalidInput),
)
def test_webhook_endpoint(
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
    ONE + "/deliveries",
    summary="A webhook endpoint's delivery log: every attempt, newest first",
    response_model=WebhookAttemptList,
    responses=openai_error_responses(Unauthorized, NotFound, InvalidInput),
)
def list_webhook_deliveries(
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


@router.get(
    "/webhook_event_types",
    summary="The webhook event types this server sends",
    response_model=WebhookEventTypeList,
    responses=openai_error_responses(Unauthorized),
)
def list_webhook_event_types(principal: PrincipalDep) -> WebhookEventTypeList:
    return WebhookEventTypeList(data=list(EVENT_TYPES))
