"""``/v1/webhook_endpoints``, as the ``openai`` SDK's ``client.webhooks`` calls it.

The same service as the native ``/webhooks`` API, with OpenAI's paths, cursor paging and
error shape; the delivery log (``/deliveries``) is ours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query

from tuneforge.auth.deps import PrincipalDep
from tuneforge.db.session import SessionDep
from tuneforge.errors import BadRequest, InvalidInput, NotFound, TuneForgeError, Unauthorized
from tuneforge.openai_errors import OpenAIErrorRoute, openai_error_responses
from tuneforge.webhooks import endpoints as native
from tuneforge.webhooks import service
from tuneforge.webhooks.outbox import EVENT_TYPES
from tuneforge.webhooks.schemas import WebhookEndpointList, WebhookEventTypeList

router = APIRouter(prefix="/v1", tags=["openai-compatible"], route_class=OpenAIErrorRoute)

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
After = Annotated[str | None, Query(max_length=64, description="The last id of the previous page.")]
BASE = "/webhook_endpoints"
ONE = BASE + "/{webhook_endpoint_id}"


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


def _same_as_native(
    path: str, method: str, handler: Callable[..., Any], summary: str, *errors: type[TuneForgeError]
) -> None:
    """Serve a native handler on OpenAI's path, with OpenAI's error shape (and its 200 on
    create); the response model is the handler's return annotation."""
    router.add_api_route(
        path,
        handler,
        methods=[method],
        summary=summary,
        responses=openai_error_responses(*errors),
        name=f"openai_{handler.__name__}",
    )


_same_as_native(
    BASE,
    "POST",
    native.create_endpoint,
    "Create a webhook endpoint (its signing secret is returned only this once)",
    Unauthorized,
    InvalidInput,
)
_same_as_native(
    ONE, "GET", native.get_endpoint, "Retrieve a webhook endpoint", Unauthorized, NotFound
)
_same_as_native(
    ONE,
    "POST",
    native.update_endpoint,
    "Update a webhook endpoint's name, URL or event types",
    Unauthorized,
    NotFound,
    InvalidInput,
)
_same_as_native(
    ONE,
    "DELETE",
    native.delete_endpoint,
    "Delete a webhook endpoint with its pending deliveries and its log",
    Unauthorized,
    NotFound,
)
_same_as_native(
    ONE + "/rotate_secret",
    "POST",
    native.rotate_secret,
    "Replace the signing secret (the new one is returned only this once)",
    Unauthorized,
    NotFound,
    InvalidInput,
)
_same_as_native(
    ONE + "/test",
    "POST",
    native.send_test_event,
    "Send a signed sample event to a webhook endpoint now",
    Unauthorized,
    NotFound,
    BadRequest,
    InvalidInput,
)
_same_as_native(
    ONE + "/deliveries",
    "GET",
    native.list_deliveries,
    "A webhook endpoint's delivery log: every attempt, newest first",
    Unauthorized,
    NotFound,
    InvalidInput,
)


@router.get(
    "/webhook_event_types",
    summary="The webhook event types this server sends",
    response_model=WebhookEventTypeList,
    responses=openai_error_responses(Unauthorized),
)
def list_webhook_event_types(principal: PrincipalDep) -> WebhookEventTypeList:
    return WebhookEventTypeList(data=list(EVENT_TYPES))
