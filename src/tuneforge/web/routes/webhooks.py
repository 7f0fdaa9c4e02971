"""Webhook settings: the organization's endpoints, creating one (its secret shown once),
rotating, testing and deleting, and each endpoint's delivery log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from tuneforge.auth.service import Principal
from tuneforge.bounds import MAX_ROW_ID, Offset
from tuneforge.db.session import SessionDep
from tuneforge.errors import InvalidInput
from tuneforge.state import SessionFactoryDep, SettingsDep
from tuneforge.web.deps import (
    FormDep,
    WebPrincipal,
    action_done,
    field_errors,
    is_htmx,
    parse_form,
)
from tuneforge.web.templating import render
from tuneforge.webhooks import service
from tuneforge.webhooks.outbox import EVENT_TYPES
from tuneforge.webhooks.schemas import TestEventRequest, WebhookEndpointCreate
from tuneforge.webhooks.signing import secret_hint

router = APIRouter(prefix="/dashboard/settings/webhooks")

BASE = "/dashboard/settings/webhooks"
PAGE_SIZE = 20
LOG_PAGE = 25


def _list_page(
    request: Request,
    principal: Principal,
    session: SessionDep,
    *,
    offset: int = 0,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    created: Any = None,
    status_code: int = 200,
) -> Response:
    endpoints, total = service.list_endpoints(
        session, principal.organization_id, limit=PAGE_SIZE, offset=offset
    )
    context = {
        "endpoints": endpoints,
        "total": total,
        "offset": offset,
        "page_size": PAGE_SIZE,
        "event_types": EVENT_TYPES,
        "values": values or {"event_types": list(EVENT_TYPES)},
        "errors": errors or {},
        "created": created,
    }
    return render(
        request,
        "webhooks/list.html",
        context,
        principal=principal,
        section="webhooks",
        status_code=status_code,
    )


@router.get("")
def webhook_list(
    request: Request, principal: WebPrincipal, session: SessionDep, offset: Offset = 0
) -> Response:
    return _list_page(request, principal, session, offset=offset)


@router.post("")
def create_webhook(
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    form: FormDep,
) -> Response:
    """Renders the list with the new secret instead of redirecting: it is shown only once."""
    values = {
        "name": str(form.get("name") or ""),
        "url": str(form.get("url") or ""),
        "event_types": [str(value) for value in form.getlist("event_types")],
    }
    try:
        body = WebhookEndpointCreate.model_validate(values)
        endpoint, secret = service.create_endpoint(
            session, settings, principal.organization_id, body
        )
    except ValidationError as exc:
        errors = field_errors(exc)
    except InvalidInput as exc:
        errors = {str(exc.extra.get("field", "form")): exc.detail}
    else:
        created = {"endpoint": endpoint, "secret": secret}
        return _list_page(request, principal, session, created=created, status_code=201)
    return _list_page(request, principal, session, values=values, errors=errors, status_code=422)


def _detail(
    request: Request,
    principal: Principal,
    session: SessionDep,
    endpoint_id: str,
    *,
    after: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    org = principal.organization_id
    endpoint = service.get_endpoint(session, org, endpoint_id)
    views, has_more = service.list_attempts(session, org, endpoint.id, before=after, limit=LOG_PAGE)
    context = {
        "endpoint": endpoint,
        "hint": secret_hint(endpoint.signing_secret),
        "attempts": views,
        "has_more": has_more,
        "after": after,
        "event_types": EVENT_TYPES,
        **(extra or {}),
    }
    return render(request, "webhooks/detail.html", context, principal=principal, section="webhooks")


@router.get("/{endpoint_id}")
def webhook_detail(
    endpoint_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    after: Annotated[int | None, Query(ge=0, le=MAX_ROW_ID)] = None,
) -> Response:
    return _detail(request, principal, session, endpoint_id, after=after)


@router.post("/{endpoint_id}/rotate")
def rotate_secret(
    endpoint_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    keep_old: Annotated[str, Form()] = "",
) -> Response:
    endpoint, secret = service.rotate_secret(
        session, principal.organization_id, endpoint_id, keep_old=bool(keep_old)
    )
    context = {"secret": secret, "kept_old": bool(keep_old)}
    if is_htmx(request):
        return render(request, "webhooks/_secret.html", context, principal=principal)
    return _detail(request, principal, session, endpoint.id, extra=context)


@router.post("/{endpoint_id}/test")
def send_test_event(
    endpoint_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    session_factory: SessionFactoryDep,
    settings: SettingsDep,
    event_type: Annotated[str, Form()] = "",
) -> Response:
    body = parse_form(TestEventRequest, {"event_type": event_type})
    sent = service.send_test_event(
        session_factory, settings, principal.organization_id, endpoint_id, body.event_type
    )
    if is_htmx(request):
        return render(request, "webhooks/_test_result.html", {"sent": sent}, principal=principal)
    return _detail(request, principal, session, endpoint_id, extra={"sent": sent})


@router.post("/{endpoint_id}/delete")
def delete_webhook(
    endpoint_id: str, request: Request, principal: WebPrincipal, session: SessionDep
) -> Response:
    service.delete_endpoint(session, principal.organization_id, endpoint_id)
    return action_done(request, BASE)
