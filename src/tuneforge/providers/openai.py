"""The ``openai`` provider: OpenAI's hosted fine-tuning through the official SDK.

The SDK's own retries are off: the worker owns retrying (it releases the lease and comes
back after ``retry_after``), so a transient failure surfaces at once as a
RetriableProviderError instead of holding a worker thread in SDK back-off. Our job id
travels as job metadata, which is how a retried create finds the job it already made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import openai
from openai import OpenAI
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from tuneforge.config import Settings
from tuneforge.errors import InvalidInput
from tuneforge.providers.catalog import OPENAI_PROVIDER, list_base_models
from tuneforge.providers.contract import (
    SUPERVISED,
    TRAINING_METHODS,
    BaseModelInfo,
    DatasetFigures,
    ProviderCheckpoint,
    ProviderError,
    ProviderEvent,
    ProviderJobRequest,
    ProviderJobState,
    ProviderJobStatus,
    ProviderMetric,
    Readiness,
    ResolvedHyperparameters,
    RetriableProviderError,
    ServableFiles,
    require_shared_only,
    resolve_beta,
    resolve_by_openai_rules,
    shared_hyperparameters,
)

IDEMPOTENCY_METADATA_KEY = "tuneforge_job_id"
SUPPORTED_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier", "beta")
NOT_CONFIGURED_MESSAGE = "OpenAI API key is not configured: set TUNEFORGE_OPENAI_API_KEY"

# The SDK retries these too: request timeout, lock conflict, rate limit (and every 5xx).
_RETRIABLE_STATUS_CODES = frozenset({408, 409, 429})
_BASE_RETRY_SECONDS = 5.0
_MAX_RETRY_SECONDS = 300.0
_NOT_METRICS = frozenset({"step", "total_steps"})

_STATUSES: dict[str, ProviderJobState] = {
    "validating_files": ProviderJobState.VALIDATING_FILES,
    "queued": ProviderJobState.QUEUED,
    "running": ProviderJobState.RUNNING,
    "succeeded": ProviderJobState.SUCCEEDED,
    "failed": ProviderJobState.FAILED,
    "cancelled": ProviderJobState.CANCELLED,
}
_FINISHED = frozenset(
    {ProviderJobState.SUCCEEDED, ProviderJobState.FAILED, ProviderJobState.CANCELLED}
)

T = TypeVar("T")


class OpenAIProvider:
    """Remote jobs on OpenAI; polled at the configured interval, lease released between."""

    name = OPENAI_PROVIDER
    methods = frozenset(TRAINING_METHODS)
    runs_in_worker = False
    can_pause = False
    serves_models_here = False

    def __init__(self, settings: Settings, *, timeout_seconds: float | None = None) -> None:
        self._settings = settings
        self._timeout = timeout_seconds or settings.openai_timeout_seconds
        self._client: OpenAI | None = None
        self._client_lock = threading.Lock()
        self._consecutive_failures = 0

    def list_base_models(self) -> list[BaseModelInfo]:
        return [m for m in list_base_models(self._settings) if m.provider == self.name]

    def readiness(self, model: BaseModelInfo) -> Readiness:
        if self._settings.openai_api_key:
            return Readiness(True, "API key configured")
        return Readiness(False, "set TUNEFORGE_OPENAI_API_KEY")

    def servable_files(self, model_reference: str, base_model: str) -> ServableFiles | None:
        return None  # OpenAI serves its fine-tunes itself

    def check_hyperparameters(self, requested: dict[str, Any], *, method: str = SUPERVISED) -> None:
        require_shared_only(self.name, requested)

    def resolve_hyperparameters(
        self, requested: dict[str, Any], figures: DatasetFigures, *, method: str = SUPERVISED
    ) -> ResolvedHyperparameters:
        resolved = resolve_by_openai_rules(
            shared_hyperparameters(requested), figures.train_examples
        )
        return resolved.model_copy(update={"beta": resolve_beta(requested, method)})

    def ensure_configured(self) -> None:
        if not self._settings.openai_api_key:
            raise InvalidInput(NOT_CONFIGURED_MESSAGE, field="provider")

    def upload_training_file(self, path: Path, *, idempotency_key: str) -> str:
        """Upload ``path`` once: a recent file with the same key-derived name and size is reused.

        A retry after a lost response finds the file the first attempt created.
        """
        filename = f"tuneforge-{idempotency_key}-{path.name}"
        size = path.stat().st_size

        def upload(client: OpenAI) -> str:
            recent = client.files.list(purpose="fine-tune", order="desc", limit=100).data
            for existing in recent:
                if (existing.filename, existing.bytes) == (filename, size) and (
                    existing.status != "error"
                ):
                    return existing.id
            with path.open("rb") as handle:
                created = client.files.create(
                    file=(filename, handle, "application/jsonl"),
                    purpose="fine-tune",
                )
            return created.id

        return self._call(upload)

    def create_job(self, request: ProviderJobRequest) -> str:
        """Create the job with our id in its metadata; only OpenAI's hyperparameters are sent.
        A job from a fine-tune names that fine-tune as its model, as OpenAI's API wants."""
        hyperparameters = {
            name: request.hyperparameters[name]
            for name in SUPPORTED_HYPERPARAMETERS
            if request.hyperparameters.get(name) is not None
        }
        options: dict[str, Any] = {}
        if request.validation_file_id:
            options["validation_file"] = request.validation_file_id
        if request.suffix:
            options["suffix"] = request.suffix
        if request.seed is not None:
            options["seed"] = request.seed
        metadata = {**request.metadata, IDEMPOTENCY_METADATA_KEY: request.idempotency_key}
        job = self._call(
            lambda client: client.fine_tuning.jobs.create(
                model=request.parent_model or request.base_model,
                training_file=request.training_file_id,
                method={
                    "type": request.method,
                    request.method: {"hyperparameters": hyperparameters},
                },
                metadata=metadata,
                **options,
            )
        )
        return job.id

    def find_job(self, idempotency_key: str) -> str | None:
        page = self._call(
            lambda client: client.fine_tuning.jobs.list(
                metadata={IDEMPOTENCY_METADATA_KEY: idempotency_key}, limit=20
            )
        )
        matches = [
            job
            for job in page.data
            if (job.metadata or {}).get(IDEMPOTENCY_METADATA_KEY) == idempotency_key
        ]
        return min(matches, key=lambda job: job.created_at).id if matches else None

    def get_status(self, provider_job_id: str) -> ProviderJobStatus:
        job = self._call(lambda client: client.fine_tuning.jobs.retrieve(provider_job_id))
        return _job_status(job)

    def list_events(self, provider_job_id: str, *, after: str | None) -> list[ProviderEvent]:
        """OpenAI lists newest first and its cursor pages backwards, so read down to ``after``."""

        def newer_events(client: OpenAI) -> list[FineTuningJobEvent]:
            events: list[FineTuningJobEvent] = []
            for event in client.fine_tuning.jobs.list_events(provider_job_id, limit=100):
                if event.id == after:
                    break
                events.append(event)
            return events

        return [_event(event) for event in reversed(self._call(newer_events))]

    def list_checkpoints(self, provider_job_id: str) -> list[ProviderCheckpoint]:
        checkpoints = self._call(
            lambda client: list(
                client.fine_tuning.jobs.checkpoints.list(provider_job_id, limit=100)
            )
        )
        return sorted(
            (
                ProviderCheckpoint(
                    provider_checkpoint_id=checkpoint.id,
                    step=checkpoint.step_number,
                    model_reference=checkpoint.fine_tuned_model_checkpoint,
                    metrics=_numeric_fields(checkpoint.metrics.model_dump()),
                )
                for checkpoint in checkpoints
            ),
            key=lambda checkpoint: checkpoint.step,
        )

    def cancel(self, provider_job_id: str) -> None:
        """Ask OpenAI to cancel; a job that already finished is left for the next poll."""
        try:
            self._call(lambda client: client.fine_tuning.jobs.cancel(provider_job_id))
        except RetriableProviderError:
            raise
        except ProviderError:
            if self.get_status(provider_job_id).status in _FINISHED:
                return
            raise

    def pause(self, provider_job_id: str) -> None:
        """Refused before it gets here (``can_pause`` is False): TuneForge pauses its own runs."""
        raise ProviderError("Jobs on OpenAI cannot be paused from TuneForge", code="unsupported")

    def abandon(self, provider_job_id: str) -> None:
        """Nothing runs here: OpenAI trains the job whichever worker polls it."""

    def _get_client(self) -> OpenAI:
        if not self._settings.openai_api_key:
            raise ProviderError(NOT_CONFIGURED_MESSAGE, code="not_configured")
        with self._client_lock:
            if self._client is None:
                self._client = OpenAI(
                    api_key=self._settings.openai_api_key,
                    base_url=self._settings.openai_base_url,
                    timeout=self._timeout,
                    max_retries=0,
                )
            return self._client

    def _call(self, operation: Callable[[OpenAI], T]) -> T:
        """Run one SDK operation, turning SDK errors into our retriable / final errors."""
        client = self._get_client()
        try:
            result = operation(client)
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from exc
        except openai.APITimeoutError as exc:
            raise self._retriable(f"OpenAI request timed out: {exc}", "timeout", None) from exc
        except openai.APIConnectionError as exc:
            raise self._retriable(
                f"Could not reach OpenAI: {exc}", "connection_error", None
            ) from exc
        self._consecutive_failures = 0
        return result

    def _status_error(self, exc: openai.APIStatusError) -> ProviderError:
        body = exc.body if isinstance(exc.body, dict) else {}
        message = str(body.get("message") or exc.message)
        code = str(body.get("code") or body.get("type") or f"http_{exc.status_code}")
        if exc.status_code in _RETRIABLE_STATUS_CODES or exc.status_code >= 500:
            delay = _retry_after_header(exc.response.headers)
            return self._retriable(f"OpenAI returned {exc.status_code}: {message}", code, delay)
        return ProviderError(message, code=code)

    def _retriable(self, message: str, code: str, delay: float | None) -> RetriableProviderError:
        """Honour the server's delay; otherwise back off doubling per consecutive failure."""
        if delay is None:
            delay = min(_BASE_RETRY_SECONDS * 2**self._consecutive_failures, _MAX_RETRY_SECONDS)
        self._consecutive_failures = min(self._consecutive_failures + 1, 16)
        return RetriableProviderError(message, retry_after=delay, code=code)


