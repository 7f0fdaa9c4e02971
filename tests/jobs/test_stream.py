"""A job's history: paged events, metrics and checkpoints, and the live event stream."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.api import Account
from tests.fixtures.factories import Factories
from tuneforge.db.engine import unit_of_work
from tuneforge.db.tables.jobs import JobCheckpoint, JobMetric, JobStatus
from tuneforge.jobs import stream as job_stream
from tuneforge.jobs.states import JobUpdate, transition_job, update_job

S = JobStatus


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_stream, "STREAM_POLL_SECONDS", 0.05)


@pytest.fixture
def job_id(client: TestClient, account: Account, dataset_id: str) -> str:
    response = client.post(
        "/fine-tuning/jobs",
        json={"dataset_id": dataset_id, "model": "gpt-4o-mini-2024-07-18"},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_events_page_newest_first_after_a_cursor(
    client: TestClient, account: Account, job_id: str, db_session: Session
) -> None:
    transition_job(db_session, job_id, S.VALIDATING_FILES)
    transition_job(db_session, job_id, S.QUEUED)
    db_session.commit()
    url = f"/fine-tuning/jobs/{job_id}/events"
    first = client.get(url, params={"limit": 2}, headers=account.headers).json()
    assert first["has_more"] is True
    assert [e["data"]["to"] for e in first["data"]] == ["queued", "validating_files"]
    assert first["data"][0]["id"] > first["data"][1]["id"]
    after = first["data"][-1]["id"]
    rest = client.get(url, params={"after": after}, headers=account.headers).json()
    assert [e["type"] for e in rest["data"]] == ["created"]
    assert rest["has_more"] is False


def test_metrics_filter_by_name_and_step_range(
    client: TestClient, account: Account, factories: Factories, db_session: Session
) -> None:
    job = factories.job(account.organization_id, status=S.RUNNING)
    for step in (1, 2, 3):
        db_session.add(JobMetric(job_id=job.id, step=step, name="train_loss", value=3.0 - step))
        db_session.add(JobMetric(job_id=job.id, step=step, name="valid_loss", value=3.5 - step))
    db_session.commit()
    url = f"/fine-tuning/jobs/{job.id}/metrics"
    every = client.get(url, headers=account.headers).json()
    assert len(every["data"]) == 6 and every["has_more"] is False
    assert every["data"][0] == {"step": 1, "name": "train_loss", "value": 2.0}
    filtered = client.get(
        url, params={"name": "valid_loss", "min_step": 2, "max_step": 3}, headers=account.headers
    ).json()
    assert [(p["step"], p["value"]) for p in filtered["data"]] == [(2, 1.5), (3, 0.5)]
    cut = client.get(url, params={"limit": 4}, headers=account.headers).json()
    assert len(cut["data"]) == 4 and cut["has_more"] is True


def test_checkpoints_newest_first(
    client: TestClient, account: Account, factories: Factories, db_session: Session
) -> None:
    job = factories.job(account.organization_id, status=S.RUNNING)
    for step in (10, 30, 20):
        db_session.add(
            JobCheckpoint(
                job_id=job.id,
                step=step,
                provider_checkpoint_id=f"ckpt-{step}",
                model_reference=f"ft:model:ckpt-step-{step}",
                metrics={"train_loss": 1.0 / step},
            )
        )
    db_session.commit()
    response = client.get(f"/fine-tuning/jobs/{job.id}/checkpoints", headers=account.headers)
    assert response.status_code == 200
    data = response.json()["data"]
    assert [c["step"] for c in data] == [30, 20, 10]
    assert data[0]["model_reference"] == "ft:model:ckpt-step-30"


@dataclass
class Message:
    id: str | None
    kind: str
    data: dict[str, Any]


def read_messages(lines: Iterator[str]) -> Iterator[Message]:
    """Parse Server-Sent Events as a browser would, skipping comments."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                yield Message(
                    fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])
                )
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def drive_to_success(session_factory: sessionmaker[Session], job_id: str) -> None:
    """What a worker would write, each step in its own transaction."""
    for target in (S.VALIDATING_FILES, S.QUEUED, S.RUNNING):
        with unit_of_work(session_factory) as session:
            transition_job(session, job_id, target)
    for step in (1, 2):
        with unit_of_work(session_factory) as session:
            session.add(JobMetric(job_id=job_id, step=step, name="train_loss", value=2.0 / step))
            update_job(
                session,
                job_id,
                JobUpdate(
                    progress_percentage=50.0 * step, latest_metrics={"train_loss": 2.0 / step}
                ),
            )
    with unit_of_work(session_factory) as session:
        transition_job(session, job_id, S.SUCCEEDED, update=JobUpdate(fine_tuned_model_name="ft:x"))


