"""OpenAI's files and fine-tuning jobs over TuneForge's own datasets and jobs.

Nothing here stores anything of its own: a ``fine-tune`` file is a dataset (validated on
upload, the same rows, in the dashboard), a ``fine_tuning.job`` is the job row the native
API shows, moved by the one state machine. This module only translates names and shapes,
and refuses what TuneForge does not train yet as OpenAI would, naming the parameter.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.datasets import ingest, storage
from tuneforge.datasets import service as datasets_service
from tuneforge.datasets.export import iter_example_lines
from tuneforge.datasets.repository import get_dataset
from tuneforge.db.tables.datasets import DatasetStatus, FineTuningDataset
from tuneforge.db.tables.jobs import FineTuningEvent, FineTuningJob, JobCheckpoint, JobStatus
from tuneforge.errors import BadRequest, InvalidInput, NotFound
from tuneforge.jobs import repository as jobs_repository
from tuneforge.jobs import service as jobs_service
from tuneforge.jobs.schemas import JobCreate, JobOut, Method
from tuneforge.openai_compat import repository
from tuneforge.openai_compat.schemas import (
    FILE_PURPOSE,
    RESULTS_PURPOSE,
    CheckpointMetrics,
    CheckpointObject,
    DpoHyperparametersObject,
    DpoObject,
    FileObject,
    FineTuningJobCreate,
    FineTuningJobObject,
    HyperparametersObject,
    JobErrorObject,
    JobEventObject,
    JobStatusName,
    MethodObject,
    SupervisedObject,
)
from tuneforge.providers.contract import DPO, checkpoint_model_name

S = JobStatus

# The job states OpenAI's clients know; the passing ones read as what the run still is.
_STATUS_NAMES: dict[JobStatus, JobStatusName] = {
    S.PENDING: "validating_files",
    S.VALIDATING_FILES: "validating_files",
    S.QUEUED: "queued",
    S.RUNNING: "running",
    S.PAUSING: "running",
    S.PAUSED: "paused",
    S.CANCELLING: "running",
    S.SUCCEEDED: "succeeded",
    S.FAILED: "failed",
    S.CANCELLED: "cancelled",
}
# Our request fields, as OpenAI's clients name them.
_PARAM_NAMES = {"dataset_id": "training_file", "validation_dataset_id": "validation_file"}
_FILE_STATUSES = {DatasetStatus.VALID: "processed", DatasetStatus.INVALID: "error"}
_EVENT_LEVELS = {"warning": "warn", "error": "error"}
_METRIC_DATA = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
    "total_steps",
)
RESULTS_FILE_PREFIX = "file-results-"
# OpenAI's results CSV columns, and the metric each is read from.
RESULTS_COLUMNS = {
    "train_loss": "train_loss",
    "train_accuracy": "train_mean_token_accuracy",
    "valid_loss": "valid_loss",
    "valid_mean_token_accuracy": "valid_mean_token_accuracy",
}
ERRORS_SHOWN = 3
CONTENT_CHUNK_BYTES = 1 << 16
EVENT_ID_PREFIX = "ftevent-"
CHECKPOINT_ID_PREFIX = "ftckpt-"


def _unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


# Files.


def upload_file(
    session: Session,
    settings: Settings,
    organization_id: str,
    user_id: str,
    upload: storage.ReceivedUpload,
) -> FineTuningDataset:
    """Store a ``fine-tune`` file as a dataset named after the file, validated as it lands."""
    purpose = upload.fields.pop("purpose", None)
    if purpose != FILE_PURPOSE:
        upload.discard()
        shown = "missing" if purpose is None else repr(purpose[:40])
        raise BadRequest(
            f"purpose: {shown}; TuneForge takes files for fine-tuning only "
            f"(purpose {FILE_PURPOSE!r})",
            field="purpose",
        )
    name = PurePath(upload.filename).name[:200].strip() or "upload.jsonl"
    upload.fields = {"name": name}
    return ingest.create_from_upload(session, organization_id, user_id, upload, settings)


def file_object(dataset: FineTuningDataset) -> FileObject:
    return FileObject(
        id=dataset.id,
        bytes=dataset.file_size_bytes,
        created_at=int(dataset.created_at.timestamp()),
        filename=dataset.original_filename or dataset.name,
        status=_FILE_STATUSES.get(dataset.status, "uploaded"),  # type: ignore[arg-type]
        status_details=_first_errors(dataset),
    )


def _first_errors(dataset: FineTuningDataset) -> str | None:
    """The report's first errors by line, as OpenAI's ``status_details`` says why."""
    if dataset.status is not DatasetStatus.INVALID or not dataset.validation_report:
        return None
    errors = dataset.validation_report.get("errors") or []
    invalid = dataset.total_examples - dataset.valid_examples
    shown = "; ".join(f"line {e['line']}: {e['message']}" for e in errors[:ERRORS_SHOWN])
    return f"{invalid} of {dataset.total_examples} examples are invalid: {shown}"


def list_files(
    session: Session,
    organization_id: str,
    *,
    after: str | None,
    limit: int,
    newest_first: bool,
    purpose: str | None,
) -> tuple[list[FineTuningDataset], bool]:
    if purpose is not None and purpose != FILE_PURPOSE:
        return [], False  # every file here is a fine-tune file
    return repository.file_page(
        session, organization_id, after=after, limit=limit, newest_first=newest_first
    )


def retrieve_file(session: Session, organization_id: str, file_id: str) -> FileObject:
    if file_id.startswith(RESULTS_FILE_PREFIX):
        job, content = _results(session, organization_id, file_id)
        return FileObject(
            id=file_id,
            bytes=len(content),
            created_at=_unix(job.finished_at) or int(job.created_at.timestamp()),
            filename="step_metrics.csv",
            purpose=RESULTS_PURPOSE,
            status="processed",
        )
    return file_object(get_dataset(session, organization_id, file_id))


def delete_file(session: Session, organization_id: str, file_id: str) -> None:
    if file_id.startswith(RESULTS_FILE_PREFIX):
        raise BadRequest("file_id: a job's results file lives as long as its job", field="file_id")
    datasets_service.delete_dataset(session, organization_id, file_id)


def file_content(session: Session, organization_id: str, file_id: str) -> Iterator[bytes]:
    """The bytes uploaded, as they were; a dataset imported from conversations has no
    upload, so its examples are written out as chat JSONL. A job's results file is its
    step metrics as OpenAI's CSV."""
    if file_id.startswith(RESULTS_FILE_PREFIX):
        return iter([_results(session, organization_id, file_id)[1]])
    dataset = get_dataset(session, organization_id, file_id)
    path = Path(dataset.file_path) if dataset.file_path else None
    if path is not None and path.is_file():
        return _chunks(path)
    lines = [line + "\n" for line in iter_example_lines(session, dataset.id, None)]
    return iter([("".join(lines)).encode()])