def _retry_after_header(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    try:
        return max(0.0, float(headers["retry-after-ms"]) / 1000)
    except (KeyError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _timestamp(epoch_seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(epoch_seconds, UTC) if epoch_seconds else None


def _numeric_fields(data: Mapping[str, Any]) -> dict[str, float]:
    return {
        name: float(value)
        for name, value in data.items()
        if name not in _NOT_METRICS
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    }


def _job_status(job: FineTuningJob) -> ProviderJobStatus:
    # An unset error may come back as an empty object; read its fields defensively.
    error = job.error
    return ProviderJobStatus(
        status=_STATUSES.get(job.status),
        raw_status=str(job.status),
        trained_tokens=job.trained_tokens,
        estimated_finish=_timestamp(job.estimated_finish),
        fine_tuned_model=job.fine_tuned_model,
        error_code=getattr(error, "code", None) or None,
        error_message=getattr(error, "message", None) or None,
    )


def _event(event: FineTuningJobEvent) -> ProviderEvent:
    """Metrics events carry ``step`` (and ``total_steps``, kept in ``data`` for progress)."""
    data = event.data if isinstance(event.data, dict) else None
    metrics: tuple[ProviderMetric, ...] = ()
    step = data.get("step") if data else None
    if event.type == "metrics" and data and isinstance(step, int | float):
        metrics = tuple(
            ProviderMetric(step=int(step), name=name, value=value)
            for name, value in _numeric_fields(data).items()
        )
    return ProviderEvent(
        provider_event_id=event.id,
        created_at=datetime.fromtimestamp(event.created_at, UTC),
        level=event.level,
        message=event.message,
        event_type=event.type or "message",
        metrics=metrics,
        data=data or None,
    )
