"""``tuneforge models export`` against a real server, with a worker writing the export."""

from __future__ import annotations

import hashlib
import re
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner, Result

from tests.fixtures.api import Account
from tuneforge.cli import app as cli_app
from tuneforge.config import Settings
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.exports import cli as exports_cli
from tuneforge.worker.loop import Worker

pytestmark = pytest.mark.usefixtures("installed_tiny_model")

QUEUE_WAIT_SECONDS = 30


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exports_cli, "POLL_SECONDS", 0.05)


@pytest.fixture
def worker(app: FastAPI, settings: Settings) -> Iterator[None]:
    """A worker thread that writes the first export the command queues."""
    runner = Worker(app.state.session_factory, settings)

    def run_when_queued() -> None:
        deadline = time.monotonic() + QUEUE_WAIT_SECONDS
        while not runner.run_one_export() and time.monotonic() < deadline:
            time.sleep(0.05)

    thread = threading.Thread(target=run_when_queued, daemon=True)
    thread.start()
    yield
    thread.join(timeout=QUEUE_WAIT_SECONDS)


def invoke(live_server: str, account: Account, *args: str) -> Result:
    env = {"TUNEFORGE_API_URL": live_server, "TUNEFORGE_TOKEN": account.token, "COLUMNS": "200"}
    return CliRunner().invoke(cli_app, ["models", "export", *args], env=env)


@pytest.mark.usefixtures("worker")
def test_export_shows_progress_then_saves_the_checked_file(
    live_server: str, account: Account, fine_tuned: FineTunedModel, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()

    result = invoke(
        live_server, account, fine_tuned.id, "--format", "adapter", "--output", str(out)
    )

    assert result.exit_code == 0, result.output
    saved = out / "ft-tiny-support-adapter.tar"
    digest = hashlib.sha256(saved.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in result.output
    assert re.search(r"Queued export \w+ \(adapter\)", result.output)
    assert "succeeded" in result.output and "downloading" in result.output
    with tarfile.open(saved) as archive:
        assert "ft-tiny-support/adapter_config.json" in archive.getnames()
    assert [p.name for p in out.iterdir()] == [saved.name]


def test_a_refused_export_is_one_red_line_and_exit_1(
    live_server: str, account: Account, fine_tuned: FineTunedModel
) -> None:
    result = invoke(
        live_server, account, fine_tuned.id, "--format", "adapter", "--quantization", "q8_0"
    )

    assert result.exit_code == 1
    assert (
        "quantization: only the gguf and ollama formats take a quantization (HTTP 422)"
        in result.output
    )


def test_no_download_only_queues(
    live_server: str, account: Account, fine_tuned: FineTunedModel
) -> None:
    result = invoke(live_server, account, fine_tuned.id, "--format", "gguf", "--no-download")

    assert result.exit_code == 0, result.output
    assert "Queued export" in result.output
