"""Large uploads checked in parallel spans: the same rows and report as one pass in order."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.factories import Factories
from tests.fixtures.files import Upload, chat
from tuneforge.config import Settings
from tuneforge.datasets import ingest, pool, repository
from tuneforge.datasets.parsing import jsonl_spans, read_examples, read_jsonl_span
from tuneforge.db.base import utcnow
from tuneforge.db.tables.datasets import DatasetFormat, ExampleSplit, TrainingExample

ROW_COLUMNS = (
    "line_number",
    "messages",
    "tools",
    "raw_line",
    "is_valid",
    "errors",
    "token_count",
    "assistant_token_count",
    "split",
)


def _tricky_jsonl(lines: int, seed: int = 3) -> bytes:
    """Every kind of line, repeated across the file: duplicates far from their first copy,
    more errors and warnings than the report keeps samples of, blank and unreadable lines."""
    rng = random.Random(seed)
    seen: list[str] = []
    out = ["\ufeff" + json.dumps(chat("first line", "has a byte order mark"))]
    for i in range(lines):
        roll = rng.random()
        if roll < 0.05:
            out.append(rng.choice(["", "   "]))
        elif roll < 0.10:
            out.append('{"messages": [{"role": "user"')
        elif roll < 0.12:
            out.append(json.dumps(chat("nul \u0000 inside", "x")))
        elif roll < 0.17 and seen:
            out.append(rng.choice(seen))
        elif roll < 0.20 and seen:
            near = json.loads(rng.choice(seen))
            for message in near["messages"]:
                message["content"] = message["content"].upper() + "!"
            out.append(json.dumps(near))
        elif roll < 0.30:
            out.append(json.dumps(chat(f"no system {i}", f"answer {i}", system=None)))
        elif roll < 0.33:
            out.append(json.dumps({"messages": [{"role": "bot", "content": "x"}]}))
        else:
            line = json.dumps(chat(f"Question {i} café", "Answer " * rng.randint(1, 60)))
            seen.append(line)
            out.append(line)
    body = "\n".join(out).encode() + b"\n"
    middle = body.index(b"\n", len(body) // 2) + 1
    bad_utf8 = b'{"messages": "\xff"}\n'
    crlf = json.dumps(chat("crlf", "line")).encode() + b"\r\n"
    last = json.dumps(chat("last line", "no newline after it")).encode()
    return body[:middle] + bad_utf8 + crlf + body[middle:] + last


def _stored(db_session: Session, dataset_id: str) -> list[tuple[Any, ...]]:
    columns = [getattr(TrainingExample, name) for name in ROW_COLUMNS]
    stmt = select(*columns).where(TrainingExample.dataset_id == dataset_id)
    return [tuple(row) for row in db_session.execute(stmt.order_by(TrainingExample.line_number))]


def _state(value: Any) -> Any:
    """Everything an object holds, compared by value (a builder's counter aside)."""
    if hasattr(value, "__dict__"):
        return {name: _state(item) for name, item in vars(value).items() if name != "_counter"}
    return value


def test_spans_hold_every_line_once_and_number_them_as_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(_tricky_jsonl(300))
    for span_bytes in (1, 97, 4096, 1 << 20):
        spans = list(jsonl_spans(path, span_bytes))
        assert [s.start for s in spans] == [0, *(s.start + s.size for s in spans[:-1])]
        assert sum(s.size for s in spans) == path.stat().st_size
        in_spans = [raw for span in spans for raw in read_jsonl_span(path, span)]
        assert in_spans == list(read_examples(path, DatasetFormat.JSONL))


def test_builders_merged_in_order_make_the_report_of_one_builder(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(_tricky_jsonl(1500))
    settings = Settings(data_dir=tmp_path)
    whole = ingest.report_builder("gpt-4o-mini-2024-07-18", settings)
    merged = ingest.report_builder("gpt-4o-mini-2024-07-18", settings)
    for span in jsonl_spans(path, 2048):
        part = ingest.report_builder("gpt-4o-mini-2024-07-18", settings)
        for raw in read_jsonl_span(path, span):
            split = ingest.assign_split(raw.line_number, 0.3, 1)
            whole.add(raw, split.value)
            part.add(raw, split.value)
        merged.merge(part)
    report = whole.finish()
    assert report.error_counts and report.warning_counts and report.exact_duplicates.count
    assert len(report.errors) == 100 and len(report.warnings) == 100
    assert merged.finish() == report
    assert _state(merged) == _state(whole)


def test_a_large_upload_checked_by_the_pool_is_stored_as_one_pass_stores_it(
    upload: Upload, db_session: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = _tricky_jsonl(1200)
    fields = {"validation_fraction": 0.25, "split_seed": 9}
    settings.ingest_processes = 1
    serial = upload(content, **fields)
    assert serial.status_code == 201, serial.text
    monkeypatch.setattr(ingest, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(ingest, "SPAN_BYTES", 3000)
    settings.ingest_processes = 2
    pools: list[int] = []
    ordered_map = pool.ordered_map

    def counted(function: Any, items: Any, processes: int) -> Any:
        pools.append(processes)
        return ordered_map(function, items, processes)

    monkeypatch.setattr(pool, "ordered_map", counted)
    started: list[str] = []
    start_fork_server = pool.start_fork_server

    def recorded(module: str) -> None:  # as the body arrives, before the pool is made
        started.append(module)
        start_fork_server(module)

    monkeypatch.setattr(pool, "start_fork_server", recorded)
    parallel = upload(content, **fields)
    assert parallel.status_code == 201, parallel.text
    assert pools == [2]
    assert started == [ingest.SpanCheck.__module__]
    with pool.exclusive() as held:  # another upload has the pool: this one waits for none
        assert held
        meanwhile = upload(content, **fields)
    assert pools == [2]
    assert meanwhile.json()["validation_report"] == serial.json()["validation_report"]
    expected, got = serial.json(), parallel.json()
    assert got["validation_report"] == expected["validation_report"]
    assert got["total_examples"] == expected["total_examples"] > 1000
    rows = _stored(db_session, got["id"])
    assert rows == _stored(db_session, expected["id"])
    assert len({row[0] for row in rows}) == len(rows)


def test_ordered_map_keeps_input_order_and_stops_when_the_caller_does() -> None:
    assert list(pool.ordered_map(abs, range(-40, 0), 2)) == list(range(40, 0, -1))
    results = pool.ordered_map(abs, range(-10_000, 0), 2)
    assert next(results) == 10_000
    results.close()


def test_rows_written_in_bulk_are_stored_as_sqlalchemy_stores_them(
    factories: Factories, session_factory: sessionmaker[Session]
) -> None:
    """Same stored text, column by column: JSON null for None in JSON columns, timestamps in
    the backend's format, escapes in raw text."""
    organization_id = factories.organization()
    dataset_id = factories.dataset(organization_id).id
    shared = {
        "organization_id": organization_id,
        "dataset_id": dataset_id,
        "created_at": utcnow(),
        "updated_at": utcnow(),
    }
    values: dict[str, Any] = {
        "line_number": 7,
        "split": ExampleSplit.VALIDATION,
        "source_conversation_id": None,
        "messages": [{"role": "user", "content": 'tab\t, newline\n, back\\slash, "quote", café'}],
        "tools": None,
        "raw_line": "a\tb\\c\rd",
        "is_valid": False,
        "errors": [{"severity": "error", "code": "x", "message": "m"}],
        "token_count": 12,
        "assistant_token_count": 3,
    }
    with session_factory() as session:
        session.execute(insert(TrainingExample), [{**shared, **values, "id": "a" * 32}])
        encoder = repository.ExampleRowEncoder(session.get_bind().dialect.name, shared)
        encoder.add({**values, "line_number": 8})
        with repository.example_writer(session) as write:
            write(encoder.rows)
        session.commit()
        names = [column.name for column in TrainingExample.__table__.c if column.name != "id"]
        columns = ", ".join(names)
        stored = session.execute(
            text(f"SELECT {columns} FROM training_examples ORDER BY line_number")
        ).all()
    by_orm, in_bulk = (dict(row._mapping) for row in stored)
    assert in_bulk.pop("line_number") == 8
    by_orm.pop("line_number")
    if isinstance(by_orm["messages"], str):  # SQLite keeps the JSON text as written
        for name in ("messages", "tools", "errors"):
            assert json.loads(in_bulk.pop(name)) == json.loads(by_orm.pop(name))
    assert in_bulk == by_orm