def _results(session: Session, organization_id: str, file_id: str) -> tuple[FineTuningJob, bytes]:
    """A succeeded job's step metrics, one row per step, in OpenAI's results columns."""
    job = jobs_service.get_job(session, organization_id, file_id.removeprefix(RESULTS_FILE_PREFIX))
    if job.status != S.SUCCEEDED:
        raise NotFound(f"File {file_id} not found", field="file_id")
    steps: dict[int, dict[str, float]] = {}
    for point in jobs_repository.all_metrics(session, job.id, list(RESULTS_COLUMNS.values())):
        steps.setdefault(point.step, {})[point.name] = point.value
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", *RESULTS_COLUMNS])
    for step in sorted(steps):
        values = steps[step]
        writer.writerow([step, *(values.get(name, "") for name in RESULTS_COLUMNS.values())])
    return job, out.getvalue().encode()


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CONTENT_CHUNK_BYTES):
            yield chunk


# Jobs.


def create_job(
    session: Session,
    settings: Settings,
    organization_id: str,
    user_id: str | None,
    body: FineTuningJobCreate,
) -> FineTuningJob:
    """OpenAI's request as a TuneForge job; an invalid training file is refused with its
    report's first errors, as OpenAI refuses one at job creation."""
    method = _requested_method(body)
    _require_valid_file(session, organization_id, body.training_file, "training_file")
    if body.validation_file is not None:
        _require_valid_file(session, organization_id, body.validation_file, "validation_file")
    top_level = {} if body.hyperparameters is None else {"hyperparameters": body.hyperparameters}
    request = JobCreate(
        dataset_id=body.training_file,
        validation_dataset_id=body.validation_file,
        model=body.model,
        method=method,
        **top_level,
        suffix=body.suffix,
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        metadata=body.metadata,
    )
    try:
        return jobs_service.create_job(session, settings, organization_id, user_id, request)
    except InvalidInput as exc:
        field = str(exc.extra.get("field") or "")
        param = _PARAM_NAMES.get(field, field) or None
        detail = exc.detail
        for ours, theirs in _PARAM_NAMES.items():
            detail = detail.replace(ours, theirs)
        raise BadRequest(detail, field=param) from exc


