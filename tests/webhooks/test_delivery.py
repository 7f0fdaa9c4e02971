"""The outbox and the dispatcher against a real local receiver, on SQLite and PostgreSQL:
events are written with the change that causes them, signed so the ``openai`` SDK verifies
them, retried with the same ``webhook-id``, leased, and logged attempt by attempt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import openai
import pytest
from openai.types.webhooks import EvalRunCanceledWebhookEvent, FineTuningJobSucceededWebhookEvent
from sqlalchemy import select, update

from tests.fixtures.factories import Factories
from tests.webhooks.conftest import Factory, Received, Receiver, run_until
from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.engine import unit_of_work
from tuneforge.db.tables.evals import EvalRun
from tuneforge.db.tables.jobs import FineTuningJob, JobStatus
from tuneforge.db.tables.webhooks import DeliveryStatus, WebhookDelivery, WebhookEvent
from tuneforge.evals import service as evals_service
from tuneforge.jobs.states import transition_job
from tuneforge.webhooks import service
from tuneforge.webhooks.delivery import (
    DeliveryConfig,
    DeliveryThreads,
    WebhookDispatcher,
    claim_outgoing,
    new_client,
    record_attempt,
    send,
)
from tuneforge.webhooks.outbox import EventType
from tuneforge.webhooks.schemas import WebhookEndpointCreate

FAST = DeliveryConfig(
    timeout_seconds=5.0,
    lease_seconds=30.0,
    allow_private_destinations=True,
    first_retry_seconds=0.01,
    idle_seconds=0.01,
    senders=2,
)
ALLOW_PRIVATE = Settings(webhook_allow_private_destinations=True)
SUCCEEDED: list[EventType] = ["fine_tuning.job.succeeded"]


def unwrap(request: Received, secret: str) -> object:
    return openai.OpenAI(api_key="unused").webhooks.unwrap(
        request.body, request.headers, secret=secret
    )


@pytest.fixture
def organization_id(session_factory: Factory) -> str:
    with session_factory() as session:
        return Factories(session).organization()


@pytest.fixture
def add_endpoint(session_factory: Factory, organization_id: str) -> Callable[..., tuple[str, str]]:
    """An endpoint of the organization (through the service); returns its id and secret."""

    def add(url: str, event_types: list[EventType] = SUCCEEDED) -> tuple[str, str]:
        body = WebhookEndpointCreate(name="receiver", url=url, event_types=event_types)
        with unit_of_work(session_factory) as session:
            endpoint, secret = service.create_endpoint(
                session, ALLOW_PRIVATE, organization_id, body
            )
            return endpoint.id, secret

    return add


@pytest.fixture
def running_job(session_factory: Factory, organization_id: str) -> str:
    with session_factory() as session:
        rows = Factories(session)
        dataset = rows.dataset_with_examples(organization_id, train=1, validation=0, invalid=0)
        return rows.queued_job(organization_id, dataset, status=JobStatus.RUNNING).id


def finish_job(factory: Factory, job_id: str, status: JobStatus = JobStatus.SUCCEEDED) -> None:
    with unit_of_work(factory) as session:
        transition_job(session, job_id, status)


def deliveries(factory: Factory) -> list[WebhookDelivery]:
    with factory() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def test_a_succeeded_job_is_delivered_signed_for_the_sdk(
    session_factory: Factory, receiver: Receiver, add_endpoint, running_job: str
) -> None:
    _, secret = add_endpoint(receiver.url)

    finish_job(session_factory, running_job)
    threads = DeliveryThreads(session_factory, FAST).start()
    try:
        [request] = receiver.wait_for(1)
    finally:
        threads.stop()

    event = unwrap(request, secret)
    assert isinstance(event, FineTuningJobSucceededWebhookEvent)
    assert (event.type, event.object, event.data.id) == (
        "fine_tuning.job.succeeded",
        "event",
        running_job,
    )
    assert event.id.startswith("evt_") and request.headers["webhook-id"] == event.id
    assert request.headers["host"] == receiver.url.split("/")[2]
    assert request.headers["content-type"] == "application/json"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        unwrap(replace(request, body=request.body.replace(b"succeeded", b"failed")), secret)
    [delivery] = deliveries(session_factory)
    assert (delivery.status, delivery.attempts, delivery.lease_owner) == (
        DeliveryStatus.SUCCEEDED,
        1,
        None,
    )


def test_a_receiver_failing_three_times_gets_it_on_the_fourth_try(
    session_factory: Factory,
    receiver: Receiver,
    add_endpoint,
    running_job: str,
    organization_id: str,
) -> None:
    endpoint_id, secret = add_endpoint(receiver.url)
    receiver.statuses = [500, 500, 500]
    dispatcher = WebhookDispatcher(session_factory, FAST)

    finish_job(session_factory, running_job)
    run_until(dispatcher.run_once, lambda: len(receiver.received) == 4)
    assert not dispatcher.run_once()  # nothing left to send

    ids = {request.headers["webhook-id"] for request in receiver.received}
    assert len(ids) == 1
    for request in receiver.received:
        unwrap(request, secret)
    with session_factory() as session:
        log, has_more = service.list_attempts(
            session, organization_id, endpoint_id, before=None, limit=10
        )
    assert not has_more
    assert [(v.attempt.attempt, v.attempt.status_code) for v in log] == [
        (4, 200),
        (3, 500),
        (2, 500),
        (1, 500),
    ]
    assert [v.attempt.error for v in log] == [None, "HTTP 500: ok", "HTTP 500: ok", "HTTP 500: ok"]
    assert {v.delivery_status for v in log} == {DeliveryStatus.SUCCEEDED}
    assert {v.event_id for v in log} == ids
    assert all(v.attempt.duration_ms >= 0 for v in log)


def test_the_event_is_written_with_the_change_or_not_at_all(
    session_factory: Factory, receiver: Receiver, add_endpoint, running_job: str
) -> None:
    add_endpoint(receiver.url)

    with pytest.raises(RuntimeError), unit_of_work(session_factory) as session:
        transition_job(session, running_job, JobStatus.SUCCEEDED)
        raise RuntimeError("the request failed after the transition")

    with session_factory() as session:
        assert session.get_one(FineTuningJob, running_job).status == JobStatus.RUNNING
        assert session.scalars(select(WebhookEvent)).all() == []
    assert deliveries(session_factory) == []


def test_only_endpoints_subscribed_to_the_type_get_a_delivery(
    session_factory: Factory, receiver: Receiver, add_endpoint, running_job: str
) -> None:
    add_endpoint(receiver.url, ["fine_tuning.job.failed"])
    everything, _ = add_endpoint(
        receiver.url, ["fine_tuning.job.failed", "fine_tuning.job.cancelled"]
    )
    with session_factory() as session:  # another organization's endpoint hears nothing
        other = Factories(session).organization()
    body = WebhookEndpointCreate(
        name="other", url=receiver.url, event_types=["fine_tuning.job.cancelled"]
    )
    with unit_of_work(session_factory) as session:
        service.create_endpoint(session, ALLOW_PRIVATE, other, body)

    finish_job(session_factory, running_job, JobStatus.CANCELLED)

    assert [d.endpoint_id for d in deliveries(session_factory)] == [everything]


def test_a_cancelled_evaluation_run_sends_eval_run_canceled(
    session_factory: Factory, receiver: Receiver, add_endpoint, organization_id: str
) -> None:
    _, secret = add_endpoint(receiver.url, ["eval.run.canceled"])
    with session_factory() as session:
        dataset = Factories(session).dataset_with_examples(organization_id)
        run = EvalRun(
            organization_id=organization_id,
            dataset_id=dataset.id,
            split="validation",
            max_examples=10,
            max_tokens=16,
            models=[{"reference": "tiny", "label": "tiny"}],
            graders=[],
        )
        session.add(run)
        session.commit()
        run_id = run.id

    with unit_of_work(session_factory) as session:
        evals_service.cancel_run(session, organization_id, run_id)
    run_until(WebhookDispatcher(session_factory, FAST).run_once, lambda: bool(receiver.received))

    event = unwrap(receiver.received[0], secret)
    assert isinstance(event, EvalRunCanceledWebhookEvent)
    assert event.data.id == run_id


def test_a_delivery_is_given_up_after_its_retry_horizon(
    session_factory: Factory, receiver: Receiver, add_endpoint, running_job: str
) -> None:
    add_endpoint(receiver.url)
    receiver.statuses = [503]
    dispatcher = WebhookDispatcher(session_factory, replace(FAST, give_up_after_seconds=0))

    finish_job(session_factory, running_job)
    run_until(dispatcher.run_once, lambda: bool(receiver.received))

    [delivery] = deliveries(session_factory)
    assert (delivery.status, delivery.run_after) == (DeliveryStatus.FAILED, None)
    assert delivery.finished_at is not None
    assert not dispatcher.run_once()


def test_the_retry_delay_doubles_up_to_its_cap() -> None:
    config = DeliveryConfig()
    delays = [config.retry_delay(n) for n in range(1, 16)]

    assert delays[:4] == [10, 20, 40, 80]
    assert max(delays) == config.max_retry_seconds == 4 * 60 * 60
    assert sum(delays) < config.give_up_after_seconds < sum(delays) + config.max_retry_seconds * 2


def test_a_private_destination_is_refused_at_delivery_time(
    session_factory: Factory,
    receiver: Receiver,
    add_endpoint,
    running_job: str,
    organization_id: str,
) -> None:
    """The endpoint was accepted (the setting was on); the dispatcher's setting is off."""
    endpoint_id, _ = add_endpoint(receiver.url)
    dispatcher = WebhookDispatcher(
        session_factory, replace(FAST, allow_private_destinations=False, first_retry_seconds=60)
    )

    finish_job(session_factory, running_job)
    assert dispatcher.run_once()

    assert receiver.received == []
    with session_factory() as session:
        [view], _ = service.list_attempts(
            session, organization_id, endpoint_id, before=None, limit=10
        )
    assert view.attempt.status_code is None
    assert "127.0.0.1, a loopback address" in (view.attempt.error or "")
    assert view.delivery_status == DeliveryStatus.PENDING
    assert view.next_attempt_at is not None and view.next_attempt_at > utcnow()


