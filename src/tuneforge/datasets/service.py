"""Datasets: upload and import into example rows, validation reports, splits, and edits.

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

from tuneforge.auth.service import Principal
from tuneforge.config import Settings
from tuneforge.datasets import repository, storage
from tuneforge.datasets.parsing import RawExample, detect_format, read_examples
from tuneforge.datasets.schemas import (
    DatasetStatistics,
    DatasetUpdate,
    DatasetUploadForm,
    ExampleUpdate,
    SplitRequest,
)
from tuneforge.datasets.tokens import token_counter_for
from tuneforge.datasets.validation import ExampleResult, ReportBuilder
from tuneforge.db.base import utcnow
from tuneforge.db.tables.datasets import (
    DatasetFormat,
    DatasetStatus,
    ExampleSplit,
    FineTuningDataset,
    TrainingExample,
)
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


def _result_values(result: ExampleResult) -> dict[str, Any]:
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


def ingest(
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
                **_result_values(result),
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
            values = {"split": split, **_result_values(builder.add(_stored_example(row), split))}
            if any(getattr(row, column) != value for column, value in values.items()):
                updates.append({"id": row.id, **values})
        repository.update_examples(session, updates)


def validation_model(dataset: FineTuningDataset, requested: str | None) -> str:
    """The base model to validate against: the one asked for, else the dataset's last."""
    return requested or dataset.target_model or DEFAULT_VALIDATION_MODEL