def _requested_method(body: FineTuningJobCreate) -> Method | None:
    """OpenAI's ``method`` as TuneForge's; reinforcement is refused, naming the parameter."""
    method = body.method
    if method is None:
        return None
    if method.type == "reinforcement":
        raise BadRequest(
            "method.type: 'reinforcement' is not trained by TuneForge yet; use 'supervised' "
            "or 'dpo'",
            field="method.type",
        )
    settings = method.supervised if method.type == "supervised" else method.dpo
    if settings is not None and body.hyperparameters is not None:
        raise BadRequest(
            f"hyperparameters: give them in method.{method.type}.hyperparameters or at the top "
            "level (deprecated), not both",
            field="hyperparameters",
        )
    return Method.model_validate(
        {"type": method.type, method.type: settings.model_dump() if settings else None}
    )


def _require_valid_file(session: Session, organization_id: str, file_id: str, param: str) -> None:
    try:
        dataset = get_dataset(session, organization_id, file_id)
    except NotFound as exc:
        raise BadRequest(f"{param}: file {file_id} not found", field=param) from exc
    if dataset.status is DatasetStatus.VALID:
        return
    details = _first_errors(dataset) or f"it is {dataset.status.value}"
    raise BadRequest(f"{param}: file {file_id} failed validation: {details}", field=param)


def job_object(view: JobOut, organization_id: str) -> FineTuningJobObject:
    resolved = view.hyperparameters
    hyperparameters = HyperparametersObject(
        batch_size=resolved.batch_size,
        learning_rate_multiplier=resolved.learning_rate_multiplier,
        n_epochs=resolved.n_epochs,
    )
    if view.method.type == DPO:
        dpo = DpoHyperparametersObject(**hyperparameters.model_dump(), beta=resolved.beta)
        method = MethodObject(type="dpo", dpo=DpoObject(hyperparameters=dpo))
    else:
        method = MethodObject(
            type="supervised", supervised=SupervisedObject(hyperparameters=hyperparameters)
        )
    error = (
        JobErrorObject(
            code=view.error.code, message=view.error.message, param=_error_param(view.error.code)
        )
        if view.error is not None and view.status == S.FAILED
        else None
    )
    return FineTuningJobObject(
        id=view.id,
        created_at=int(view.created_at.timestamp()),
        error=error,
        fine_tuned_model=view.fine_tuned_model if view.status == S.SUCCEEDED else None,
        finished_at=_unix(view.finished_at),
        hyperparameters=hyperparameters,
        model=view.parent_model or view.model,
        organization_id=organization_id,
        result_files=[f"{RESULTS_FILE_PREFIX}{view.id}"] if view.status == S.SUCCEEDED else [],
        seed=view.seed if view.seed is not None else 0,
        status=_STATUS_NAMES[view.status],
        trained_tokens=view.trained_tokens,
        training_file=view.dataset_id,
        validation_file=view.validation_dataset_id,
        estimated_finish=_unix(view.estimated_finish),
        metadata=view.metadata,
        method=method,
    )


