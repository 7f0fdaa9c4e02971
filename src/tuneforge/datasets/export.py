"""Writing a job's training and validation files from stored example rows: OpenAI's chat
JSONL, or its DPO JSONL for a dataset of preference pairs.

Datasets can hold hundreds of thousands of examples, so rows are read in keyset pages of
plain columns (no ORM identity map growing with the file) and written line by line.
Validation comes from the job's validation dataset when it has one, else from the
validation split of the training dataset.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Row, select, tuple_
from sqlalchemy.orm import Session

from tuneforge.datasets.preference import stored_payload
from tuneforge.db.tables.datasets import ExampleSplit, TrainingExample
from tuneforge.db.tables.jobs import FineTuningJob
from tuneforge.errors import InvalidInput

PAGE_SIZE = 1000


@dataclass(frozen=True)
class ExportedFiles:
    training_path: Path
    training_examples: int
    validation_path: Path | None
    validation_examples: int


def iter_example_lines(
    session: Session,
    dataset_id: str,
    split: ExampleSplit | None,
    *,
    page_size: int = PAGE_SIZE,
) -> Iterator[str]:
    """JSONL lines of the dataset's valid examples (of one split, or all), in file order."""
    ex = TrainingExample
    conditions: list[ColumnElement[bool]] = [ex.dataset_id == dataset_id, ex.is_valid.is_(True)]
    if split is not None:
        conditions.append(ex.split == split)
    after: tuple[int, str] | None = None
    while True:
        stmt = select(
            ex.line_number,
            ex.id,
            ex.messages,
            ex.tools,
            ex.preferred_output,
            ex.non_preferred_output,
        ).where(*conditions)
        if after is not None:
            stmt = stmt.where(tuple_(ex.line_number, ex.id) > tuple_(*after))
        rows = session.execute(stmt.order_by(ex.line_number, ex.id).limit(page_size)).all()
        for row in rows:
            yield _example_line(row)
        if len(rows) < page_size:
            return
        after = (rows[-1].line_number, rows[-1].id)


def _example_line(row: Row[Any]) -> str:
    record = stored_payload(
        row.messages, row.tools or None, row.preferred_output, row.non_preferred_output
    )
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def _write_lines(path: Path, lines: Iterator[str]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line)
            handle.write("\n")
            count += 1
    return count


def export_job_files(session: Session, job: FineTuningJob, directory: Path) -> ExportedFiles:
    """Write ``training.jsonl`` and, when there is validation data, ``validation.jsonl``."""
    directory.mkdir(parents=True, exist_ok=True)
    training_path = directory / "training.jsonl"
    training_count = _write_lines(
        training_path, iter_example_lines(session, job.dataset_id, ExampleSplit.TRAIN)
    )
    if training_count == 0:
        raise InvalidInput(
            f"Dataset {job.dataset_id} has no valid training examples", field="dataset_id"
        )
    if job.validation_dataset_id is not None:
        validation_lines = iter_example_lines(session, job.validation_dataset_id, None)
    else:
        validation_lines = iter_example_lines(session, job.dataset_id, ExampleSplit.VALIDATION)
    validation_path = directory / "validation.jsonl"
    validation_count = _write_lines(validation_path, validation_lines)
    if validation_count == 0:
        validation_path.unlink()
        return ExportedFiles(training_path, training_count, None, 0)
    return ExportedFiles(training_path, training_count, validation_path, validation_count)