def create_from_upload(
    session: Session, principal: Principal, upload: storage.ReceivedUpload, settings: Settings
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
            organization_id=principal.organization_id,
            created_by=principal.user.id,
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
        if ingest(session, dataset, examples, builder) == 0:
            raise InvalidInput(f"{upload.filename} holds no examples", field="file")
        apply_report(dataset, builder)
        session.flush()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return dataset


def list_datasets(
    session: Session,
    organization_id: str,
    *,
    status: DatasetStatus | None,
    fmt: DatasetFormat | None,
    name_contains: str | None,
    limit: int,
    offset: int,
) -> tuple[list[FineTuningDataset], int]:
    return repository.list_datasets(
        session,
        organization_id,
        status=status,
        fmt=fmt,
        name_contains=name_contains,
        limit=limit,
        offset=offset,
    )


def get_dataset(session: Session, organization_id: str, dataset_id: str) -> FineTuningDataset:
    return repository.get_dataset(session, organization_id, dataset_id)


def require_valid_dataset(
    session: Session, organization_id: str, dataset_id: str
) -> FineTuningDataset:
    """The dataset, if a job may train on it; otherwise a 422 saying what is wrong."""
    dataset = repository.get_dataset(session, organization_id, dataset_id)
    if dataset.status is not DatasetStatus.VALID:
        errors = dataset.total_examples - dataset.valid_examples
        reason = {
            DatasetStatus.INVALID: f"{errors} of its {dataset.total_examples} examples have errors",
            DatasetStatus.UPLOADED: "it was edited since its last validation; validate it again",
            DatasetStatus.VALIDATING: "its validation has not finished",
        }[dataset.status]
        raise InvalidInput(
            f"Dataset {dataset.name!r} ({dataset.id}) is {dataset.status.value}: {reason}",
            field="dataset_id",
            dataset_status=dataset.status.value,
            error_examples=errors,
        )
    return dataset


def update_dataset(
    session: Session, organization_id: str, dataset_id: str, request: DatasetUpdate
) -> FineTuningDataset:
    dataset = repository.get_dataset(session, organization_id, dataset_id, for_update=True)
    for field, value in request.model_dump(exclude_unset=True).items():
        setattr(dataset, field, value)
    session.flush()
    return dataset


def delete_dataset(session: Session, organization_id: str, dataset_id: str) -> None:
    """Soft delete: jobs that trained on it keep their reference; listings and new jobs don't."""
    dataset = repository.get_dataset(session, organization_id, dataset_id, for_update=True)
    dataset.deleted_at = utcnow()
    session.flush()


def validate_dataset(
    session: Session,
    organization_id: str,
    dataset_id: str,
    settings: Settings,
    *,
    model: str | None,
) -> FineTuningDataset:
    dataset = repository.get_dataset(session, organization_id, dataset_id, for_update=True)
    builder = report_builder(validation_model(dataset, model), settings)
    revalidate_rows(session, dataset, builder)
    apply_report(dataset, builder)
    session.flush()
    return dataset


def split_dataset(
    session: Session,
    organization_id: str,
    dataset_id: str,
    request: SplitRequest,
    settings: Settings,
) -> FineTuningDataset:
    dataset = repository.get_dataset(session, organization_id, dataset_id, for_update=True)
    dataset.validation_fraction = request.validation_fraction
    dataset.split_seed = request.seed
    builder = report_builder(validation_model(dataset, None), settings)
    revalidate_rows(session, dataset, builder, resplit=True)
    apply_report(dataset, builder)
    session.flush()
    return dataset


def dataset_statistics(
    session: Session, organization_id: str, dataset_id: str
) -> DatasetStatistics:
    dataset = repository.get_dataset(session, organization_id, dataset_id)
    return DatasetStatistics.from_dataset(dataset)


def list_examples(
    session: Session,
    organization_id: str,
    dataset_id: str,
    *,
    split: ExampleSplit | None,
    valid: bool | None,
    limit: int,
    offset: int,
) -> tuple[list[TrainingExample], int]:
    dataset = repository.get_dataset(session, organization_id, dataset_id)
    return repository.list_examples(
        session, organization_id, dataset.id, split=split, valid=valid, limit=limit, offset=offset
    )


def get_example(
    session: Session, organization_id: str, dataset_id: str, example_id: str
) -> TrainingExample:
    dataset = repository.get_dataset(session, organization_id, dataset_id)
    return repository.get_example(session, organization_id, dataset.id, example_id)


def _count_example(dataset: FineTuningDataset, example: TrainingExample, sign: int) -> None:
    """Add (or with -1 remove) an example's share of the dataset's live counts."""
    if not example.is_valid:
        return
    dataset.valid_examples += sign
    dataset.total_tokens += sign * example.token_count
    if example.split is ExampleSplit.VALIDATION:
        dataset.validation_examples += sign
    else:
        dataset.train_examples += sign


def update_example(
    session: Session,
    organization_id: str,
    dataset_id: str,
    example_id: str,
    request: ExampleUpdate,
    settings: Settings,
) -> TrainingExample:
    """Replace an example and check it alone; the dataset's report waits for re-validation."""
    dataset = repository.get_dataset(session, organization_id, dataset_id, for_update=True)
    example = repository.get_example(session, organization_id, dataset.id, example_id)
    changes = request.model_dump(exclude_unset=True)
    payload = {"messages": changes.get("messages", example.messages)}
    if (tools := changes.get("tools", example.tools)) is not None:
        payload["tools"] = tools
    raw = storable(RawExample(example.line_number, payload, None, None))
    builder = report_builder(validation_model(dataset, None), settings)
    result = builder.add(raw, example.split.value)
    _count_example(dataset, example, -1)
    for field, value in {**content_values(raw), **_result_values(result)}.items():
        setattr(example, field, value)
    _count_example(dataset, example, +1)
    dataset.status = DatasetStatus.UPLOADED
    session.flush()
    return example


def delete_example(
    session: Session, organization_id: str, dataset_id: str, example_id: str
) -> None:
    dataset = repository.get_dataset(session, organization_id, dataset_id, for_update=True)
    example = repository.get_example(session, organization_id, dataset.id, example_id)
    _count_example(dataset, example, -1)
    dataset.total_examples -= 1
    dataset.status = DatasetStatus.UPLOADED
    session.delete(example)
    session.flush()
