"""A ``tuneforge worker`` process SIGKILLed in the middle of a delivery loses nothing: once
its lease expires another dispatcher sends the event again, with the same ``webhook-id``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from sqlalchemy import select

from tests.fixtures.factories import Factories
from tests.webhooks.conftest import Factory, Receiver
from tuneforge.config import Settings
from tuneforge.db.engine import unit_of_work
from tuneforge.db.tables.jobs import JobStatus
from tuneforge.db.tables.webhooks import DeliveryStatus, WebhookAttempt, WebhookDelivery
from tuneforge.jobs.states import transition_job
from tuneforge.webhooks import service
from tuneforge.webhooks.delivery import DeliveryConfig, DeliveryThreads
from tuneforge.webhooks.schemas import WebhookEndpointCreate

pytestmark = pytest.mark.slow  # a worker process starts

TUNEFORGE = Path(sys.executable).with_name("tuneforge")


def test_a_worker_killed_mid_delivery_leaves_it_to_the_next_dispatcher(
    session_factory: Factory, receiver: Receiver, tmp_path: Path, database_url: str
) -> None:
    with session_factory() as session:
        rows = Factories(session)
        organization_id = rows.organization()
        dataset = rows.dataset_with_examples(organization_id, train=1, validation=0, invalid=0)
        job_id = rows.queued_job(organization_id, dataset, status=JobStatus.RUNNING).id
    body = WebhookEndpointCreate(
        name="receiver", url=receiver.url, event_types=["fine_tuning.job.succeeded"]
    )
    with unit_of_work(session_factory) as session:
        _, secret = service.create_endpoint(
            session, Settings(webhook_allow_private_destinations=True), organization_id, body
        )
        transition_job(session, job_id, JobStatus.SUCCEEDED)
    receiver.hold = True  # the worker's request stays open until it is killed

    env = {
        **os.environ,
        "TUNEFORGE_DATABASE_URL": database_url,
        "TUNEFORGE_DATA_DIR": str(tmp_path / "data"),
        "TUNEFORGE_WEBHOOK_ALLOW_PRIVATE_DESTINATIONS": "true",
        "TUNEFORGE_WEBHOOK_TIMEOUT_SECONDS": "5",  # a lease of 1 + 2 * 5 s
        "TUNEFORGE_WORKER_LEASE_SECONDS": "1",
    }
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [str(TUNEFORGE), "worker"], env=env, cwd=tmp_path, stdout=log, stderr=log
        )
        try:
            receiver.wait_for(1)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
        finally:
            if worker.poll() is None:
                worker.kill()
    receiver.hold = False
    receiver.released.set()

    config = DeliveryConfig(allow_private_destinations=True, idle_seconds=0.1)
    threads = DeliveryThreads(session_factory, config).start()
    try:
        first, second = receiver.wait_for(2)
    finally:
        threads.stop()

    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    sdk = openai.OpenAI(api_key="unused")
    assert sdk.webhooks.unwrap(second.body, second.headers, secret=secret).data.id == job_id
    with session_factory() as session:
        delivery = session.scalars(select(WebhookDelivery)).one()
        attempts = session.scalars(select(WebhookAttempt.attempt)).all()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SUCCEEDED, 2)
    assert attempts == [2]  # the killed attempt never got to log itself
