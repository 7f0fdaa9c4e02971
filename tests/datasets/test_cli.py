"""``tuneforge datasets`` commands against a real server on a free port."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from tests.fixtures.api import Account
from tests.fixtures.files import chat, jsonl, valid_jsonl
from tuneforge.cli import app

runner = CliRunner()


def _run(live_server: str, account: Account, *args: str) -> tuple[int, str]:
    env = {"TUNEFORGE_API_URL": live_server, "TUNEFORGE_TOKEN": account.token, "COLUMNS": "200"}
    result = runner.invoke(app, ["datasets", *args], env=env)
    return result.exit_code, result.output


def test_upload_validate_and_list(live_server: str, account: Account, tmp_path: Path) -> None:
    good = tmp_path / "support.jsonl"
    good.write_bytes(valid_jsonl(30))
    code, output = _run(live_server, account, "upload", str(good), "--validation-fraction", "0.2")
    assert code == 0, output
    assert "valid" in output and "30 valid of 30" in output
    assert "Training estimate" in output and "epochs" in output

    bad = tmp_path / "broken.jsonl"
    bad.write_bytes(jsonl(chat("a", "b"), "{oops", chat("c", "d")))
    code, output = _run(live_server, account, "upload", str(bad), "--name", "Broken set")
    assert code == 0, output
    assert "invalid" in output and "invalid_json" in output
    match = re.search(r"│ id\s+│ (\w+)", output)
    assert match is not None, output
    dataset_id = match.group(1)

    code, output = _run(
        live_server, account, "validate", dataset_id, "--model", "gpt-3.5-turbo-0125"
    )
    assert code == 1, output
    assert "gpt-3.5-turbo-0125" in output and "cl100k_base" in output
    assert re.search(r"│\s+2 │ invalid_json\s+│ Invalid JSON", output), output

    code, output = _run(live_server, account, "list")
    assert code == 0, output
    assert "Datasets (2)" in output and "Broken set" in output and dataset_id in output


def test_errors_are_printed_not_raised(live_server: str, account: Account, tmp_path: Path) -> None:
    wrong = tmp_path / "notes.txt"
    wrong.write_text("hello")
    code, output = _run(live_server, account, "upload", str(wrong))
    assert code == 1 and "Error 415" in output
    code, output = _run(live_server, account, "validate", "missing")
    assert code == 1 and "Error 404" in output
    result = runner.invoke(
        app, ["datasets", "list", "--api-url", live_server, "--token", "tf-wrong"]
    )
    assert result.exit_code == 1 and "Error 401" in result.output
