from __future__ import annotations

import shutil
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


LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d7a2146b8a2a4c1e1e5c5e6a1d2f3b4c5d6e7f8091a2b3c4d5e6f708192a3b4\n"
    b"size 538090408\n"
)


def test_a_directory_that_cannot_load_is_refused_before_it_is_registered(
    data_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    pointer = tmp_path / "pointer"
    shutil.copytree(tiny_model_dir, pointer)
    (pointer / "model.safetensors").write_bytes(LFS_POINTER)
    garbled = tmp_path / "garbled"
    shutil.copytree(tiny_model_dir, garbled)
    (garbled / "config.json").write_text("{not json")

    for directory, problem in ((pointer, "Git LFS pointer"), (garbled, "not valid JSON")):
        result = runner.invoke(models_app, ["add", str(directory), "--name", directory.name])
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit)  # a clean exit, not a traceback
        assert problem in " ".join(result.output.split())
    assert not (data_dir / "models" / "registry.json").exists()


def test_a_registered_model_that_broke_later_is_skipped_not_fatal(
    data_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert runner.invoke(models_app, ["add", str(copy), "--name", "copy"]).exit_code == 0
    assert runner.invoke(models_app, ["add", str(tiny_model_dir), "--name", "tiny"]).exit_code == 0
    (copy / "model.safetensors").write_bytes(LFS_POINTER)  # replaced by a pointer since

    listed = runner.invoke(models_app, ["list"])

    assert listed.exit_code == 0, listed.output
    assert "tiny" in listed.output and "copy" not in listed.output
