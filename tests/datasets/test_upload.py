"""Uploading datasets: streamed to disk, validated into rows, and all-or-nothing."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.fixtures.api import Account
from tests.fixtures.files import Upload, chat, jsonl, uploaded_files, valid_jsonl
from tuneforge.config import Settings
from tuneforge.datasets import repository
from tuneforge.db.tables.datasets import FineTuningDataset, TrainingExample


def _csv(header: list[str], *rows: list[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _rows(db_session: Session, dataset_id: str) -> list[TrainingExample]:
    stmt = (
        select(TrainingExample)
        .where(TrainingExample.dataset_id == dataset_id)
        .order_by(TrainingExample.line_number)
    )
    return list(db_session.scalars(stmt))


def _nothing_stored(db_session: Session, settings: Settings) -> None:
    assert db_session.scalar(select(func.count()).select_from(FineTuningDataset)) == 0
    assert db_session.scalar(select(func.count()).select_from(TrainingExample)) == 0
    assert uploaded_files(settings.data_dir) == []


def test_jsonl_upload_is_stored_hashed_and_validated(
    upload: Upload, db_session: Session, settings: Settings
) -> None:
    content = valid_jsonl(12)
    response = upload(content, description="support chats", validation_fraction=0.25)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "valid"
    assert body["format"] == "jsonl"
    assert body["file_size_bytes"] == len(content)
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["total_examples"] == body["valid_examples"] == 12
    assert body["train_examples"] + body["validation_examples"] == 12
    assert body["validation_report"]["is_valid"] is True
    assert body["total_tokens"] == body["validation_report"]["total_tokens"] > 0
    [stored] = uploaded_files(settings.data_dir)
    assert stored.read_bytes() == content
    assert stored.suffix == ".jsonl" and not stored.name.startswith(".")
    rows = _rows(db_session, body["id"])
    assert [row.line_number for row in rows] == list(range(1, 13))
    assert rows[0].messages == chat("Question 0?", "Answer 0.")["messages"]
    assert all(row.is_valid and row.token_count > 0 for row in rows)


@pytest.mark.parametrize(
    ("header", "row", "expected"),
    [
        (
            ["messages", "tools"],
            [
                json.dumps(chat("Weather?", "Sunny.")["messages"]),
                json.dumps([{"type": "function", "function": {"name": "get_weather"}}]),
            ],
            chat("Weather?", "Sunny.")["messages"],
        ),
        (
            ["system", "user", "assistant"],
            ["Be brief.", "Hi", "Hello!"],
            chat("Hi", "Hello!", system="Be brief.")["messages"],
        ),
        (["Prompt", "Completion"], ["2+2?", "4"], chat("2+2?", "4", system=None)["messages"]),
    ],
    ids=["messages-json", "system-user-assistant", "prompt-completion"],
)
def test_csv_layouts(
    upload: Upload, db_session: Session, header: list[str], row: list[str], expected: list
) -> None:
    response = upload(_csv(header, row, row), "data.csv")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == "csv"
    assert body["status"] == "valid", body["validation_report"]["errors"]
    rows = _rows(db_session, body["id"])
    assert [r.line_number for r in rows] == [2, 3]
    assert rows[0].messages == expected
    if "tools" in header:
        assert rows[0].tools == [{"type": "function", "function": {"name": "get_weather"}}]


def test_bad_lines_make_an_invalid_dataset_whose_report_names_them(
    upload: Upload, db_session: Session
) -> None:
    content = jsonl(
        chat("ok", "fine"),
        '{"messages": [',
        [1, 2],
        {"messages": [{"role": "user", "content": "no reply"}]},
        chat("ok again", "fine again"),
    )
    response = upload(content)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "invalid"
    assert (body["total_examples"], body["valid_examples"]) == (5, 2)
    report = body["validation_report"]
    assert [(e["line"], e["code"]) for e in report["errors"]] == [
        (2, "invalid_json"),
        (3, "data_type"),
        (4, "example_missing_assistant_message"),
    ]
    rows = _rows(db_session, body["id"])
    assert [r.is_valid for r in rows] == [True, False, False, False, True]
    assert rows[1].raw_line == '{"messages": [' and rows[1].messages is None
    assert rows[3].errors[0]["code"] == "example_missing_assistant_message"
    assert {"severity": "warning", "code": "missing_system_message"}.items() <= (
        rows[3].errors[1].items()
    )


def test_nul_characters_are_kept_as_text_and_reported(upload: Upload, db_session: Session) -> None:
    bad = chat("a\u0000b", "c")
    response = upload(jsonl(chat("x", "y"), bad))
    assert response.status_code == 201, response.text
    assert response.json()["validation_report"]["errors"][0]["line"] == 2
    row = _rows(db_session, response.json()["id"])[1]
    assert row.messages is None and "\\u0000" in row.raw_line and not row.is_valid


def test_oversized_upload_is_refused_by_content_length(
    upload: Upload, db_session: Session, settings: Settings
) -> None:
    response = upload(b"x" * (settings.upload_limit_bytes + 1))
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"
    assert response.headers["connection"] == "close"
    _nothing_stored(db_session, settings)


def test_oversized_chunked_upload_is_cut_off_near_the_limit(
    live_server: str, account: Account, db_session: Session, settings: Settings
) -> None:
    """Without a Content-Length, a real server stops reading once the file passes the limit:
    the client manages to send only a fraction of a body 32 times the limit."""
    boundary = "tfboundary"
    line = json.dumps(chat("q" * 500, "a")).encode() + b"\n"
    total = settings.upload_limit_bytes * 32
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="big.jsonl"\r\n\r\n'
        ).encode()
        while sent < total:
            sent += len(line)
            yield line
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx.post(
        f"{live_server}/fine-tuning/datasets",
        headers={**account.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=body(),
        timeout=30,
    )
    assert response.status_code == 413, response.text
    assert sent < total / 2
    _nothing_stored(db_session, settings)


def test_declared_oversize_is_refused_before_any_body_is_sent(
    live_server: str, account: Account, settings: Settings
) -> None:
    """A Content-Length over the limit gets its 413 while the body is still unsent."""
    host, port = live_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            (
                "POST /fine-tuning/datasets HTTP/1.1\r\n"
                f"Host: {host}\r\n"
                f"Authorization: {account.headers['Authorization']}\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n"
                f"Content-Length: {50 * settings.upload_limit_bytes}\r\n\r\n"
            ).encode()
        )
        reply = conn.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "connection: close" in reply.lower()


def test_wrong_extension_is_415(upload: Upload, db_session: Session, settings: Settings) -> None:
    response = upload(valid_jsonl(2), "train.txt")
    assert response.status_code == 415, response.text
    _nothing_stored(db_session, settings)


@pytest.mark.parametrize(
    ("content", "filename"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00binary", "image.jsonl"),
        (b"\xff\xfe\xfa not utf-8", "latin.jsonl"),
        (b"colour,size\nred,1\n", "shapes.csv"),
        (b"\n\n", "blank.jsonl"),
        (b"user,assistant\n", "header-only.csv"),
    ],
    ids=["binary", "not-utf8", "unknown-csv-header", "blank", "header-only"],
)
def test_unreadable_content_is_422(
    upload: Upload, db_session: Session, settings: Settings, content: bytes, filename: str
) -> None:
    response = upload(content, filename)
    assert response.status_code == 422, response.text
    _nothing_stored(db_session, settings)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": ""}, "name"),
        ({"validation_fraction": "0.9"}, "validation_fraction"),
        ({"model": "no-such-model"}, "model"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_form_fields_are_422_naming_the_field(
    upload: Upload, db_session: Session, settings: Settings, fields: dict, field: str
) -> None:
    response = upload(valid_jsonl(2), **fields)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    _nothing_stored(db_session, settings)


def test_form_without_file_or_not_multipart(
    client: TestClient, account: Account, db_session: Session, settings: Settings
) -> None:
    url = "/fine-tuning/datasets"
    no_file = client.post(url, headers=account.headers, files={"name": (None, "x")})
    assert no_file.status_code == 422 and no_file.json()["field"] == "file"
    as_json = client.post(url, headers=account.headers, json={"name": "x"})
    assert as_json.status_code == 415
    two_files = client.post(
        url,
        headers=account.headers,
        data={"name": "x"},
        files=[("file", ("a.jsonl", valid_jsonl(1))), ("file", ("b.jsonl", valid_jsonl(1)))],
    )
    assert two_files.status_code == 422 and two_files.json()["field"] == "file"
    truncated = client.post(
        url,
        headers={**account.headers, "Content-Type": "multipart/form-data; boundary=x"},
        content=b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n{',
    )
    assert truncated.status_code == 422 and truncated.json()["field"] == "body"
    _nothing_stored(db_session, settings)


def test_failure_mid_ingest_leaves_no_row_and_no_file(
    upload: Upload, db_session: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_writer = repository.example_writer

    @contextmanager
    def writes_then_fails(session: Session) -> Iterator[Callable[[Any], None]]:
        with real_writer(session) as write:

            def explode(rows: Any) -> None:
                write(rows)
                raise RuntimeError("disk on fire")

            yield explode

    monkeypatch.setattr(repository, "example_writer", writes_then_fails)
    with pytest.raises(RuntimeError, match="disk on fire"):
        upload(valid_jsonl(3))
    _nothing_stored(db_session, settings)


def test_upload_needs_authentication(upload: Upload, settings: Settings) -> None:
    response = upload(valid_jsonl(2), headers={})
    assert response.status_code == 401
    assert uploaded_files(settings.data_dir) == []


def test_large_upload_streams_in_batches(upload: Upload, db_session: Session) -> None:
    """More rows than one insert batch; every line lands once, in order."""
    response = upload(valid_jsonl(2500))
    assert response.status_code == 201, response.text
    assert response.json()["total_examples"] == 2500
    lines = db_session.scalars(
        select(TrainingExample.line_number).where(
            TrainingExample.dataset_id == response.json()["id"]
        )
    ).all()
    assert sorted(lines) == list(range(1, 2501))


def test_upload_path_is_under_uploads_dir(
    upload: Upload, db_session: Session, settings: Settings
) -> None:
    response = upload(valid_jsonl(1))
    dataset = db_session.get(FineTuningDataset, response.json()["id"])
    assert dataset is not None and dataset.file_path is not None
    assert Path(dataset.file_path).parent == settings.uploads_dir


def test_slow_uploads_do_not_hold_back_other_requests(
    live_server: str, app: FastAPI, account: Account
) -> None:
    """More stalled uploads than the app has request sessions: other requests still run."""
    host, port = live_server.removeprefix("http://").split(":")
    stalled = []
    try:
        for _ in range(app.state.session_slots.total_tokens + 2):
            conn = socket.create_connection((host, int(port)), timeout=10)
            conn.sendall(
                (
                    "POST /fine-tuning/datasets HTTP/1.1\r\n"
                    f"Host: {host}\r\n"
                    f"Authorization: {account.headers['Authorization']}\r\n"
                    "Content-Type: multipart/form-data; boundary=x\r\n"
                    "Content-Length: 100000\r\n\r\n"
                    '--x\r\nContent-Disposition: form-data; name="name"\r\n\r\nslow\r\n'
                ).encode()
            )
            stalled.append(conn)

        response = httpx.get(
            f"{live_server}/fine-tuning/datasets", headers=account.headers, timeout=10
        )

        assert response.status_code == 200
    finally:
        for conn in stalled:
            conn.close()


@pytest.mark.parametrize("filename", ["数据.jsonl", "Ω.jsonl", "😀.jsonl", "naïve data.jsonl"])
def test_a_file_name_in_any_script_is_kept_as_given(upload: Upload, filename: str) -> None:
    response = upload(valid_jsonl(2), filename)

    assert response.status_code == 201, response.text
    assert response.json()["original_filename"] == filename


def test_an_rfc_5987_file_name_is_decoded(client: TestClient, account: Account) -> None:
    body = (
        b'--x\r\nContent-Disposition: form-data; name="name"\r\n\r\nd\r\n'
        b'--x\r\nContent-Disposition: form-data; name="file"; '
        b"filename*=UTF-8''%E6%95%B0%E6%8D%AE.jsonl\r\n\r\n" + valid_jsonl(1) + b"\r\n--x--\r\n"
    )
    response = client.post(
        "/fine-tuning/datasets",
        headers={**account.headers, "Content-Type": "multipart/form-data; boundary=x"},
        content=body,
    )

    assert response.status_code == 201, response.text
    assert response.json()["original_filename"] == "数据.jsonl"
