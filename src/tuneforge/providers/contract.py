"""The contract between TuneForge and its fine-tuning providers, and nothing else.

What the worker, the jobs domain and every provider share lives here: the Protocol a
provider implements, the values they exchange (job request, provider-side job state,
events, metrics, checkpoints), the shared hyperparameters with their "auto" rules, and the
epoch heuristic. It depends on no database, web or dataset code, so the training child
that imports it stays light; adding a provider means one module implementing the Protocol.

The worker drives every provider the same way: upload files and create the provider job
once (idempotently, keyed by our job id), then poll status, events and checkpoints until a
terminal status. A provider whose training runs inside the worker (``runs_in_worker``)
keeps the worker's lease for the whole run and is polled every few seconds; a remote one
is polled at the configured interval and the lease is released between polls.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.errors import InvalidInput, ServiceUnavailable


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


class ModelUnavailable(ServiceUnavailable):
    """The model exists but cannot be served here: files missing, unreadable or incomplete."""

    error = "model_unavailable"


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
    # What the job showed "auto" would become; a provider that resolves "auto" itself
    # (OpenAI) ignores it, the local trainer trains with it.
    resolved_hyperparameters: dict[str, Any] | None = None
    # The organization as a name part (lowercase, a-z0-9-), for OpenAI-style model names.
    owner: str | None = None
    # The job had a provider job already (its worker died): the provider must carry on with
    # it, not start afresh (the local provider needs that job's directory).
    resuming: bool = False
    # "supervised" or "dpo" (``TRAINING_METHODS``); the provider offers it (``methods``).
    method: str = "supervised"
    # The provider's reference of the fine-tune the job starts from (its model's
    # ``provider_model_id``), or None to start from the base model.
    parent_model: str | None = None


CHECKPOINT_NAME_MARK = ":ckpt-step-"


def name_part(text: str) -> str:
    """Text as a part of a model name: ``Acme Labs`` becomes ``acme-labs``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "tuneforge"


