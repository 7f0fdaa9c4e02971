"""``tuneforge evals`` against a real server, with a worker playing the server's own."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner, Result

from tests.fixtures.api import Account
from tests.fixtures.files import Upload, chat, jsonl
from tests.fixtures.tiny_model import TINY_BASE_MODEL
from tuneforge.cli import app as cli_app
from tuneforge.config import Settings
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.evals import cli as evals_cli
from tuneforge.inference.engine import InferenceEngine
from tuneforge.worker.loop import Worker

pytestmark = pytest.mark.usefixtures("installed_tiny_model", "fast_polling")

QUEUE_WAIT_SECONDS = 30


@pytest.fixture
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evals_cli, "POLL_SECONDS", 0.05)


@pytest.fixture
def dataset_id(upload: Upload) -> str:
    examples = [chat(f"Question {i}?", f"Answer {i}.") for i in range(8)]
    response = upload(jsonl(*examples), model=TINY_BASE_MODEL, validation_fraction=0.5)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def invoke(live_server: str, account: Account, *args: str) -> Result:
    env = {"TUNEFORGE_API_URL": live_server, "TUNEFORGE_TOKEN": account.token, "COLUMNS": "200"}
    return CliRunner().invoke(cli_app, ["evals", *args], env=env)


@pytest.fixture
def worker(app: FastAPI, settings: Settings) -> Iterator[threading.Thread]:
    """A worker thread that runs the first evaluation the command queues."""
    runner = Worker(app.state.session_factory, settings, engine=InferenceEngine(1024**3))

    def run_when_queued() -> None:
        deadline = time.monotonic() + QUEUE_WAIT_SECONDS
        while not runner.run_one_evaluation() and time.monotonic() < deadline:
            time.sleep(0.05)

    thread = threading.Thread(target=run_when_queued, daemon=True)
    thread.start()
    yield thread
    thread.join(timeout=QUEUE_WAIT_SECONDS)


def test_run_shows_progress_then_each_models_scores(
    live_server: str,
    account: Account,
    dataset_id: str,
    fine_tuned: FineTunedModel,
    worker: threading.Thread,
) -> None:
    result = invoke(
        live_server,
        account,
        "run",
        "--dataset",
        dataset_id,
        "--model",
        TINY_BASE_MODEL,
        "--model",
        fine_tuned.id,
        "--split",
        "all",
        "--max-tokens",
        "6",
        "--grader",
        "exact",
        "--grader",
        "similarity",
        "--name",
        "before/after",
    )
    worker.join()
    assert result.exit_code == 0, result.output
    match = re.search(r"Created evaluation (\w+) of 8 examples", result.output)
    assert match is not None, result.output
    assert re.search(rf"{match[1]} succeeded ━+ 8/8", result.output), result.output
    assert "8 of 8 examples" in result.output
    assert "string_check eq, similarity" in result.output

    run = httpx.get(f"{live_server}/evals/{match[1]}", headers=account.headers).json()
    assert run["name"] == "before/after" and run["status"] == "succeeded"
    base, tuned = run["summary"]
    assert re.search(
        rf"│ {TINY_BASE_MODEL}\s+│ {base['mean_score']:.3f} .*│ baseline", result.output
    )
    wtl = f"{tuned['wins']} / {tuned['ties']} / {tuned['losses']}"
    tuned_label = rf"ft:tiny:support \({fine_tuned.id}\)"
    assert re.search(rf"│ {tuned_label}\s+│ {tuned['mean_score']:.3f} .*│ {wtl}", result.output)
    assert f"{tuned['pass_rate']:.1%}" in result.output


def test_run_exits_non_zero_when_the_evaluation_is_cancelled(
    live_server: str, account: Account, dataset_id: str
) -> None:
    def cancel_when_queued() -> None:
        deadline = time.monotonic() + QUEUE_WAIT_SECONDS
        while time.monotonic() < deadline:
            page = httpx.get(f"{live_server}/evals", headers=account.headers).json()
            if page["items"]:
                url = f"{live_server}/evals/{page['items'][0]['id']}/cancel"
                httpx.post(url, headers=account.headers)
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_when_queued, daemon=True)
    canceller.start()
    result = invoke(
        live_server, account, "run", "--dataset", dataset_id, "--model", TINY_BASE_MODEL
    )
    canceller.join()
    assert result.exit_code == 1, result.output
    assert "cancelled" in result.output and "0 of 4 examples" in result.output
    assert "Scores" not in result.output


def test_show_list_and_cancel_a_queued_evaluation(
    live_server: str, account: Account, dataset_id: str
) -> None:
    body = {"dataset_id": dataset_id, "models": [{"reference": TINY_BASE_MODEL}]}
    created = httpx.post(f"{live_server}/evals", json=body, headers=account.headers).json()

    shown = invoke(live_server, account, "show", created["id"])
    assert shown.exit_code == 0, shown.output
    assert created["id"] in shown.output and "queued" in shown.output
    assert f"{dataset_id} (validation)" in shown.output and "0 of 4 examples" in shown.output

    listed = invoke(live_server, account, "list")
    assert listed.exit_code == 0, listed.output
    assert created["id"] in listed.output and "1 of 1 evaluations" in listed.output

    cancelled = invoke(live_server, account, "cancel", created["id"])
    assert cancelled.exit_code == 0, cancelled.output
    assert f"Evaluation {created['id']} is cancelled" in cancelled.output
    again = invoke(live_server, account, "cancel", created["id"])
    assert again.exit_code == 1 and "already cancelled (HTTP 409)" in again.output


def test_refusals_are_one_line_and_a_non_zero_exit(
    live_server: str, account: Account, dataset_id: str
) -> None:
    unknown = invoke(live_server, account, "run", "--dataset", dataset_id, "--model", "nope")
    assert unknown.exit_code == 1 and "models.0.reference" in unknown.output
    assert "Created evaluation" not in unknown.output
    missing = invoke(live_server, account, "show", "missing")
    assert missing.exit_code == 1 and "(HTTP 404)" in missing.output
    bad_grader = invoke(
        live_server, account, "run", "--dataset", dataset_id, "--model", "m", "--grader", "vibes"
    )
    assert bad_grader.exit_code == 2
