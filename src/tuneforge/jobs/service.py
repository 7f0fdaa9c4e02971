"""Creating, reading, cancelling and syncing fine-tuning jobs.

A job row is its own queue entry: ``create_job`` inserts it due now in the caller's
transaction, so a rolled-back request leaves no work behind. Every status change goes
through ``transition_job``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.datasets.service import require_valid_dataset
from tuneforge.datasets.validation import ValidationReport
from tuneforge.db.base import utcnow
from tuneforge.db.scoping import get_owned
from tuneforge.db.tables.auth import Organization
from tuneforge.db.tables.datasets import DatasetKind, FineTuningDataset
from tuneforge.db.tables.jobs import (
    FineTuningEvent,
    FineTuningJob,
    JobCheckpoint,
    JobMetric,
    JobStatus,
)
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.errors import Conflict, InvalidInput, NotFound
from tuneforge.jobs import repository
from tuneforge.jobs.repository import JobFilter
from tuneforge.jobs.schemas import (
    EstimateOut,
    EstimateRequest,
    JobCreate,
    JobOut,
)
from tuneforge.jobs.states import TERMINAL_STATUSES, JobUpdate, transition_job, update_job
from tuneforge.providers.catalog import (
    find_base_model,
    training_cost_usd,
    training_price_per_million,
)
from tuneforge.providers.contract import (
    DPO,
    SUPERVISED,
    DatasetFigures,
    FineTuningProvider,
    RequestedDpoHyperparameters,
    ResolvedHyperparameters,
    fine_tuned_model_name,
    name_part,
    resolve_by_openai_rules,
    shared_hyperparameters,
)
from tuneforge.providers.registry import get_provider

S = JobStatus
JOB_LABEL = "Fine-tuning job"


def create_job(
    session: Session,
    settings: Settings,
    organization_id: str,
    user_id: str | None,
    request: JobCreate,
) -> FineTuningJob:
    """Check everything a worker would trip over later, then queue the job."""
    method, requested = requested_training(request)
    dataset = require_valid_dataset(session, organization_id, request.dataset_id)
    _require_kind(dataset, method, "dataset_id")
    if dataset.train_examples == 0:
        raise InvalidInput(
            f"dataset_id: dataset {dataset.name!r} ({dataset.id}) has no training examples; "
            "every valid example is in its validation split",
            field="dataset_id",
        )
    if request.validation_dataset_id is not None:
        _require_validation_dataset(
            session, organization_id, dataset.id, request.validation_dataset_id, method
        )
    start = starting_point(session, organization_id, request.model, request.provider)
    trainer = _check_model_and_provider(
        settings, start.base_model, start.provider, requested, method
    )
    provider_name = trainer.name
    resolved = trainer.resolve_hyperparameters(requested, dataset_figures(dataset), method=method)
    parent = start.parent
    job = FineTuningJob(
        organization_id=organization_id,
        created_by=user_id,
        dataset_id=dataset.id,
        validation_dataset_id=request.validation_dataset_id,
        name=request.name,
        provider=provider_name,
        base_model=start.base_model,
        method=method,
        parent_model=parent.name if parent else None,
        parent_model_id=parent.id if parent else None,
        status=S.PENDING,
        hyperparameters=requested,
        resolved_hyperparameters=resolved.model_dump(),
        suffix=request.suffix,
        seed=request.seed,
        job_metadata=request.metadata,
        run_after=utcnow(),
    )
    session.add(job)
    session.flush()
    return update_job(
        session,
        job.id,
        message=f"Created {method} fine-tuning job {job.id}: {request.model} on {provider_name}",
        event_type="created",
        data={
            "method": method,
            "parent_model": job.parent_model,
            "dataset_id": dataset.id,
            "validation_dataset_id": request.validation_dataset_id,
            "requested_hyperparameters": requested,
            "hyperparameters": resolved.model_dump(),
        },
    )


def requested_training(request: JobCreate | EstimateRequest) -> tuple[str, dict[str, Any]]:
    """The job's method and its hyperparameters as requested: from ``method``, else from the
    top-level field (OpenAI's older place for them), never both."""
    method = request.method
    method_type = method.type if method is not None else SUPERVISED
    settings = getattr(method, method_type) if method is not None else None
    if settings is not None and "hyperparameters" in request.model_fields_set:
        raise InvalidInput(
            f"hyperparameters: give them in method.{method_type}.hyperparameters or at the top "
            "level, not both",
            field="hyperparameters",
        )
    requested = (settings or request).hyperparameters.model_dump()
    if method_type == DPO:
        try:
            return DPO, RequestedDpoHyperparameters.model_validate(requested).model_dump()
        except ValidationError as exc:
            name = str(exc.errors()[0]["loc"][0])
            wanted = RequestedDpoHyperparameters.model_fields[name].description
            field = f"hyperparameters.{name}"
            raise InvalidInput(f"{field}: {wanted}", field=field) from exc
    if "beta" in requested:
        raise InvalidInput(
            "hyperparameters.beta: only DPO jobs take beta; set method.type to 'dpo' to train "
            "on preference pairs",
            field="hyperparameters.beta",
        )
    return SUPERVISED, requested


def _require_kind(dataset: FineTuningDataset, method: str, field: str) -> None:
    """A supervised job trains on chat examples, a DPO job on preference pairs."""
    wanted = DatasetKind.PREFERENCE if method == DPO else DatasetKind.CHAT
    if dataset.kind is not wanted:
        raise InvalidInput(
            f"{field}: dataset {dataset.name!r} ({dataset.id}) holds {dataset.kind.value} "
            f"examples; a {method} job trains on {wanted.value} examples"
            + (" (OpenAI's DPO format)" if wanted is DatasetKind.PREFERENCE else ""),
            field=field,
        )


@dataclass(frozen=True)
class StartingPoint:
    """What a job trains: a base model, and the fine-tune it starts from, if any."""

    base_model: str
    provider: str | None
    parent: FineTunedModel | None = None


def starting_point(
    session: Session, organization_id: str, model: str, provider: str | None
) -> StartingPoint:
    """``model`` as a base model, or as one of the organization's fine-tunes (id or name),
    whose base and provider the job then takes."""
    parent = repository.find_fine_tuned_model(session, organization_id, model)
    if parent is None:
        return StartingPoint(model, provider)
    if provider is not None and provider != parent.provider:
        raise InvalidInput(
            f"provider: model {parent.name} was trained by {parent.provider!r}; a job on top of "
            "it trains there too",
            field="provider",
        )
    return StartingPoint(parent.base_model, parent.provider, parent)


def _require_validation_dataset(
    session: Session,
    organization_id: str,
    dataset_id: str,
    validation_dataset_id: str,
    method: str,
) -> None:
    if validation_dataset_id == dataset_id:
        raise InvalidInput(
            "validation_dataset_id: must differ from dataset_id; to hold out part of one "
            "dataset, give it a validation split",
            field="validation_dataset_id",
        )
    try:
        validation = require_valid_dataset(session, organization_id, validation_dataset_id)
    except InvalidInput as exc:
        raise InvalidInput(
            f"validation_dataset_id: {exc.detail}",
            **{**exc.extra, "field": "validation_dataset_id"},
        ) from exc
    _require_kind(validation, method, "validation_dataset_id")


def dataset_figures(dataset: FineTuningDataset) -> DatasetFigures:
    """What "auto" is resolved from, as the dataset's validation counted it."""
    return DatasetFigures.counted(
        dataset.train_examples, dataset.total_tokens, dataset.valid_examples
    )


def preview_hyperparameters(
    settings: Settings,
    dataset: FineTuningDataset,
    start: StartingPoint,
    requested: dict[str, Any],
    method: str = SUPERVISED,
) -> ResolvedHyperparameters:
    """What a job on ``dataset`` would train with, before it exists (the wizard's preview)."""
    provider_name = start.provider or find_base_model(start.base_model, settings).provider
    trainer = get_provider(provider_name, settings)
    return trainer.resolve_hyperparameters(requested, dataset_figures(dataset), method=method)


def _check_model_and_provider(
    settings: Settings,
    model: str,
    provider: str | None,
    hyperparameters: dict[str, Any],
    method: str,
) -> FineTuningProvider:
    """The provider that will train ``model``; unknown, unoffered, unconfigured, a method it
    does not train or hyperparameters it does not take is a 422."""
    base_model = find_base_model(model, settings)
    provider_name = provider or base_model.provider
    trainer = get_provider(provider_name, settings)
    offered = [m.name for m in trainer.list_base_models()]
    if model not in offered:
        raise InvalidInput(
            f"model: provider {provider_name!r} does not fine-tune {model!r}; "
            f"it offers: {', '.join(offered) or 'nothing'}",
            field="model",
        )
    if method not in trainer.methods:
        raise InvalidInput(
            f"method.type: provider {provider_name!r} does not train {method!r}; it trains "
            f"{', '.join(sorted(trainer.methods))}",
            field="method.type",
        )
    trainer.check_hyperparameters(hyperparameters, method=method)
    trainer.ensure_configured()
    return trainer


def get_job(session: Session, organization_id: str, job_id: str) -> FineTuningJob:
    return get_owned(session, FineTuningJob, job_id, organization_id, label=JOB_LABEL)


def list_jobs(
    session: Session, organization_id: str, job_filter: JobFilter, *, limit: int, offset: int
) -> tuple[list[JobOut], int]:
    """A page of jobs as the API shows them, and the total, in one query."""
    views, total = repository.list_jobs(
        session, organization_id, job_filter, limit=limit, offset=offset
    )
    return [_describe(view) for view in views], total


def get_job_view(session: Session, organization_id: str, job_id: str) -> JobOut:
    """A job as the API shows it, in one query."""
    view = repository.get_job_view(session, organization_id, job_id)
    if view is None:
        raise NotFound(f"{JOB_LABEL} {job_id} not found")
    return _describe(view)


def _describe(view: repository.JobView) -> JobOut:
    if view.resolved_hyperparameters is not None:
        resolved = ResolvedHyperparameters.model_validate(view.resolved_hyperparameters)
    else:  # created before jobs stored what "auto" resolved to
        requested = shared_hyperparameters(view.hyperparameters or {})
        resolved = resolve_by_openai_rules(requested, view.train_examples or 0)
    return JobOut.from_view(view, resolved)


def describe_jobs(
    session: Session, organization_id: str, jobs: Sequence[FineTuningJob]
) -> list[JobOut]:
    """Jobs already loaded, as the API shows them: two queries for their datasets and models."""
    datasets = repository.datasets_by_id(session, organization_id, [j.dataset_id for j in jobs])
    model_ids = repository.model_ids_by_job(session, organization_id, [j.id for j in jobs])
    views = []
    for job in jobs:
        dataset = datasets.get(job.dataset_id)
        train_examples = dataset.train_examples if dataset else 0
        views.append(_describe(repository.JobView.of(job, train_examples, model_ids.get(job.id))))
    return views


def describe_job(session: Session, organization_id: str, job: FineTuningJob) -> JobOut:
    return describe_jobs(session, organization_id, [job])[0]


def cancel_job(session: Session, organization_id: str, job_id: str) -> FineTuningJob:
    """Cancel at once what no provider has yet; otherwise hand the cancel to a worker now."""
    job = get_owned(
        session, FineTuningJob, job_id, organization_id, label=JOB_LABEL, for_update=True
    )
    if job.status in TERMINAL_STATUSES:
        raise Conflict(f"Job {job.id} is already {job.status.value}", status=job.status.value)
    if job.status == S.CANCELLING:
        return job
    if job.status in (S.PENDING, S.QUEUED) and job.provider_job_id is None:
        return transition_job(
            session, job.id, S.CANCELLED, message="Cancelled before training started"
        )
    return transition_job(
        session,
        job.id,
        S.CANCELLING,
        message="Cancellation requested",
        update=JobUpdate(run_after=utcnow()),
    )


def pause_job(
    session: Session, settings: Settings, organization_id: str, job_id: str
) -> FineTuningJob:
    """Park a job: what has not started is paused at once; a run is handed to its worker,
    which checkpoints it and frees itself. Pausing a paused or pausing job changes nothing."""
    job = get_owned(
        session, FineTuningJob, job_id, organization_id, label=JOB_LABEL, for_update=True
    )
    if job.status in (S.PAUSED, S.PAUSING):
        return job
    if job.status in TERMINAL_STATUSES or job.status == S.CANCELLING:
        raise Conflict(
            f"Job {job.id} is {job.status.value}; only a live job can be paused",
            status=job.status.value,
        )
    if not get_provider(job.provider, settings).can_pause:
        raise InvalidInput(
            f"Jobs of provider {job.provider!r} cannot be paused here", field="provider"
        )
    if job.status == S.PENDING:
        return transition_job(session, job.id, S.PAUSED, message="Paused before training started")
    return transition_job(
        session,
        job.id,
        S.PAUSING,
        message="Pause requested: the run is checkpointed, then stops",
        update=JobUpdate(run_after=utcnow()),
    )


def resume_job(session: Session, organization_id: str, job_id: str) -> FineTuningJob:
    """Queue a paused job again; a worker continues it from the checkpoint it paused at."""
    job = get_owned(
        session, FineTuningJob, job_id, organization_id, label=JOB_LABEL, for_update=True
    )
    if job.status != S.PAUSED:
        raise Conflict(f"Job {job.id} is {job.status.value}, not paused", status=job.status.value)
    target = S.QUEUED if job.provider_job_id else S.PENDING
    return transition_job(
        session, job.id, target, message="Resumed", update=JobUpdate(run_after=utcnow())
    )


@dataclass(frozen=True)
class TrainingVerdict:
    """How a run was judged, from what its trainer reported (the job page's summary)."""

    held_out: int | None = None
    held_out_positions: tuple[int, ...] = ()  # lines of the training file (0-based)
    stopped_early_at: int | None = None
    planned_steps: int | None = None
    best_step: int | None = None
    best_valid_loss: float | None = None
    overfitting_at: int | None = None


VERDICT_EVENTS = ("holdout", "early_stopped", "overfitting", "finished")


def training_verdict(session: Session, job: FineTuningJob) -> TrainingVerdict:
    """From the events of ``job``, already read through the organization's scope."""
    found: dict[str, Any] = {}
    for event in repository.events_of_types(session, job.id, VERDICT_EVENTS):
        data = event.data or {}
        if event.event_type == "holdout":
            found["held_out"] = data.get("held_out")
            found["held_out_positions"] = tuple(data.get("positions") or ())
        elif event.event_type == "early_stopped":
            found["stopped_early_at"] = data.get("step")
            found["planned_steps"] = data.get("planned_steps")
        elif event.event_type == "overfitting":
            found["overfitting_at"] = data.get("step")
        elif data.get("best_step") is not None:
            found["best_step"] = data.get("best_step")
            found["best_valid_loss"] = data.get("best_valid_loss")
    return TrainingVerdict(**found)


def list_events(
    session: Session, organization_id: str, job_id: str, *, after: int | None, limit: int
) -> tuple[list[FineTuningEvent], bool]:
    job = get_job(session, organization_id, job_id)
    return repository.list_events_newest_first(session, job.id, before_id=after, limit=limit)


def list_metrics(
    session: Session,
    organization_id: str,
    job_id: str,
    *,
    names: Sequence[str],
    min_step: int | None,
    max_step: int | None,
    limit: int,
) -> tuple[list[JobMetric], bool]:
    job = get_job(session, organization_id, job_id)
    return repository.list_metrics(
        session, job.id, names=names, min_step=min_step, max_step=max_step, limit=limit
    )


def job_model_name(session: Session, job: FineTuningJob) -> str:
    """The job's model name, known once it succeeded; before that, the one it will get."""
    if job.fine_tuned_model_name:
        return job.fine_tuned_model_name
    organization = session.get(Organization, job.organization_id)
    owner = name_part(organization.name if organization else "")
    return fine_tuned_model_name(job.base_model, owner, job.suffix, job.id)


def list_checkpoints(session: Session, organization_id: str, job_id: str) -> list[JobCheckpoint]:
    job = get_job(session, organization_id, job_id)
    return repository.list_checkpoints(session, job.id)


def kept_checkpoint(session: Session, job: FineTuningJob, step: int) -> JobCheckpoint:
    checkpoint = repository.get_checkpoint(session, job.id, step)
    if checkpoint is None or not checkpoint.model_reference:
        raise NotFound(f"Job {job.id} kept no checkpoint at step {step}", field="step")
    return checkpoint


def estimate_job(
    session: Session, settings: Settings, organization_id: str, request: EstimateRequest
) -> EstimateOut:
    """What "auto" becomes for the model's provider, and the billed tokens and cost, from
    the dataset report's own figures."""
    method, requested = requested_training(request)
    dataset = require_valid_dataset(session, organization_id, request.dataset_id)
    _require_kind(dataset, method, "dataset_id")
    start = starting_point(session, organization_id, request.model, None)
    model = find_base_model(start.base_model, settings)
    if dataset.validation_report is None:
        raise InvalidInput(
            f"dataset_id: dataset {dataset.id} has no validation report; validate it first",
            field="dataset_id",
        )
    report = ValidationReport.model_validate(dataset.validation_report)
    same_tokenizer = report.model == model.name or (
        not model.has_own_tokenizer and model.tokenizer == report.tokenizer
    )
    if not same_tokenizer or model.context_length != report.context_length:
        raise InvalidInput(
            f"model: dataset {dataset.id} was validated for {report.model}, whose tokens and "
            f"context differ from {model.name}'s; validate it against {model.name} first",
            field="model",
        )
    trainer = get_provider(start.provider or model.provider, settings)
    trainer.check_hyperparameters(requested, method=method)
    figures = DatasetFigures.counted(
        report.train_examples, report.total_tokens, report.valid_examples
    )
    resolved = trainer.resolve_hyperparameters(requested, figures, method=method)
    n_epochs = resolved.n_epochs
    billed_tokens = report.billed_tokens_per_epoch * n_epochs
    price = training_price_per_million(model.name, settings)
    return EstimateOut(
        dataset_id=dataset.id,
        model=model.name,
        provider=model.provider,
        n_epochs=n_epochs,
        requested_n_epochs=requested.get("n_epochs", "auto"),
        hyperparameters=resolved,
        billed_tokens_per_epoch=report.billed_tokens_per_epoch,
        billed_tokens=billed_tokens,
        price_per_million_tokens=price,
        estimated_cost_usd=training_cost_usd(billed_tokens, price),
    )