def stream(client: TestClient, account: Account, job_id: str, **headers: str) -> list[Message]:
    with client.stream(
        "GET", f"/fine-tuning/jobs/{job_id}/stream", headers={**account.headers, **headers}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(read_messages(response.iter_lines()))


def test_stream_delivers_live_changes_and_ends_after_the_terminal_status(
    client: TestClient, app: FastAPI, account: Account, job_id: str
) -> None:
    received: list[Message] = []
    driver = threading.Thread(target=drive_to_success, args=(app.state.session_factory, job_id))
    url = f"/fine-tuning/jobs/{job_id}/stream"
    with client.stream("GET", url, headers=account.headers) as response:
        for message in read_messages(response.iter_lines()):
            received.append(message)
            if len(received) == 2:
                assert message.data["status"] == "pending"
                driver.start()  # only once the stream is open: what follows arrives live
    driver.join()
    kinds = [m.kind for m in received]
    assert kinds[:2] == ["event", "status"]
    assert received[0].data["type"] == "created"
    transitions = [
        m.data["data"]["to"] for m in received if m.kind == "event" and m.data["type"] == "status"
    ]
    assert transitions == ["validating_files", "queued", "running", "succeeded"]
    assert [(m.data["step"], m.data["value"]) for m in received if m.kind == "metric"] == [
        (1, 2.0),
        (2, 1.0),
    ]
    last = received[-1]
    assert last.kind == "status"
    assert last.data["status"] == "succeeded"
    assert last.data["fine_tuned_model"] == "ft:x"
    assert all(m.id for m in received)


def test_resuming_with_last_event_id_skips_what_was_seen(
    client: TestClient, app: FastAPI, account: Account, job_id: str
) -> None:
    drive_to_success(app.state.session_factory, job_id)
    everything = stream(client, account, job_id)
    first_metric = next(i for i, m in enumerate(everything) if m.kind == "metric")
    seen = everything[first_metric]
    rest = [m for m in everything[first_metric + 1 :] if m.kind != "status"]
    for resumed in (
        stream(client, account, job_id, **{"Last-Event-ID": str(seen.id)}),
        stream_with_query(client, account, job_id, str(seen.id)),
    ):
        assert [(m.kind, m.data) for m in resumed if m.kind != "status"] == [
            (m.kind, m.data) for m in rest
        ]
        assert resumed[-1].kind == "status" and resumed[-1].data["status"] == "succeeded"


def stream_with_query(
    client: TestClient, account: Account, job_id: str, cursor: str
) -> list[Message]:
    with client.stream(
        "GET",
        f"/fine-tuning/jobs/{job_id}/stream",
        params={"last_event_id": cursor},
        headers=account.headers,
    ) as response:
        return list(read_messages(response.iter_lines()))


def test_a_quiet_stream_sends_keepalive_comments(
    client: TestClient,
    app: FastAPI,
    account: Account,
    job_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(job_stream, "STREAM_KEEPALIVE_SECONDS", 0.1)
    url = f"/fine-tuning/jobs/{job_id}/stream"
    with client.stream("GET", url, headers=account.headers) as response:
        lines = response.iter_lines()
        for line in lines:
            if line == ": keepalive":
                break
        with unit_of_work(app.state.session_factory) as session:
            transition_job(session, job_id, S.CANCELLED)
        final = list(read_messages(lines))
    assert final[-1].kind == "status"
    assert final[-1].data["status"] == "cancelled"


def test_a_malformed_last_event_id_is_rejected(
    client: TestClient, account: Account, job_id: str
) -> None:
    response = client.get(
        f"/fine-tuning/jobs/{job_id}/stream",
        headers={**account.headers, "Last-Event-ID": "e12"},
    )
    assert response.status_code == 422
    assert "Last-Event-ID" in response.json()["detail"]
