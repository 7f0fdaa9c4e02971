"""What a fine-tuning provider must offer; adding a provider means one module implementing this.

The worker drives every provider the same way: upload files and create the provider job
once (idempotently, keyed by our job id), then poll status, events and checkpoints until a
terminal status. A provider whose training runs inside the worker (``runs_in_worker``)
keeps the worker's lease for the whole run and is polled every few seconds; a remote one
is polled at the configured interval and the lease is released between polls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from tuneforge.jobs.tables import JobStatus
from tuneforge.providers.catalog import BaseModelInfo


class ProviderError(Exception):
    """A provider refused the work for good (bad request, auth, failed job)."""

    def __init__(self, message: str, *, code: str = "provider_error") -> None:
        super().__init__(message)
        self.code = code


class RetriableProviderError(ProviderError):
    """A transient failure (rate limit, 5xx, timeout); the worker retries after ``retry_after``."""

    def __init__(self, message: str, *, retry_after: float = 5.0, code: str = "retriable") -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ProviderJobRequest:
    """Everything a provider needs to create a job; ``idempotency_key`` is our job id."""

    idempotency_key: str
    base_model: str
    training_file_id: str
    validation_file_id: str | None
    hyperparameters: dict[str, Any]
    suffix: str | None
    seed: int | None
    metadata: dict[str, str]


@dataclass(frozen=True)
class ProviderMetric:
    step: int
    name: str
    value: float


@dataclass(frozen=True)
class ProviderEvent:
    provider_event_id: str
    created_at: datetime
    level: str
    message: str
    event_type: str = "message"
    metrics: tuple[ProviderMetric, ...] = ()
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class ProviderCheckpoint:
    provider_checkpoint_id: str
    step: int
    model_reference: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderJobStatus:
    """A provider's view of a job mapped onto our states; ``raw_status`` is kept for events."""

    status: JobStatus | None
    raw_status: str
    trained_tokens: int | None = None
    estimated_finish: datetime | None = None
    fine_tuned_model: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    progress_percentage: float | None = None


class FineTuningProvider(Protocol):
    name: str
    runs_in_worker: bool

    def list_base_models(self) -> list[BaseModelInfo]: ...

    def ensure_configured(self) -> None:
        """Raise ``tuneforge.errors.InvalidInput`` when the provider cannot take jobs here."""

    def check_hyperparameters(self, requested: dict[str, Any]) -> None:
        """Raise ``InvalidInput`` naming the field of a hyperparameter this provider refuses."""

    def upload_training_file(self, path: Path, *, idempotency_key: str) -> str: ...

    def create_job(self, request: ProviderJobRequest) -> str: ...

    def find_job(self, idempotency_key: str) -> str | None:
        """The provider job already created for this key, so a retried create makes no duplicate."""

    def get_status(self, provider_job_id: str) -> ProviderJobStatus: ...

    def list_events(self, provider_job_id: str, *, after: str | None) -> list[ProviderEvent]:
        """Events newer than ``after`` (a provider event id), oldest first."""

    def list_checkpoints(self, provider_job_id: str) -> list[ProviderCheckpoint]: ...

    def cancel(self, provider_job_id: str) -> None: ...

    def abandon(self, provider_job_id: str) -> None:
        """Stop what this worker process runs for the job without cancelling it.

        Called when another worker took the job's lease over, or when this worker stops
        mid-run and hands the job back: the worker that has the job next carries on.
        """
