from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.fixtures.tiny_model import TINY_CONTEXT_LENGTH
from tuneforge.config import get_settings
from tuneforge.store.cli import models_app


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("TUNEFORGE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def test_models_add_then_list(data_dir: Path, tiny_model_dir: Path) -> None:
    runner = CliRunner()
    empty = runner.invoke(models_app, ["list"])
    assert empty.exit_code == 0
    assert "tuneforge models pull smollm2-135m-instruct" in " ".join(empty.output.split())

    added = runner.invoke(models_app, ["add", str(tiny_model_dir), "--name", "tiny"])
    assert added.exit_code == 0, added.output
    assert f"{TINY_CONTEXT_LENGTH} tokens of context" in added.output
    listed = runner.invoke(models_app, ["list"])
    assert "tiny" in listed.output and "registered" in listed.output


def test_models_add_reports_what_is_missing(data_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(models_app, ["add", str(tmp_path), "--name", "empty"])
    assert result.exit_code == 1
    assert "has no config.json" in " ".join(result.output.split())


def test_models_pull_rejects_unknown_names(data_dir: Path) -> None:
    result = CliRunner().invoke(models_app, ["pull", "gpt-5"])
    assert result.exit_code == 1
    assert "No built-in model" in " ".join(result.output.split())
