"""Ingest: examples in, validated rows and a report out, for uploads and imports alike.

Example rows are the canonical data once a dataset exists: re-validation reads them, not the
uploaded file, so edited examples count. Every pass over rows goes in fixed-size batches so
memory stays flat whatever the dataset size. A large JSON Lines upload is cut into spans of
whole lines that a process pool checks and encodes as rows (``SpanCheck``); the request's
thread takes the results in line order, merges their report tallies and writes the rows in
bulk. Nothing here commits; the caller's unit of work does, so a failed upload or import
leaves neither rows nor a file.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path, PurePath
from typing import Any

import orjson
from sqlalchemy import Row
from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.datasets import pool, repository, storage
from tuneforge.datasets.parsing import (
    LineSpan,
    RawExample,
    detect_format,
    jsonl_spans,
    read_examples,
    read_jsonl_span,
)
from tuneforge.datasets.preference import EMPTY_CONTENT, content_columns, stored_payload
from tuneforge.datasets.schemas import DatasetUploadForm
from tuneforge.datasets.tokens import token_counter_for
from tuneforge.datasets.validation import ExampleResult, ReportBuilder
from tuneforge.db.base import utcnow
from tuneforge.db.tables.datasets import (
    DatasetFormat,
    DatasetStatus,
    ExampleSplit,
    FineTuningDataset,
)
from tuneforge.errors import InvalidInput, ServiceUnavailable
from tuneforge.providers.catalog import (
    DEFAULT_VALIDATION_MODEL,
    find_base_model,
    training_price_per_million,
)
from tuneforge.providers.contract import BaseModelInfo

BATCH_ROWS = 1000
# A worker's share of an upload: big enough that handing it over costs little, small enough
# that the last one finishes soon after the others.
SPAN_BYTES = 1 << 20
# Below this an upload is checked in the request's thread: starting workers costs more.
PARALLEL_MIN_BYTES = 8 << 20
_NUL_ESCAPE = b"\\u0000"


def assign_split(line_number: int, validation_fraction: float, seed: int) -> ExampleSplit:
    """A stable split: the same (seed, line) always lands on the same side, no shuffle needed."""
    if validation_fraction <= 0:
        return ExampleSplit.TRAIN
    digest = hashlib.blake2b(f"{seed}:{line_number}".encode(), digest_size=8).digest()
    position = int.from_bytes(digest, "big") / 2**64
    return ExampleSplit.VALIDATION if position < validation_fraction else ExampleSplit.TRAIN


def report_builder(model_name: str, settings: Settings) -> ReportBuilder:
    model = find_base_model(model_name, settings)
    return _new_builder(model, training_price_per_million(model.name, settings))


def _new_builder(model: BaseModelInfo, price_per_million: float | None) -> ReportBuilder:
    return ReportBuilder(
        model=model, counter=token_counter_for(model), price_per_million=price_per_million
    )


def result_values(result: ExampleResult) -> dict[str, Any]:
    """Row columns of a check's verdict; warnings ride along with errors, marked as such."""
    issues = [{"severity": "error", **issue} for issue in result.errors]
    issues += [{"severity": "warning", **issue} for issue in result.warnings]
    return {
        "is_valid": result.is_valid,
        "errors": issues or None,
        "token_count": result.token_count,
        "assistant_token_count": result.assistant_token_count,
    }


def storable(raw: RawExample) -> RawExample:
    """The example as it can be stored: PostgreSQL refuses NUL characters in text and JSONB,
    so an example holding one is kept as its JSON text (NUL stays the escape ``\\u0000``)
    and reported as unreadable, like a line that failed to parse."""
    if raw.payload is None:
        if raw.raw_line is None or "\x00" not in raw.raw_line:
            return raw
        text = raw.raw_line.replace("\x00", "\ufffd")
        return RawExample(raw.line_number, None, text, raw.parse_error, raw.error_code)
    encoded = orjson.dumps(raw.payload)
    if _NUL_ESCAPE not in encoded:
        return raw
    message = "Example contains a NUL character (\\u0000); remove it"
    return RawExample(raw.line_number, None, encoded.decode(), message, "invalid_content")


def content_values(raw: RawExample) -> dict[str, Any]:
    """Row columns of a ``storable`` example: messages and tools (and a preference pair's
    replies), or the raw text."""
    columns = None if raw.payload is None else content_columns(raw.payload)
    if columns is None:
        text = raw.raw_line if raw.payload is None else orjson.dumps(raw.payload).decode()
        return {**EMPTY_CONTENT, "raw_line": text}
    return {**columns, "raw_line": None}