def fine_tuned_model_name(base_model: str, owner: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's form, ``ft:<base>:<organization>:<suffix>:<job id>`` (the suffix may be empty)."""
    return f"ft:{base_model}:{owner}:{suffix or ''}:{job_id}"


def checkpoint_model_name(job_model_name: str, step: int) -> str:
    """OpenAI's name for a job's checkpoint: the job's model name, then ``:ckpt-step-N``."""
    return f"{job_model_name}{CHECKPOINT_NAME_MARK}{step}"


def parse_checkpoint_model_name(name: str) -> tuple[str, int] | None:
    """The job id and step a checkpoint name (``ft:…:<job id>:ckpt-step-N``) points at."""
    head, mark, step = name.rpartition(CHECKPOINT_NAME_MARK)
    if not mark or not head.startswith("ft:") or not step.isdigit() or len(step) > 9:
        return None
    return head.rsplit(":", 1)[-1], int(step)


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


class ProviderJobState(enum.StrEnum):
    """The states a provider reports, named as the job states they become."""

    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ProviderJobStatus:
    """A provider's view of a job mapped onto our states; ``raw_status`` is kept for events.

    ``status`` is None for a provider status with no equivalent (it is noted, not applied).
    """

    status: ProviderJobState | None
    raw_status: str
    trained_tokens: int | None = None
    estimated_finish: datetime | None = None
    fine_tuned_model: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    progress_percentage: float | None = None


@dataclass(frozen=True)
class BaseModelInfo:
    """A model a provider can fine-tune. ``tokenizer`` names a BPE encoding, or is
    ``MODEL_TOKENIZER`` when the tokenizer lies with the weights in ``local_path``."""

    name: str
    provider: str
    context_length: int
    tokenizer: str
    parameter_count: int | None = None
    local_path: Path | None = None
    reads_images: bool = False  # whether fine-tuning takes image parts (vision fine-tuning)

    @property
    def has_own_tokenizer(self) -> bool:
        return self.tokenizer == MODEL_TOKENIZER


MODEL_TOKENIZER = "local"


@dataclass(frozen=True)
class DatasetFigures:
    """What "auto" is resolved from: the training set's size and its examples' mean length."""

    train_examples: int
    mean_example_tokens: float

    @classmethod
    def counted(cls, train_examples: int, total_tokens: int, valid_examples: int) -> DatasetFigures:
        """From a validation's counts: tokens over every valid example, however split."""
        mean = total_tokens / valid_examples if valid_examples else 0.0
        return cls(train_examples=train_examples, mean_example_tokens=mean)


@dataclass(frozen=True)
class Readiness:
    """Whether a provider can train (or serve) a base model here, and what to do if not."""

    ready: bool
    detail: str


@dataclass(frozen=True)
class ServableFiles:
    """Where a model's weights lie on this machine: a base model directory, and the LoRA
    adapter directory of a fine-tune (None for the base model itself)."""

    base_path: Path
    adapter_path: Path | None = None


class FineTuningProvider(Protocol):
    name: str
    methods: frozenset[str]
    """The training methods it offers (``TRAINING_METHODS``); each may start from a base
    model or from one of this provider's fine-tunes."""
    runs_in_worker: bool
    can_pause: bool
    """``pause`` stops a job where a later ``create_job`` of the same key continues it."""
    serves_models_here: bool
    """Its models run on this machine: the inference engine serves them, and they cost no
    per-token fee. A hosted provider's models are called through the provider itself."""

    def list_base_models(self) -> list[BaseModelInfo]: ...

    def readiness(self, model: BaseModelInfo) -> Readiness:
        """Whether ``model`` (one of this provider's) can be fine-tuned here right now."""

    def servable_files(self, model_reference: str, base_model: str) -> ServableFiles | None:
        """The files that serve a fine-tune of this provider (``model_reference`` is the
        provider's name for it), or None when its models are not served here."""

    def ensure_configured(self) -> None:
        """Raise ``tuneforge.errors.InvalidInput`` when the provider cannot take jobs here."""

    def check_hyperparameters(
        self, requested: dict[str, Any], *, method: str = "supervised"
    ) -> None:
        """Raise ``InvalidInput`` naming the field of a hyperparameter this provider refuses
        for a job of ``method``."""

    def resolve_hyperparameters(
        self, requested: dict[str, Any], figures: DatasetFigures, *, method: str = "supervised"
    ) -> ResolvedHyperparameters:
        """The epochs, batch size and learning-rate multiplier (and DPO's beta) "auto"
        becomes here for a job of ``method``."""

    def upload_training_file(self, path: Path, *, idempotency_key: str) -> str: ...

    def create_job(self, request: ProviderJobRequest) -> str: ...

    def find_job(self, idempotency_key: str) -> str | None:
        """The provider job already created for this key, so a retried create makes no duplicate."""

    def get_status(self, provider_job_id: str) -> ProviderJobStatus: ...

    def list_events(self, provider_job_id: str, *, after: str | None) -> list[ProviderEvent]:
        """Events newer than ``after`` (a provider event id), oldest first."""

    def list_checkpoints(self, provider_job_id: str) -> list[ProviderCheckpoint]: ...

    def cancel(self, provider_job_id: str) -> None: ...

    def pause(self, provider_job_id: str) -> None:
        """Checkpoint the job and stop training; ``get_status`` says PAUSED once it stopped.
        Asking again while it stops is harmless."""

    def abandon(self, provider_job_id: str) -> None:
        """Stop what this worker process runs for the job without cancelling it.

        Called when another worker took the job's lease over, or when this worker stops
        mid-run and hands the job back: the worker that has the job next carries on.
        """


# Hyperparameters. A job stores the values as requested ("auto" included), because that is
# what the provider is sent: OpenAI resolves "auto" itself. The API also shows them resolved
# with OpenAI's published rules so a user sees the numbers training will use before it
# starts: epochs by the cookbook heuristic the dataset report uses, batch size as ~0.2% of
# the training examples capped at 256, and a learning-rate multiplier of 1 (no scaling).

# OpenAI's default-epochs heuristic, from the cookbook.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def default_epochs(train_examples: int) -> int | None:
    """OpenAI's default epoch count for a training set of this size; None when it is empty."""
    if train_examples <= 0:
        return None
    if train_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // train_examples)
    if train_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // train_examples)
    return TARGET_EPOCHS


AUTO = "auto"
AUTO_BATCH_FRACTION = 0.002
MAX_BATCH_SIZE = 256
AUTO_LEARNING_RATE_MULTIPLIER = 1.0

Auto = Literal["auto"]
EpochCount = Auto | Annotated[int, Field(strict=True, ge=1, le=50)]
BatchSize = Auto | Annotated[int, Field(strict=True, ge=1, le=MAX_BATCH_SIZE)]
LearningRateMultiplier = Auto | Annotated[float, Field(strict=True, gt=0, le=10)]


class Hyperparameters(BaseModel):
    """Requested values; each is a number in range or "auto"."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: EpochCount = Field(default=AUTO, description='1 to 50, or "auto".')
    batch_size: BatchSize = Field(default=AUTO, description='1 to 256, or "auto".')
    learning_rate_multiplier: LearningRateMultiplier = Field(
        default=AUTO, description='Above 0 up to 10, or "auto".'
    )


class RequestedHyperparameters(Hyperparameters):
    """The shared knobs, plus any a provider adds (the job's provider checks those)."""

    model_config = ConfigDict(extra="allow")


# Training methods, as OpenAI names them in a job's ``method.type``.
SUPERVISED = "supervised"
DPO = "dpo"
TRAINING_METHODS = (SUPERVISED, DPO)
TrainingMethod = Literal["supervised", "dpo"]
AUTO_BETA = 0.1  # DPO's usual strength of the pull towards the reference (TRL's default)
Beta = Auto | Annotated[float, Field(strict=True, gt=0, le=10)]


class DpoHyperparameters(Hyperparameters):
    """The shared knobs and DPO's own: ``beta``."""

    beta: Beta = Field(
        default=AUTO,
        description='Above 0 up to 10, or "auto" (0.1): how far the model may move from its '
        "reference; higher keeps it closer.",
    )


class RequestedDpoHyperparameters(DpoHyperparameters):
    """DPO's knobs, plus any a provider adds (the job's provider checks those)."""

    model_config = ConfigDict(extra="allow")


def require_shared_only(provider: str, requested: dict[str, Any]) -> None:
    """For providers that take only the shared knobs (and DPO's beta): name the first one
    they do not take."""
    extra = sorted(set(requested) - set(DpoHyperparameters.model_fields))
    if extra:
        raise InvalidInput(
            f"hyperparameters.{extra[0]}: the {provider} provider does not take it; it takes "
            f"{', '.join(DpoHyperparameters.model_fields)}",
            field=f"hyperparameters.{extra[0]}",
        )


class ResolvedHyperparameters(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    beta: float | None = Field(
        default=None, description="DPO jobs only.", exclude_if=lambda value: value is None
    )


def resolve_beta(requested: dict[str, Any], method: str) -> float | None:
    """DPO's beta as requested, "auto" resolved; None for other methods."""
    if method != DPO:
        return None
    beta = requested.get("beta", AUTO)
    return float(beta) if isinstance(beta, int | float) else AUTO_BETA


def shared_hyperparameters(stored: dict[str, Any]) -> Hyperparameters:
    """The shared values of a job's stored hyperparameters, ignoring provider-specific extras."""
    return Hyperparameters.model_validate(
        {name: value for name, value in stored.items() if name in Hyperparameters.model_fields}
    )


def resolve_by_openai_rules(
    requested: Hyperparameters, train_examples: int
) -> ResolvedHyperparameters:
    """What OpenAI makes of "auto" (its published rules)."""
    batch_size = requested.batch_size
    if not isinstance(batch_size, int):
        batch_size = max(1, min(MAX_BATCH_SIZE, round(train_examples * AUTO_BATCH_FRACTION)))
    multiplier = requested.learning_rate_multiplier
    if not isinstance(multiplier, float):
        multiplier = AUTO_LEARNING_RATE_MULTIPLIER
    n_epochs = requested.n_epochs
    if not isinstance(n_epochs, int):
        n_epochs = default_epochs(train_examples) or TARGET_EPOCHS
    return ResolvedHyperparameters(
        n_epochs=n_epochs,
        batch_size=batch_size,
        learning_rate_multiplier=multiplier,
    )
