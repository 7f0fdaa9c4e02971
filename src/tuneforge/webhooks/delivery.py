"""Signed, at-least-once delivery of the outbox's events.

Dispatchers claim a due delivery with a lease (``repository.claim_due_delivery``), POST the
event signed per Standard Webhooks, log the attempt and either finish the delivery or
schedule the next try. The ``webhook-id`` is the event id, the same on every retry and from
every process, so receivers can drop duplicates. A process that dies mid-delivery leaves its
lease to expire; another dispatcher then sends the delivery again. Failed attempts are
retried with doubling delays for about a day, then the delivery is marked failed.

Delivery runs on threads of its own in every process that runs workers: a training job keeps
a worker thread busy for minutes, and events must not wait for it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.engine import unit_of_work
from tuneforge.db.tables.webhooks import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from tuneforge.webhooks import repository
from tuneforge.webhooks.destinations import Destination, RefusedDestination, resolve
from tuneforge.webhooks.outbox import payload
from tuneforge.webhooks.signing import signed_headers

log = logging.getLogger(__name__)

USER_AGENT = "TuneForge-Webhooks/0.1"
EXCERPT_BYTES = 500  # of a refusing receiver's answer, kept in the delivery log
MAX_ERROR_CHARS = 2000
MAX_ERROR_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class DeliveryConfig:
    """How dispatchers send and retry; tests shorten the delays."""

    timeout_seconds: float = 10.0
    # Longer than a send can take, so only a dead process's lease expires.
    lease_seconds: float = 60.0
    allow_private_destinations: bool = False
    first_retry_seconds: float = 10.0
    max_retry_seconds: float = 4 * 60 * 60
    give_up_after_seconds: float = 24 * 60 * 60
    senders: int = 4
    idle_seconds: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        timeout = settings.webhook_timeout_seconds
        return cls(
            timeout_seconds=timeout,
            lease_seconds=settings.worker_lease_seconds + 2 * timeout,
            allow_private_destinations=settings.webhook_allow_private_destinations,
        )

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed tries: 10 s, 20 s, 40 s, ... up to 4 h."""
        return min(self.max_retry_seconds, self.first_retry_seconds * 2 ** min(attempts - 1, 40))


@dataclass(frozen=True)
class Message:
    """What one POST needs, read before sending so no transaction waits on a receiver."""

    url: str
    secrets: tuple[str, ...]
    message_id: str
    body: bytes


@dataclass(frozen=True)
class Outgoing:
    """A claimed delivery's attempt: the message, and what to log it against."""

    delivery_id: int
    endpoint_id: str
    attempt: int
    message: Message


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    duration_ms: int
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> tuple[str, ...]:
    """The current secret, and the previous one while a rotation keeps it valid."""
    previous = endpoint.previous_signing_secret
    expires = endpoint.previous_secret_expires_at
    if previous and expires is not None and expires > now:
        return (endpoint.signing_secret, previous)
    return (endpoint.signing_secret,)


def new_client(config: DeliveryConfig) -> httpx.Client:
    """No proxies from the environment (the checked address must be the one connected to)
    and no kept-alive connections (each delivery connects to the address it checked)."""
    return httpx.Client(
        timeout=config.timeout_seconds,
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def send(client: httpx.Client, config: DeliveryConfig, message: Message) -> Outcome:
    """POST the event once; any answer but a 2xx, and any failure to get one, is an error."""
    started = time.monotonic()
    try:
        destination = resolve(message.url, allow_private=config.allow_private_destinations)
        status_code, excerpt = _post(client, destination, message)
    except RefusedDestination as exc:
        return _outcome(started, None, exc.detail)
    except httpx.TimeoutException:
        return _outcome(started, None, f"No answer within {config.timeout_seconds:g} s")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return _outcome(started, None, f"{type(exc).__name__}: {exc}")
    if 200 <= status_code < 300:
        return _outcome(started, status_code, None)
    error = f"HTTP {status_code}: {excerpt}" if excerpt else f"HTTP {status_code}"
    return _outcome(started, status_code, error)


def _post(client: httpx.Client, destination: Destination, message: Message) -> tuple[int, str]:
    """Try the checked addresses in resolver order until one accepts the connection."""
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "host": destination.host_header,
        **signed_headers(message.secrets, message.message_id, int(time.time()), message.body),
    }
    tls = {"sni_hostname": destination.server_name} if destination.url.scheme == "https" else {}
    last = len(destination.addresses) - 1
    for index, address in enumerate(destination.addresses):
        try:
            with client.stream(
                "POST",
                destination.url_for(address),
                headers=headers,
                content=message.body,
                extensions=tls,
            ) as response:
                return response.status_code, _excerpt(response)
        except httpx.ConnectError:
            if index == last:
                raise
    raise httpx.ConnectError(f"{destination.server_name} has no address")