def _stored_example(row: Row[Any]) -> RawExample:
    """Rebuild what validation needs from a stored row; raw rows keep their first error."""
    if row.messages is None and row.raw_line is not None:
        first = (row.errors or [{}])[0]
        return RawExample(
            row.line_number, None, row.raw_line, first.get("message"), first.get("code")
        )
    payload = stored_payload(
        row.messages, row.tools, row.preferred_output, row.non_preferred_output
    )
    return RawExample(row.line_number, payload, None, None)


def apply_report(dataset: FineTuningDataset, builder: ReportBuilder) -> None:
    """Finish the report and copy its verdict and counts onto the dataset."""
    report = builder.finish()
    dataset.status = DatasetStatus.VALID if report.is_valid else DatasetStatus.INVALID
    dataset.kind = report.kind
    dataset.target_model = report.model
    dataset.total_examples = report.total_examples
    dataset.valid_examples = report.valid_examples
    dataset.total_tokens = report.total_tokens
    dataset.train_examples = report.train_examples
    dataset.validation_examples = report.validation_examples
    dataset.validation_report = report.model_dump(mode="json")
    dataset.validated_at = utcnow()


@dataclass(frozen=True)
class RowTarget:
    """What a checked example's row needs from its dataset; small and picklable, for workers."""

    organization_id: str
    dataset_id: str
    validation_fraction: float
    split_seed: int
    dialect: str
    created_at: datetime

    @classmethod
    def of(cls, session: Session, dataset: FineTuningDataset) -> RowTarget:
        return cls(
            organization_id=dataset.organization_id,
            dataset_id=dataset.id,
            validation_fraction=dataset.validation_fraction,
            split_seed=dataset.split_seed,
            dialect=session.get_bind().dialect.name,
            created_at=utcnow(),
        )


def check_examples(
    builder: ReportBuilder,
    target: RowTarget,
    examples: Iterable[tuple[RawExample, str | None]],
) -> repository.ExampleRows:
    """Check (example, source conversation id) pairs into ``builder`` and encode their rows."""
    encoder = repository.ExampleRowEncoder(
        target.dialect,
        {
            "organization_id": target.organization_id,
            "dataset_id": target.dataset_id,
            "created_at": target.created_at,
            "updated_at": target.created_at,
        },
    )
    for parsed, source_conversation_id in examples:
        raw = storable(parsed)
        split = assign_split(raw.line_number, target.validation_fraction, target.split_seed)
        result = builder.add(raw, split.value)
        encoder.add(
            {
                "line_number": raw.line_number,
                "split": split,
                "source_conversation_id": source_conversation_id,
                **content_values(raw),
                **result_values(result),
            }
        )
    return encoder.rows


@dataclass(frozen=True)
class CheckedSpan:
    """A span's report tallies (to merge in line order) and its encoded rows."""

    tally: ReportBuilder
    rows: repository.ExampleRows


@dataclass(frozen=True)
class SpanCheck:
    """Checks one span of an uploaded JSON Lines file; run by the pool's workers."""

    path: Path
    model: BaseModelInfo
    price_per_million: float | None
    target: RowTarget

    def __call__(self, span: LineSpan) -> CheckedSpan:
        tally = _new_builder(self.model, self.price_per_million)
        examples = ((raw, None) for raw in read_jsonl_span(self.path, span))
        return CheckedSpan(tally, check_examples(tally, self.target, examples))


def ingest_examples(
    session: Session,
    dataset: FineTuningDataset,
    examples: Iterable[tuple[RawExample, str | None]],
    builder: ReportBuilder,
) -> int:
    """Validate streamed (example, source conversation id) pairs in this thread and write
    them as rows, one bulk write per batch; returns how many were written."""
    target = RowTarget.of(session, dataset)
    iterator = iter(examples)
    written = 0
    with repository.example_writer(session) as write:
        while batch := list(islice(iterator, BATCH_ROWS)):
            rows = check_examples(builder, target, batch)
            write(rows)
            written += rows.count
    return written


def ingest_spans(session: Session, builder: ReportBuilder, checked: Iterator[CheckedSpan]) -> int:
    """Merge spans checked elsewhere into ``builder`` and write their rows, in line order;
    returns how many rows were written."""
    written = 0
    try:
        with repository.example_writer(session) as write:
            for span in checked:
                builder.merge(span.tally)
                write(span.rows)
                written += span.rows.count
    except BrokenProcessPool as exc:
        raise ServiceUnavailable(
            "A process checking the upload stopped (out of memory?); try again"
        ) from exc
    return written