def _error_param(code: str) -> str | None:
    return "training_file" if code in ("invalid_training_file", "invalid_file") else None


def list_jobs(
    session: Session,
    organization_id: str,
    *,
    after: str | None,
    limit: int,
    metadata: dict[str, str],
) -> tuple[list[FineTuningJobObject], bool]:
    jobs, has_more = repository.job_page(
        session, organization_id, after=after, limit=limit, metadata=metadata
    )
    views = jobs_service.describe_jobs(session, organization_id, jobs)
    return [job_object(view, organization_id) for view in views], has_more


def describe(session: Session, organization_id: str, job: FineTuningJob) -> FineTuningJobObject:
    return job_object(jobs_service.describe_job(session, organization_id, job), organization_id)


def event_object(event: FineTuningEvent) -> JobEventObject:
    is_metrics = event.event_type == "metrics"
    data: dict[str, Any] | None = event.data
    if is_metrics and data is not None:
        data = {key: data[key] for key in _METRIC_DATA if key in data}
    return JobEventObject(
        id=f"{EVENT_ID_PREFIX}{event.id}",
        created_at=int(event.created_at.timestamp()),
        level=_EVENT_LEVELS.get(event.level, "info"),  # type: ignore[arg-type]
        message=event.message,
        type="metrics" if is_metrics else "message",
        data=data,
    )


def event_cursor(after: str | None) -> int | None:
    """``after`` as our event id: OpenAI's clients pass back the ``ftevent-`` id they saw."""
    if after is None:
        return None
    number = after.removeprefix(EVENT_ID_PREFIX)
    if not number.isdigit() or len(number) > 18:
        raise BadRequest(f"after: {after[:40]!r} is not an event id", field="after")
    return int(number)


def list_checkpoints(
    session: Session, organization_id: str, job_id: str, *, after: str | None, limit: int
) -> tuple[list[CheckpointObject], bool]:
    """A page of the job's kept checkpoints, newest first, after the checkpoint ``after``."""
    job = jobs_service.get_job(session, organization_id, job_id)
    kept = jobs_service.list_checkpoints(session, organization_id, job.id)
    if after is not None:
        ids = [f"{CHECKPOINT_ID_PREFIX}{c.id}" for c in kept]
        if after not in ids:
            raise BadRequest(f"after: no checkpoint {after[:40]} in job {job.id}", field="after")
        kept = kept[ids.index(after) + 1 :]
    return checkpoint_objects(session, job, kept[:limit]), len(kept) > limit


def checkpoint_objects(
    session: Session, job: FineTuningJob, checkpoints: list[JobCheckpoint]
) -> list[CheckpointObject]:
    """Each kept checkpoint under OpenAI's name for it, which ``/v1/chat/completions``
    answers to; metrics keep OpenAI's names (the step's own, as the trainer reported them)."""
    model_name = jobs_service.job_model_name(session, job)
    objects = []
    for checkpoint in checkpoints:
        metrics = checkpoint.metrics or {}
        known = {k: v for k, v in metrics.items() if k in CheckpointMetrics.model_fields}
        objects.append(
            CheckpointObject(
                id=f"{CHECKPOINT_ID_PREFIX}{checkpoint.id}",
                created_at=int(checkpoint.created_at.timestamp()),
                fine_tuned_model_checkpoint=_checkpoint_name(job, checkpoint, model_name),
                fine_tuning_job_id=job.id,
                metrics=CheckpointMetrics(step=checkpoint.step, **known),
                step_number=checkpoint.step,
            )
        )
    return objects


def _checkpoint_name(job: FineTuningJob, checkpoint: JobCheckpoint, model_name: str) -> str:
    reference = checkpoint.model_reference or ""
    if reference.startswith("ft:"):  # a hosted provider named it itself
        return reference
    return checkpoint_model_name(model_name, checkpoint.step)