def test_a_lease_keeps_other_dispatchers_off_until_it_expires(
    session_factory: Factory, receiver: Receiver, add_endpoint, running_job: str
) -> None:
    """A dispatcher that dies holding a delivery: after its lease, another sends it again
    with the same ``webhook-id``; the dead one's late result changes nothing."""
    add_endpoint(receiver.url)
    finish_job(session_factory, running_job)
    with unit_of_work(session_factory) as session:
        first = claim_outgoing(session, "dead-dispatcher", FAST)
    assert first is not None and first.attempt == 1
    other = WebhookDispatcher(session_factory, FAST)
    assert not other.run_once()

    with unit_of_work(session_factory) as session:
        session.execute(
            update(WebhookDelivery).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert other.run_once()

    [request] = receiver.wait_for(1)
    assert request.headers["webhook-id"] == first.message.message_id
    with new_client(FAST) as client:
        late = send(client, FAST, first.message)
    with unit_of_work(session_factory) as session:
        record_attempt(session, first, late, "dead-dispatcher", FAST)
    [delivery] = deliveries(session_factory)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SUCCEEDED, 2)


def test_a_rotation_that_keeps_the_old_secret_signs_with_both(
    session_factory: Factory,
    receiver: Receiver,
    add_endpoint,
    running_job: str,
    organization_id: str,
) -> None:
    endpoint_id, old = add_endpoint(receiver.url)
    with unit_of_work(session_factory) as session:
        _, new = service.rotate_secret(session, organization_id, endpoint_id, keep_old=True)

    finish_job(session_factory, running_job)
    run_until(WebhookDispatcher(session_factory, FAST).run_once, lambda: bool(receiver.received))

    [request] = receiver.received
    assert len(request.headers["webhook-signature"].split()) == 2
    unwrap(request, old)
    unwrap(request, new)


def test_a_slow_receiver_times_out(
    session_factory: Factory,
    receiver: Receiver,
    add_endpoint,
    running_job: str,
    organization_id: str,
) -> None:
    endpoint_id, _ = add_endpoint(receiver.url)
    receiver.hold = True
    dispatcher = WebhookDispatcher(
        session_factory, replace(FAST, timeout_seconds=0.5, first_retry_seconds=60)
    )

    finish_job(session_factory, running_job)
    assert dispatcher.run_once()
    receiver.released.set()

    with session_factory() as session:
        [view], _ = service.list_attempts(
            session, organization_id, endpoint_id, before=None, limit=10
        )
    assert (view.attempt.status_code, view.attempt.error) == (None, "No answer within 0.5 s")
    assert view.delivery_status == DeliveryStatus.PENDING