async def receive_upload(
    content_type: str | None,
    content_length: str | None,
    body: AsyncIterator[bytes],
    settings: Settings,
) -> storage.ReceivedUpload:
    """An upload's body streamed into a temp file, within the size limit. If its declared
    size is one the pool will check, the pool's fork server starts first and imports while
    the body streams in, not after it (~0.8 s for a process's first large upload)."""
    limit = settings.upload_limit_bytes
    declared = storage.check_content_length(content_length, limit)
    if declared is not None and _pool_processes(settings, declared):
        pool.start_fork_server(SpanCheck.__module__)
    return await storage.receive_upload(content_type, body, settings.uploads_dir, limit)


def _pool_processes(settings: Settings, size_bytes: int) -> int:
    """How many pool workers check a JSON Lines file of ``size_bytes``; 0: the request
    thread checks it alone (a small file, or one core)."""
    processes = settings.ingest_processes or pool.usable_cores()
    return processes if size_bytes >= PARALLEL_MIN_BYTES and processes >= 2 else 0


def _ingest_file(
    session: Session,
    dataset: FineTuningDataset,
    builder: ReportBuilder,
    check: SpanCheck,
    fmt: DatasetFormat,
    processes: int,
) -> int:
    """A JSON Lines file on ``processes`` pool workers (if any, and the pool is free),
    anything else in this thread."""
    with pool.exclusive() as pool_is_free:
        if fmt is DatasetFormat.JSONL and processes and pool_is_free:
            spans = jsonl_spans(check.path, SPAN_BYTES)
            return ingest_spans(session, builder, pool.ordered_map(check, spans, processes))
    examples = ((raw, None) for raw in read_examples(check.path, fmt))
    return ingest_examples(session, dataset, examples, builder)


def revalidate_rows(
    session: Session, dataset: FineTuningDataset, builder: ReportBuilder, *, resplit: bool = False
) -> None:
    """Feed the stored rows through ``builder`` in line order, updating each row whose verdict
    (or, with ``resplit``, whose split under the dataset's fraction and seed) changed."""
    for rows in repository.iter_example_batches(session, dataset.id, BATCH_ROWS):
        updates = []
        for row in rows:
            split = ExampleSplit(row.split)
            if resplit:
                split = assign_split(
                    row.line_number, dataset.validation_fraction, dataset.split_seed
                )
            values = {"split": split, **result_values(builder.add(_stored_example(row), split))}
            if any(getattr(row, column) != value for column, value in values.items()):
                updates.append({"id": row.id, **values})
        repository.update_examples(session, updates)


def validation_model(dataset: FineTuningDataset, requested: str | None) -> str:
    """The base model to validate against: the one asked for, else the dataset's last."""
    return requested or dataset.target_model or DEFAULT_VALIDATION_MODEL


def create_from_upload(
    session: Session,
    organization_id: str,
    user_id: str,
    upload: storage.ReceivedUpload,
    settings: Settings,
) -> FineTuningDataset:
    """Store an uploaded file as a dataset with one row per example, validated on the way in."""
    try:
        form = DatasetUploadForm.from_fields(upload.fields)
        fmt = detect_format(upload.filename, upload.head)
        model = find_base_model(form.model, settings)
        price = training_price_per_million(model.name, settings)
        builder = _new_builder(model, price)
        path = storage.promote(upload, f".{fmt.value}")
    except BaseException:
        upload.discard()
        raise
    storage.delete_unless_committed(session, path)
    try:
        dataset = FineTuningDataset(
            organization_id=organization_id,
            created_by=user_id,
            name=form.name,
            description=form.description,
            format=fmt,
            status=DatasetStatus.VALIDATING,
            original_filename=PurePath(upload.filename).name.replace("\x00", "")[:300],
            file_path=str(path),
            file_size_bytes=upload.size_bytes,
            sha256=upload.sha256,
            target_model=form.model,
            validation_fraction=form.validation_fraction,
            split_seed=form.split_seed,
        )
        session.add(dataset)
        session.flush()
        check = SpanCheck(path, model, price, RowTarget.of(session, dataset))
        processes = _pool_processes(settings, dataset.file_size_bytes)
        if _ingest_file(session, dataset, builder, check, fmt, processes) == 0:
            raise InvalidInput(f"{upload.filename} holds no examples", field="file")
        apply_report(dataset, builder)
        session.flush()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return dataset