def _excerpt(response: httpx.Response) -> str:
    if response.is_success:
        return ""
    data = b""
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= EXCERPT_BYTES:
            break
    return data[:EXCERPT_BYTES].decode("utf-8", errors="replace").strip()


def _outcome(started: float, status_code: int | None, error: str | None) -> Outcome:
    duration_ms = round((time.monotonic() - started) * 1000)
    if error is not None:
        error = error.replace("\x00", "")[:MAX_ERROR_CHARS]  # PostgreSQL text holds no NUL
    return Outcome(status_code, duration_ms, error)


def claim_outgoing(session: Session, owner: str, config: DeliveryConfig) -> Outgoing | None:
    delivery = repository.claim_due_delivery(session, owner, config.lease_seconds)
    if delivery is None:
        return None
    # Deleting an endpoint or event deletes its deliveries, so both are there.
    endpoint = session.get_one(WebhookEndpoint, delivery.endpoint_id)
    event = session.get_one(WebhookEvent, delivery.event_id)
    return Outgoing(
        delivery_id=delivery.id,
        endpoint_id=endpoint.id,
        attempt=delivery.attempts,
        message=message_for(endpoint, event),
    )


def message_for(endpoint: WebhookEndpoint, event: WebhookEvent) -> Message:
    return Message(
        url=endpoint.url,
        secrets=signing_secrets(endpoint, utcnow()),
        message_id=event.id,
        body=payload(event),
    )


def record_attempt(
    session: Session, outgoing: Outgoing, outcome: Outcome, owner: str, config: DeliveryConfig
) -> None:
    """Log the attempt; then, if the lease is still ours, finish or reschedule the delivery."""
    delivery = session.get(WebhookDelivery, outgoing.delivery_id, with_for_update=True)
    if delivery is None:
        return  # its endpoint was deleted meanwhile
    session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            endpoint_id=outgoing.endpoint_id,
            attempt=outgoing.attempt,
            status_code=outcome.status_code,
            duration_ms=outcome.duration_ms,
            error=outcome.error,
        )
    )
    if delivery.lease_owner != owner:
        return  # our lease expired and another dispatcher holds the delivery now
    now = utcnow()
    delivery.lease_owner = None
    delivery.lease_expires_at = None
    retry_at = now + timedelta(seconds=config.retry_delay(delivery.attempts))
    if outcome.succeeded or retry_at - delivery.created_at > timedelta(
        seconds=config.give_up_after_seconds
    ):
        delivery.status = DeliveryStatus.SUCCEEDED if outcome.succeeded else DeliveryStatus.FAILED
        delivery.finished_at = now
        delivery.run_after = None
    else:
        delivery.run_after = retry_at


def new_dispatcher_id() -> str:
    """Unique per dispatcher and readable in the deliveries table: host, process, suffix."""
    return f"webhooks:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class WebhookDispatcher:
    """One delivery loop: claim a due delivery, send it, log it, finish or reschedule it."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        config: DeliveryConfig,
        dispatcher_id: str | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.config = config
        self.dispatcher_id = dispatcher_id or new_dispatcher_id()
        self._client = new_client(config)

    def close(self) -> None:
        self._client.close()

    def run_once(self) -> bool:
        """Send one due delivery; False when none was due."""
        with unit_of_work(self.session_factory) as session:
            if not repository.has_due_delivery(session):
                return False
        with unit_of_work(self.session_factory) as session:
            outgoing = claim_outgoing(session, self.dispatcher_id, self.config)
        if outgoing is None:
            return False
        outcome = send(self._client, self.config, outgoing.message)
        with unit_of_work(self.session_factory) as session:
            record_attempt(session, outgoing, outcome, self.dispatcher_id, self.config)
        return True

    def run_forever(self, stop_event: threading.Event) -> None:
        """Deliver until ``stop_event`` is set; errors (a lost database) back off, never exit."""
        failures = 0
        try:
            while not stop_event.is_set():
                try:
                    worked = self.run_once()
                    failures = 0
                except Exception:
                    failures += 1
                    log.exception("Webhook dispatcher %s failed", self.dispatcher_id)
                    worked = False
                if not worked:
                    pause = self.config.idle_seconds * 2**failures
                    stop_event.wait(min(pause, MAX_ERROR_BACKOFF_SECONDS))
        finally:
            self.close()


class DeliveryThreads:
    """The webhook dispatchers of a server or worker process, each on a daemon thread."""

    def __init__(self, session_factory: sessionmaker[Session], config: DeliveryConfig) -> None:
        self.stop_event = threading.Event()
        self.dispatchers = [
            WebhookDispatcher(session_factory, config) for _ in range(config.senders)
        ]
        self._threads = [
            threading.Thread(
                target=dispatcher.run_forever,
                args=(self.stop_event,),
                name=f"tuneforge-webhooks-{number}",
                daemon=True,
            )
            for number, dispatcher in enumerate(self.dispatchers)
        ]

    def start(self) -> DeliveryThreads:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Let sends in flight finish, waiting at most ``timeout`` in all."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
