"""Webhooks: endpoints an organization registers, the events it is told about, and their
deliveries (a queue of their own, claimed with leases like jobs) with every attempt logged."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.db.base import Base, JSONType, new_id, str_enum
from tuneforge.db.tables.jobs import AutoIncrementId


def endpoint_id() -> str:
    return f"we_{new_id()}"


def event_id() -> str:
    return f"evt_{new_id()}"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookEndpoint(Base):
    """A receiver URL and the event types it wants; ids look like OpenAI's (``we_...``)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index(None, "organization_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=endpoint_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list[str]] = mapped_column(JSONType)
    # Kept in the clear: every delivery is signed with it. Shown once, on create and rotate.
    signing_secret: Mapped[str] = mapped_column(String(100))
    # After a rotation that keeps the old secret: deliveries carry both signatures until then.
    previous_signing_secret: Mapped[str | None] = mapped_column(String(100), default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookEvent(Base):
    """What happened, written in the transaction that made it happen (the outbox)."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=event_id)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(100))
    object_id: Mapped[str] = mapped_column(String(200))  # the payload's ``data.id``
    test: Mapped[bool] = mapped_column(default=False)


class WebhookDelivery(Base):
    """One event to one endpoint: due at ``run_after`` until it succeeds or is given up."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index(None, "status", "run_after"),)

    id: Mapped[int] = mapped_column(AutoIncrementId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[DeliveryStatus] = mapped_column(
        str_enum(DeliveryStatus), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # counted when claimed
    run_after: Mapped[datetime | None] = mapped_column(default=None)
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery, for the endpoint's delivery log."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index(None, "endpoint_id", "id"),)

    id: Mapped[int] = mapped_column(AutoIncrementId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    duration_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, default=None)
