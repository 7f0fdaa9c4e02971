"""Datasets once stored: listing, reading, edits, re-validation and splits.

Re-validation and edits go through ``ingest``'s checks, so a row reads the same whichever
way it came in. Nothing here commits; the caller's unit of work does.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.datasets import repository
from tuneforge.datasets.checks import PREFERENCE_OUTPUTS
from tuneforge.datasets.ingest import (
    apply_report,
    content_values,
    report_builder,
    result_values,
    revalidate_rows,
    storable,
    validation_model,
)
from tuneforge.datasets.parsing import RawExample
from tuneforge.datasets.preference import stored_payload
from tuneforge.datasets.schemas import (
    DatasetStatistics,
    DatasetUpdate,
    ExampleUpdate,
    SplitRequest,
)
from tuneforge.db.base import utcnow
from tuneforge.db.tables.datasets import (
    DatasetFormat,
    DatasetKind,
    DatasetStatus,
    ExampleSplit,
    FineTuningDataset,
    TrainingExample,
)
from tuneforge.errors import InvalidInput


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
    replies = [changes.get(name, getattr(example, name)) for name in PREFERENCE_OUTPUTS]
    if dataset.kind is not DatasetKind.PREFERENCE:
        if given := [name for name in PREFERENCE_OUTPUTS if name in changes]:
            raise InvalidInput(
                f"{given[0]}: dataset {dataset.id} holds chat examples, which have no replies "
                "apart from their messages",
                field=given[0],
            )
        replies = [None, None]
    payload = stored_payload(
        changes.get("messages", example.messages), changes.get("tools", example.tools), *replies
    )
    raw = storable(RawExample(example.line_number, payload, None, None))
    builder = report_builder(validation_model(dataset, None), settings)
    result = builder.add(raw, example.split.value)
    _count_example(dataset, example, -1)
    for field, value in {**content_values(raw), **result_values(result)}.items():
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
