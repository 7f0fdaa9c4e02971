"""Request and response shapes of webhook endpoints, field for field as the ``openai`` SDK
types them (``openai/types/webhooks/*.py``), plus the delivery log, which OpenAI lacks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from tuneforge.bounds import Name, no_nul
from tuneforge.db.tables.webhooks import WebhookEndpoint
from tuneforge.webhooks.destinations import webhook_url
from tuneforge.webhooks.outbox import EventType
from tuneforge.webhooks.repository import AttemptView
from tuneforge.webhooks.signing import secret_hint

MAX_URL_LENGTH = 2048


def _unique(values: list[EventType]) -> list[EventType]:
    return list(dict.fromkeys(values))


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


WebhookUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_URL_LENGTH),
    AfterValidator(no_nul),
    AfterValidator(webhook_url),
]
EventTypes = Annotated[
    list[EventType],
    Field(min_length=1, max_length=20, description="The event types to deliver here."),
    AfterValidator(_unique),
]


class WebhookEndpointCreate(BaseModel):
    name: Name
    url: WebhookUrl = Field(description="Where deliveries are POSTed: an http(s) URL.")
    event_types: EventTypes


class WebhookEndpointUpdate(BaseModel):
    """Fields left out (or null) keep their value."""

    name: Name | None = None
    url: WebhookUrl | None = None
    event_types: EventTypes | None = None


class RotateSecretRequest(BaseModel):
    keep_old_secret_active_for_24_hours: bool = Field(
        default=False, description="Sign with both secrets for 24 hours, for a smooth switch."
    )


class TestEventRequest(BaseModel):
    event_type: EventType


class WebhookEndpointOut(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    created_at: int
    updated_at: int | None = None
    name: str
    url: str
    event_types: list[str]
    signing_secret_hint: str | None = None

    @classmethod
    def from_row(cls, row: WebhookEndpoint) -> WebhookEndpointOut:
        return cls(
            id=row.id,
            created_at=unix(row.created_at),
            updated_at=unix(row.updated_at),
            name=row.name,
            url=row.url,
            event_types=row.event_types,
            signing_secret_hint=secret_hint(row.signing_secret),
        )


class WebhookEndpointWithSecret(WebhookEndpointOut):
    """Only on create and rotate: the secret is never shown again."""

    signing_secret: str

    @classmethod
    def with_secret(cls, row: WebhookEndpoint, secret: str) -> WebhookEndpointWithSecret:
        return cls(**WebhookEndpointOut.from_row(row).model_dump(), signing_secret=secret)


class DeletedWebhookEndpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool = True


class WebhookEndpointList(BaseModel):
    """Newest first; pass ``last_id`` as ``after`` for the next page."""

    object: Literal["list"] = "list"
    data: list[WebhookEndpointOut]
    has_more: bool
    first_id: str | None
    last_id: str | None

    @classmethod
    def of(cls, rows: Sequence[WebhookEndpoint], has_more: bool) -> WebhookEndpointList:
        return cls(
            data=[WebhookEndpointOut.from_row(row) for row in rows],
            has_more=has_more,
            first_id=rows[0].id if rows else None,
            last_id=rows[-1].id if rows else None,
        )


class WebhookEndpointPage(BaseModel):
    items: list[WebhookEndpointOut]
    total: int
    limit: int
    offset: int


class WebhookEndpointTestResult(BaseModel):
    """``success`` is always true; ``status_code`` is how the receiver answered."""

    object: Literal["webhook_endpoint.test"] = "webhook_endpoint.test"
    webhook_endpoint_id: str
    event_type: str
    status_code: int
    success: Literal[True] = True


class WebhookEventTypeList(BaseModel):
    object: Literal["list"] = "list"
    data: list[str]


class WebhookAttemptOut(BaseModel):
    """One attempt of one delivery, and where that delivery stands now."""

    id: int
    object: Literal["webhook_endpoint.delivery_attempt"] = "webhook_endpoint.delivery_attempt"
    webhook_endpoint_id: str
    event_id: str = Field(description="The `webhook-id` header: the same on every retry.")
    event_type: str
    test: bool
    attempt: int = Field(description="1 for the first try of this delivery.")
    status_code: int | None = Field(description="The receiver's answer; null if none came.")
    duration_ms: int
    error: str | None = Field(description="Why the attempt failed; null when it succeeded.")
    delivery_status: Literal["pending", "succeeded", "failed"]
    next_attempt_at: int | None = Field(description="When a pending delivery is tried again.")
    created_at: int

    @classmethod
    def from_view(cls, view: AttemptView) -> WebhookAttemptOut:
        attempt = view.attempt
        return cls(
            id=attempt.id,
            webhook_endpoint_id=attempt.endpoint_id,
            event_id=view.event_id,
            event_type=view.event_type,
            test=view.test,
            attempt=attempt.attempt,
            status_code=attempt.status_code,
            duration_ms=attempt.duration_ms,
            error=attempt.error,
            delivery_status=view.delivery_status.value,
            next_attempt_at=unix(view.next_attempt_at) if view.next_attempt_at else None,
            created_at=unix(attempt.created_at),
        )


class WebhookAttemptList(BaseModel):
    """Newest first; pass ``last_id`` as ``after`` for older attempts."""

    object: Literal["list"] = "list"
    data: list[WebhookAttemptOut]
    has_more: bool
    first_id: int | None
    last_id: int | None

    @classmethod
    def of(cls, views: Sequence[AttemptView], has_more: bool) -> WebhookAttemptList:
        data = [WebhookAttemptOut.from_view(view) for view in views]
        return cls(
            data=data,
            has_more=has_more,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
        )
