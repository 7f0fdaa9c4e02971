"""Advancing one claimed job by one step with its provider.

A step either starts the job (files exported and uploaded, the provider job created) or
polls it (status, new events, checkpoints, progress), or, while cancelling, asks the
provider to stop. Provider calls run outside any database transaction; what they return
is written in short transactions that first re-lock the job and check that this worker
still holds its lease (a worker that lost it writes nothing). Everything that makes a
retry safe is committed before the next provider call: uploaded file ids before the
job is created, and the provider job id before any polling, so a crash anywhere never
creates a second provider job (``find_job`` by our job id catches the in-between crash).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from tuneforge.config import Settings
from tuneforge.datasets.export import export_job_files
from tuneforge.db.base import utcnow
from tuneforge.db.engine import unit_of_work
from tuneforge.db.tables.auth import Organization
from tuneforge.db.tables.jobs import FineTuningJob, JobStatus
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.errors import TuneForgeError
from tuneforge.evals.service import queue_job_evaluation
from tuneforge.jobs import repository
from tuneforge.jobs.progress import (
    latest_provider_event_id,
    record_checkpoints,
    record_progress,
    record_provider_events,
)
from tuneforge.jobs.states import (
    IDLE_STATUSES,
    TERMINAL_STATUSES,
    InvalidTransition,
    JobUpdate,
    can_transition,
    lock_job,
    transition_job,
    update_job,
)
from tuneforge.models.service import create_model_from_job
from tuneforge.providers.contract import (
    FineTuningProvider,
    ProviderError,
    ProviderJobRequest,
    ProviderJobStatus,
    RetriableProviderError,
    name_part,
)
from tuneforge.providers.registry import get_provider

S = JobStatus
log = logging.getLogger(__name__)

CANCEL_SENT_EVENT = "provider_cancel"
UNKNOWN_STATUS_EVENT = "provider_status"
RETRY_EVENT = "retry"


@dataclass(frozen=True)
class WorkerConfig:
    """Retry and pacing knobs of the worker (not user settings: defaults suit every provider)."""

    max_attempts: int = 5
    backoff_base_seconds: float = 5.0
    backoff_max_seconds: float = 600.0
    in_worker_poll_seconds: float = 2.0
    idle_sleep_seconds: float = 1.0
    conflict_retry_seconds: float = 1.0


class LeaseLost(Exception):
    """Another worker holds the job now; this one must stop touching it."""


@dataclass(frozen=True)
class StepResult:
    """What the worker does next: nothing (``finished``), keep going, or come back later."""

    finished: bool
    next_run_after: datetime
    keep_lease: bool = False


class JobRunner:
    """Runs steps of jobs whose lease ``worker_id`` holds."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        worker_id: str,
        config: WorkerConfig | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.worker_id = worker_id
        self.config = config or WorkerConfig()
        self._providers: dict[str, FineTuningProvider] = {}
        # job id -> (provider, provider job id) of the jobs this runner polls
        self._provider_jobs: dict[str, tuple[str, str]] = {}

    def provider_for(self, name: str) -> FineTuningProvider:
        """One provider instance per name, so its client and back-off state live across steps."""
        if name not in self._providers:
            self._providers[name] = get_provider(name, self.settings)
        return self._providers[name]

    def advance(self, job_id: str) -> StepResult:
        """One step; provider and input errors end up on the job, only LeaseLost escapes."""
        try:
            return self._step(job_id)
        except LeaseLost:
            raise
        except RetriableProviderError as exc:
            return self._retry_later(job_id, exc.code, str(exc), exc.retry_after)
        except InvalidTransition as exc:
            log.info("Job %s changed under step: %s", job_id, exc)
            return self._later(self.config.conflict_retry_seconds)
        except (ProviderError, TuneForgeError) as exc:
            code = exc.code if isinstance(exc, ProviderError) else exc.error
            return self._fail(job_id, code, str(exc))
        except Exception as exc:
            log.exception("Unexpected error advancing job %s", job_id)
            return self._retry_later(job_id, "internal_error", repr(exc), 0.0)

    def _step(self, job_id: str) -> StepResult:
        with unit_of_work(self.session_factory) as session:
            job = self._owned(session, job_id)
        if job.status in IDLE_STATUSES:
            return StepResult(finished=True, next_run_after=utcnow())
        provider = self.provider_for(job.provider)
        if job.status not in (S.CANCELLING, S.PAUSING) and self._needs_start(job, provider):
            job = self._start(job, provider)
        if job.status == S.CANCELLING:
            job = self._cancel_at_provider(job, provider)
        elif job.status == S.PAUSING:
            job = self._pause_at_provider(job, provider)
        if job.status not in IDLE_STATUSES and job.provider_job_id is not None:
            self._provider_jobs[job_id] = (job.provider, job.provider_job_id)
            job = self._poll(job, job.provider_job_id, provider)
        if job.status in IDLE_STATUSES:
            self._provider_jobs.pop(job_id, None)
            return StepResult(finished=True, next_run_after=utcnow())
        if provider.runs_in_worker:
            return StepResult(
                finished=False,
                next_run_after=utcnow() + timedelta(seconds=self.config.in_worker_poll_seconds),
                keep_lease=True,
            )
        return self._later(self.settings.polling_interval_seconds)

    def abandon(self, job_id: str) -> None:
        """This worker lost the job's lease (or the database): stop whatever it runs for the
        job here. The provider job polled last needs no database to find, which matters
        when the database is what failed."""
        known = self._provider_jobs.pop(job_id, None)
        if known is None:
            with unit_of_work(self.session_factory) as session:
                job = session.get(FineTuningJob, job_id)
                if job is None or job.provider_job_id is None:
                    return
                known = (job.provider, job.provider_job_id)
        provider_name, provider_job_id = known
        self.provider_for(provider_name).abandon(provider_job_id)

    def _owned(self, session: Session, job_id: str) -> FineTuningJob:
        """The job, locked; raises LeaseLost unless this worker still holds its lease."""
        job = lock_job(session, job_id)
        if job.lease_owner != self.worker_id:
            raise LeaseLost(f"Job {job_id} is leased by {job.lease_owner or 'nobody'}")
        return job

    def _later(self, seconds: float) -> StepResult:
        return StepResult(finished=False, next_run_after=utcnow() + timedelta(seconds=seconds))

    # Starting: files, then the provider job.

    @staticmethod
    def _needs_start(job: FineTuningJob, provider: FineTuningProvider) -> bool:
        """No provider job yet, or one trained in a worker that no longer runs it.

        A worker that died took its in-worker trainer with it; the worker that claims the
        job next starts it again, and the provider resumes it from its last checkpoint.
        """
        if job.provider_job_id is None:
            return True
        return provider.runs_in_worker and provider.find_job(job.id) is None

    def _start(self, job: FineTuningJob, provider: FineTuningProvider) -> FineTuningJob:
        if job.status == S.PENDING:
            provider.ensure_configured()
            with unit_of_work(self.session_factory) as session:
                self._owned(session, job.id)
                job = transition_job(
                    session, job.id, S.VALIDATING_FILES, message="Preparing training files"
                )
        file_ids = self._upload_files(job, provider)
        with unit_of_work(self.session_factory) as session:
            job = self._owned(session, job.id)
            organization = session.get(Organization, job.organization_id)
            owner = name_part(organization.name if organization else "")
            # Read even if deleted since: the job was created to start from it.
            parent_id = job.parent_model_id
            parent = session.get(FineTunedModel, parent_id) if parent_id else None
        if job.status == S.CANCELLING:
            return job  # cancelled while uploading: create nothing
        provider_job_id = provider.find_job(job.id)
        if provider_job_id is None:
            provider_job_id = provider.create_job(
                ProviderJobRequest(
                    idempotency_key=job.id,
                    base_model=job.base_model,
                    training_file_id=file_ids["training"],
                    validation_file_id=file_ids.get("validation"),
                    hyperparameters=dict(job.hyperparameters or {}),
                    resolved_hyperparameters=job.resolved_hyperparameters,
                    suffix=job.suffix,
                    seed=job.seed,
                    metadata={str(k): str(v) for k, v in (job.job_metadata or {}).items()},
                    resuming=job.provider_job_id is not None,
                    owner=owner,
                    method=job.method,
                    parent_model=parent.provider_model_id if parent else None,
                )
            )
        with unit_of_work(self.session_factory) as session:
            current = self._owned(session, job.id).status
            # A cancel may have arrived meanwhile; the id is kept so the cancel reaches it.
            target = S.QUEUED if current in (S.PENDING, S.VALIDATING_FILES) else current
            verb = "Resumed" if job.provider_job_id else "Created"
            return transition_job(
                session,
                job.id,
                target,
                message=f"{verb} {job.provider} job {provider_job_id}",
                update=JobUpdate(provider_job_id=provider_job_id, attempts=0),
                data={"provider_job_id": provider_job_id},
            )

    def _upload_files(self, job: FineTuningJob, provider: FineTuningProvider) -> dict[str, str]:
        """Export and upload the files not uploaded yet, committing each file id at once."""
        file_ids: dict[str, str | None] = dict(job.provider_file_ids or {})
        if file_ids.get("training") and "validation" in file_ids:
            return {k: v for k, v in file_ids.items() if v}
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.settings.data_dir, prefix="export-") as tmp:
            with unit_of_work(self.session_factory) as session:
                exported = export_job_files(session, job, Path(tmp))
            uploads = {"training": exported.training_path, "validation": exported.validation_path}
            for kind, path in uploads.items():
                if kind in file_ids and (file_ids[kind] or path is None):
                    continue
                key = f"{job.id}-{kind}"
                file_ids[kind] = (
                    provider.upload_training_file(path, idempotency_key=key) if path else None
                )
                self._save_file_ids(job.id, file_ids)
        return {k: v for k, v in file_ids.items() if v}

    def _save_file_ids(self, job_id: str, file_ids: dict[str, str | None]) -> None:
        with unit_of_work(self.session_factory) as session:
            self._owned(session, job_id)
            update_job(session, job_id, JobUpdate(provider_file_ids=file_ids))

    # Cancelling.

    def _cancel_at_provider(
        self, job: FineTuningJob, provider: FineTuningProvider
    ) -> FineTuningJob:
        provider_job_id = job.provider_job_id
        if provider_job_id is None and job.provider_file_ids:
            provider_job_id = provider.find_job(job.id)  # created, then crashed before saving
        if provider_job_id is None:
            with unit_of_work(self.session_factory) as session:
                self._owned(session, job.id)
                return transition_job(
                    session, job.id, S.CANCELLED, message="Cancelled before training started"
                )
        with unit_of_work(self.session_factory) as session:
            sent = repository.has_event(session, job.id, CANCEL_SENT_EVENT)
        if sent:
            return job
        provider.cancel(provider_job_id)
        with unit_of_work(self.session_factory) as session:
            self._owned(session, job.id)
            return update_job(
                session,
                job.id,
                JobUpdate(provider_job_id=provider_job_id),
                message=f"Asked {job.provider} to cancel job {provider_job_id}",
                event_type=CANCEL_SENT_EVENT,
            )

    def _pause_at_provider(self, job: FineTuningJob, provider: FineTuningProvider) -> FineTuningJob:
        """Nothing started yet is paused at once; a run is asked (again, harmlessly, on
        every step) to checkpoint and stop, and the poll sees it paused."""
        if job.provider_job_id is None:
            with unit_of_work(self.session_factory) as session:
                self._owned(session, job.id)
                return transition_job(
                    session, job.id, S.PAUSED, message="Paused before training started"
                )
        provider.pause(job.provider_job_id)
        return job

    # Polling.

    def _poll(
        self, job: FineTuningJob, provider_job_id: str, provider: FineTuningProvider
    ) -> FineTuningJob:
        """Status first, then events: events fetched after a terminal status include the last."""
        with unit_of_work(self.session_factory) as session:
            after = latest_provider_event_id(session, job.id)
        status = provider.get_status(provider_job_id)
        events = provider.list_events(provider_job_id, after=after)
        checkpoints = provider.list_checkpoints(provider_job_id)
        with unit_of_work(self.session_factory) as session:
            job = self._owned(session, job.id)
            new_events = record_provider_events(session, job.id, events)
            record_checkpoints(session, job.id, checkpoints)
            record_progress(session, job, status, new_events)
            if job.attempts:
                update_job(session, job.id, JobUpdate(attempts=0))
            return self._apply_status(session, job, status)

    def _apply_status(
        self, session: Session, job: FineTuningJob, status: ProviderJobStatus
    ) -> FineTuningJob:
        if status.status is None:
            return self._note_unknown_status(session, job, status.raw_status)
        target = JobStatus(status.status.value)
        if target == job.status or not can_transition(job.status, target):
            return job  # the provider lags behind us (validating while we say queued)
        if job.status == S.CANCELLING and target not in TERMINAL_STATUSES:
            return job
        if job.status == S.PAUSING and target not in IDLE_STATUSES:
            return job
        update = JobUpdate(trained_tokens=status.trained_tokens)
        message = None
        if target == S.SUCCEEDED:
            update.fine_tuned_model_name = status.fine_tuned_model
        elif target == S.FAILED:
            update.error_code = status.error_code or "provider_job_failed"
            update.error_message = status.error_message or f"{job.provider} reported a failure"
            message = f"Training failed: {update.error_message}"
        elif target == S.PAUSED:
            message = "Paused: the run is checkpointed and holds no worker; resume continues it"
        job = transition_job(session, job.id, target, update=update, message=message)
        if target == S.SUCCEEDED:
            model = create_model_from_job(session, job)
            update_job(
                session,
                job.id,
                message=f"Model {model.name} is ready",
                event_type="model_created",
                data={"model_id": model.id},
            )
            if self.provider_for(job.provider).serves_models_here:
                self._queue_before_after(session, job, model)
        return job

    def _queue_before_after(
        self, session: Session, job: FineTuningJob, model: FineTunedModel
    ) -> None:
        """Queue the fine-tune against its base on held-out data, or say why it cannot be."""
        try:
            run = queue_job_evaluation(session, self.settings, job, model)
        except TuneForgeError as exc:
            update_job(
                session,
                job.id,
                message=f"No before/after evaluation: {exc.detail}",
                event_type="evaluation_skipped",
                level="warning",
            )
            return
        update_job(
            session,
            job.id,
            message=f"Queued evaluation {run.id}: the base model against the fine-tune on "
            f"{run.examples_total} held-out examples",
            event_type="evaluation_queued",
            data={"eval_id": run.id},
        )

    def _note_unknown_status(
        self, session: Session, job: FineTuningJob, raw_status: str
    ) -> FineTuningJob:
        message = f"Provider reported status {raw_status!r}"
        if not repository.has_event(session, job.id, UNKNOWN_STATUS_EVENT, message=message):
            update_job(
                session,
                job.id,
                message=message,
                event_type=UNKNOWN_STATUS_EVENT,
                level="warning",
                data={"raw_status": raw_status},
            )
        return job

    # Failures.

    def _retry_later(self, job_id: str, code: str, message: str, retry_after: float) -> StepResult:
        """Count the attempt and come back after a back-off (at least ``retry_after``)."""
        with unit_of_work(self.session_factory) as session:
            job = self._owned(session, job_id)
            if job.status in TERMINAL_STATUSES:
                return StepResult(finished=True, next_run_after=utcnow())
            attempts = job.attempts + 1
            if attempts >= self.config.max_attempts:
                transition_job(
                    session,
                    job_id,
                    S.FAILED,
                    message=f"Gave up after {attempts} attempts: {message}",
                    update=JobUpdate(error_code=code, error_message=message, attempts=attempts),
                )
                return StepResult(finished=True, next_run_after=utcnow())
            backoff = self.config.backoff_base_seconds * 2 ** (attempts - 1)
            delay = max(retry_after, min(backoff, self.config.backoff_max_seconds))
            update_job(
                session,
                job_id,
                JobUpdate(attempts=attempts),
                message=f"{message}; retrying in {delay:.1f}s "
                f"(attempt {attempts} of {self.config.max_attempts})",
                event_type=RETRY_EVENT,
                level="warning",
                data={"code": code, "attempt": attempts, "delay_seconds": delay},
            )
        return self._later(delay)

    def _fail(self, job_id: str, code: str, message: str) -> StepResult:
        with unit_of_work(self.session_factory) as session:
            job = self._owned(session, job_id)
            if job.status not in TERMINAL_STATUSES:
                transition_job(
                    session,
                    job_id,
                    S.FAILED,
                    message=f"Job failed: {message}",
                    update=JobUpdate(error_code=code, error_message=message),
                )
        return StepResult(finished=True, next_run_after=utcnow())
