"""Rows the worker tests start from: an organization, a dataset with examples, queued jobs.

Written straight to the database (and committed) because the worker only ever sees rows;
the process tests use them without an app.
"""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy.orm import Session

from tuneforge.db.base import utcnow
from tuneforge.db.tables.auth import Organization
from tuneforge.db.tables.datasets import (
    DatasetFormat,
    DatasetStatus,
    ExampleSplit,
    FineTuningDataset,
    TrainingExample,
)
from tuneforge.db.tables.jobs import FineTuningJob, JobStatus

OPENAI_BASE_MODEL = "gpt-4o-mini-2024-07-18"
_counter = itertools.count(1)


def chat(n: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": f"Question {n}?"},
        {"role": "assistant", "content": f"Answer {n}."},
    ]


def make_organization(session: Session) -> str:
    organization = Organization(name=f"Org {next(_counter)}")
    session.add(organization)
    session.commit()
    return organization.id


def make_dataset(
    session: Session, organization_id: str, *, train: int = 3, validation: int = 1, invalid: int = 1
) -> FineTuningDataset:
    """A valid dataset whose examples alternate splits, plus ``invalid`` rows to leave out."""
    dataset = FineTuningDataset(
        organization_id=organization_id,
        name=f"Dataset {next(_counter)}",
        format=DatasetFormat.JSONL,
        status=DatasetStatus.VALID,
        total_examples=train + validation + invalid,
        valid_examples=train + validation,
        train_examples=train,
        validation_examples=validation,
    )
    session.add(dataset)
    session.flush()
    splits = [ExampleSplit.TRAIN] * train + [ExampleSplit.VALIDATION] * validation
    for line, split in enumerate(splits, start=1):
        session.add(
            TrainingExample(
                organization_id=organization_id,
                dataset_id=dataset.id,
                line_number=line,
                messages=chat(line),
                split=split,
            )
        )
    for line in range(len(splits) + 1, len(splits) + invalid + 1):
        session.add(
            TrainingExample(
                organization_id=organization_id,
                dataset_id=dataset.id,
                line_number=line,
                messages=None,
                raw_line="{not json",
                is_valid=False,
            )
        )
    session.commit()
    return dataset


def queue_job(
    session: Session, organization_id: str, dataset: FineTuningDataset, **fields: Any
) -> FineTuningJob:
    """A pending job due now, as the jobs API leaves it."""
    values: dict[str, Any] = {
        "provider": "openai",
        "base_model": OPENAI_BASE_MODEL,
        "status": JobStatus.PENDING,
        "run_after": utcnow(),
        "suffix": "tf",
    }
    job = FineTuningJob(organization_id=organization_id, dataset_id=dataset.id, **values | fields)
    session.add(job)
    session.commit()
    return job
