"""Ingest: examples in, validated rows and a report out, for uploads and imports alike.

Example rows are the canonical data once a dataset exists: re-validation reads them, not the
uploaded file, so edited examples count. Every pass over rows goes in fixed-size batches so
memory stays flat whatever the dataset size. Nothing here commits; the caller's unit of work
does, so a failed upload or import leaves neither rows nor a file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

import orjson
from sqlalchemy import Row
from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.datasets import repository, storage
from tuneforge.datasets.parsing import RawExample, detect_format, read_examples
from tuneforge.datasets.schemas import DatasetUploadForm
from tuneforge.datasets.tokens import token_counter_for
from tuneforge.datasets.validation import ExampleResult, ReportBuilder
from tuneforge.db.base import utcnow
from tuneforge.db.tables.datasets import DatasetStatus, ExampleSplit, FineTuningDataset
from tuneforge.errors import InvalidInput
from tuneforge.providers.catalog import (
    DEFAULT_VALIDATION_MODEL,
    find_base_model,
    training_price_per_million,
)

BATCH_ROWS = 1000
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
    return ReportBuilder(
        model=model,
        counter=token_counter_for(model),
        price_per_million=training_price_per_million(model.name, settings),
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
    """Row columns of a ``storable`` example: messages and tools, or the raw text."""
    if raw.payload is None:
        return {"messages": None, "tools": None, "raw_line": raw.raw_line}
    return {
        "messages": raw.payload.get("messages"),
        "tools": raw.payload.get("tools"),
        "raw_line": None,
    }


def _stored_example(row: Row[Any]) -> RawExample:
    """Rebuild what validation needs from a stored row; raw rows keep their first error."""
    if row.messages is None and row.raw_line is not None:
        first = (row.errors or [{}])[0]
        return RawExample(
            row.line_number, None, row.raw_line, first.get("message"), first.get("code")
        )
    payload: dict[str, Any] = {"messages": row.messages}
    if row.tools is not None:
        payload["tools"] = row.tools
    return RawExample(row.line_number, payload, None, None)


def apply_report(dataset: FineTuningDataset, builder: ReportBuilder) -> None:
    """Finish the report and copy its verdict and counts onto the dataset."""
    report = builder.finish()
    dataset.status = DatasetStatus.VALID if report.is_valid else DatasetStatus.INVALID
    dataset.target_model = report.model
    dataset.total_examples = report.total_examples
    dataset.valid_examples = report.valid_examples
    dataset.total_tokens = report.total_tokens
    dataset.train_examples = report.train_examples
    dataset.validation_examples = report.validation_examples
    dataset.validation_report = report.model_dump(mode="json")
    dataset.validated_at = utcnow()


def ingest_examples(
    session: Session,
    dataset: FineTuningDataset,
    examples: Iterable[tuple[RawExample, str | None]],
    builder: ReportBuilder,
) -> int:
    """Validate streamed (example, source conversation id) pairs and insert them as rows,
    one executemany per batch; returns how many were inserted."""
    batch: list[dict[str, Any]] = []
    inserted = 0
    for parsed, source_conversation_id in examples:
        raw = storable(parsed)
        split = assign_split(raw.line_number, dataset.validation_fraction, dataset.split_seed)
        result = builder.add(raw, split.value)
        batch.append(
            {
                "organization_id": dataset.organization_id,
                "dataset_id": dataset.id,
                "line_number": raw.line_number,
                "split": split,
                "source_conversation_id": source_conversation_id,
                **content_values(raw),
                **result_values(result),
            }
        )
        inserted += 1
        if len(batch) >= BATCH_ROWS:
            repository.insert_examples(session, batch)
            batch = []
    repository.insert_examples(session, batch)
    return inserted


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
        builder = report_builder(form.model, settings)
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
        examples = ((raw, None) for raw in read_examples(path, fmt))
        if ingest_examples(session, dataset, examples, builder) == 0:
            raise InvalidInput(f"{upload.filename} holds no examples", field="file")
        apply_report(dataset, builder)
        session.flush()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return dataset
