"""The ``tuneforge jobs`` commands against a real server on a local port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from tests.fixtures.api import Account
from tests.fixtures.factories import Factories
from tuneforge.api_client import parse_server_sent_events
from tuneforge.cli import app as cli_app
from tuneforge.db.engine import unit_of_work
from tuneforge.db.tables.jobs import FineTuningJob, JobMetric, JobStatus
from tuneforge.jobs import stream
from tuneforge.jobs.states import JobUpdate, transition_job, update_job

S = JobStatus
MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def api_url(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(stream, "STREAM_POLL_SECONDS", 0.05)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)


def run(api_url: str, account: Account | None, *args: str) -> Result:
    env = {"TUNEFORGE_API_URL": api_url, "COLUMNS": "200"}
    if account is not None:
        env["TUNEFORGE_TOKEN"] = account.token
    return CliRunner().invoke(cli_app, ["jobs", *args], env=env)


def drive_first_job_to_success(session_factory: sessionmaker[Session]) -> None:
    """Play the worker for the first job that appears."""
    deadline = time.monotonic() + 20
    job_id = None
    while job_id is None and time.monotonic() < deadline:
        with unit_of_work(session_factory) as session:
            job_id = session.scalar(select(FineTuningJob.id))
        time.sleep(0.05)
    assert job_id is not None
    for target in (S.VALIDATING_FILES, S.QUEUED, S.RUNNING):
        with unit_of_work(session_factory) as session:
            transition_job(session, job_id, target)
    with unit_of_work(session_factory) as session:
        session.add(JobMetric(job_id=job_id, step=5, name="train_loss", value=0.6931))
        update_job(session, job_id, JobUpdate(progress_percentage=50.0))
    with unit_of_work(session_factory) as session:
        transition_job(session, job_id, S.SUCCEEDED, update=JobUpdate(fine_tuned_model_name="ft:x"))


def test_create_with_follow_shows_live_progress_until_the_job_succeeds(
    api_url: str, app: FastAPI, account: Account, dataset_id: str
) -> None:
    driver = threading.Thread(target=drive_first_job_to_success, args=(app.state.session_factory,))
    driver.start()
    result = run(
        api_url,
        account,
        "create",
        "--dataset",
        dataset_id,
        "--model",
        MODEL,
        "--epochs",
        "2",
        "--suffix",
        "cli-test",
        "--follow",
    )
    driver.join()
    assert result.exit_code == 0, result.output
    assert "train loss 0.6931" in result.output
    assert "Job status changed from running to succeeded" in result.output
    assert "succeeded" in result.output and "ft:x" in result.output


def test_create_without_follow_prints_the_queued_job(
    api_url: str, account: Account, dataset_id: str
) -> None:
    result = run(api_url, account, "create", "--dataset", dataset_id, "--model", MODEL)
    assert result.exit_code == 0, result.output
    assert "pending" in result.output
    assert "n_epochs=5" in result.output


def test_list_get_cancel_and_events(api_url: str, account: Account, factories: Factories) -> None:
    job = factories.job(account.organization_id, name="nightly", job_metadata={"team": "a"})
    listed = run(api_url, account, "list", "--status", "pending")
    assert listed.exit_code == 0, listed.output
    assert job.id in listed.output and "nightly" in listed.output
    assert "1 of 1 jobs" in listed.output

    shown = run(api_url, account, "get", job.id)
    assert shown.exit_code == 0, shown.output
    assert job.id in shown.output and "local / SmolLM2-135M-Instruct" in shown.output

    cancelled = run(api_url, account, "cancel", job.id)
    assert cancelled.exit_code == 0, cancelled.output
    assert f"Job {job.id} is cancelled" in cancelled.output

    events = run(api_url, account, "events", job.id)
    assert events.exit_code == 0, events.output
    assert "Cancelled before training started" in events.output

    again = run(api_url, account, "cancel", job.id)
    assert again.exit_code == 1
    assert "already cancelled (HTTP 409)" in again.output


def test_errors_are_one_readable_line(api_url: str, account: Account) -> None:
    missing = run(api_url, account, "get", "nope")
    assert missing.exit_code == 1
    assert "Fine-tuning job nope not found (HTTP 404)" in missing.output
    anonymous = run(api_url, None, "list")
    assert anonymous.exit_code == 1 and "HTTP 401" in anonymous.output
    unreachable = run("http://127.0.0.1:9", account, "list")
    assert unreachable.exit_code == 1 and "Cannot reach http://127.0.0.1:9" in unreachable.output


def test_server_sent_events_parse_like_a_browser() -> None:
    lines = [
        "retry: 2000",
        "",
        ": keepalive",
        "id: 1-0",
        "event: event",
        "data: {",
        'data: "a": 1}',
        "",
        "data:no space",
        "",
    ]
    parsed: list[Any] = list(parse_server_sent_events(lines))
    assert [(m.id, m.event, m.data) for m in parsed] == [
        ("1-0", "event", '{\n"a": 1}'),
        ("1-0", "message", "no space"),
    ]
