"""Request and response shapes for fine-tuning jobs, after OpenAI's ``fine_tuning.job``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from tuneforge.agents.schemas import ProviderName
from tuneforge.db.tables.jobs import (
    FineTuningEvent,
    JobCheckpoint,
    JobMetric,
    JobStatus,
)
from tuneforge.providers.contract import (
    DPO,
    SUPERVISED,
    EpochCount,
    RequestedDpoHyperparameters,
    RequestedHyperparameters,
    ResolvedHyperparameters,
    TrainingMethod,
)

if TYPE_CHECKING:
    from tuneforge.jobs.repository import JobView

MAX_METADATA_PAIRS = 16

MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Field(
        max_length=MAX_METADATA_PAIRS,
        description="Up to 16 string pairs (keys up to 64 characters, values up to 512), "
        "as in OpenAI's API; filter listings with metadata[key]=value.",
    ),
]
Suffix = Annotated[
    str,
    StringConstraints(min_length=1, max_length=40, pattern=r"^[a-z0-9_-]+$"),
    Field(description="Added to the fine-tuned model's name: a-z, 0-9, '-' and '_'."),
]
ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=32)]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class SupervisedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: RequestedHyperparameters = Field(default_factory=RequestedHyperparameters)


class DpoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: RequestedDpoHyperparameters = Field(
        default_factory=RequestedDpoHyperparameters,
        description="n_epochs, batch_size, learning_rate_multiplier and beta, each a number "
        'or "auto"; the local provider also takes its LoRA knobs here.',
    )


class Method(BaseModel):
    """OpenAI's ``method``: ``{type, supervised | dpo: {hyperparameters}}``."""

    model_config = ConfigDict(extra="forbid")

    type: TrainingMethod = Field(
        description="'supervised' trains on chat examples, 'dpo' on preference pairs."
    )
    supervised: SupervisedSettings | None = None
    dpo: DpoSettings | None = None

    @model_validator(mode="after")
    def settings_of_its_type(self) -> Method:
        other = DPO if self.type == SUPERVISED else SUPERVISED
        if getattr(self, other) is not None:
            raise ValueError(f"{other} settings given for a {self.type} method")
        return self


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: ObjectId = Field(
        description="A dataset whose validation passed: chat examples, or preference pairs "
        "for method dpo."
    )
    model: ModelName = Field(
        description="A base model from the catalog, or one of the organization's fine-tuned "
        "models (its id or name) to train on top of; a DPO job's reference is then that model."
    )
    provider: ProviderName | None = Field(
        default=None,
        description="Defaults to the base model's provider in the catalog.",
    )
    hyperparameters: RequestedHyperparameters = Field(
        default_factory=RequestedHyperparameters,
        description="n_epochs, batch_size and learning_rate_multiplier for every provider; "
        "the local provider also takes lora_r, lora_alpha, lora_dropout, target_modules, "
        "max_seq_length, warmup_ratio, eval_every_steps, checkpoint_every_steps, "
        "micro_batch_tokens and num_processes.",
    )
    method: Method | None = Field(
        default=None,
        description="Supervised (the default) or DPO, with the method's hyperparameters; "
        "give hyperparameters here or at the top level, not both.",
    )
    validation_dataset_id: ObjectId | None = Field(
        default=None,
        description="A second valid dataset to validate on; without it the training "
        "dataset's own validation split is used, if it has one.",
    )
    suffix: Suffix | None = None
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    metadata: Metadata | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)


class JobError(BaseModel):
    code: str
    message: str


class MethodSettingsOut(BaseModel):
    hyperparameters: ResolvedHyperparameters


class MethodOut(BaseModel):
    """The job's method as OpenAI shows it, with the hyperparameters training uses."""

    type: TrainingMethod
    supervised: MethodSettingsOut | None = None
    dpo: MethodSettingsOut | None = None

    @classmethod
    def of(cls, method: str, resolved: ResolvedHyperparameters) -> MethodOut:
        settings = MethodSettingsOut(hyperparameters=resolved)
        if method == DPO:
            return cls(type="dpo", dpo=settings)
        return cls(type="supervised", supervised=settings)


class JobOut(BaseModel):
    """A job as the API shows it: its row plus the display-resolved hyperparameters."""

    id: str
    name: str | None
    status: JobStatus
    provider: str
    model: str = Field(description="The base model.")
    parent_model: str | None = Field(
        description="The fine-tuned model the job trains on top of; null for the base model."
    )
    method: MethodOut
    dataset_id: str
    validation_dataset_id: str | None
    hyperparameters: ResolvedHyperparameters = Field(
        description='The values training uses, with every "auto" resolved by OpenAI\'s rules.'
    )
    requested_hyperparameters: dict[str, Any] = Field(
        description='The values as requested ("auto" kept), provider-specific ones included.'
    )
    suffix: str | None
    seed: int | None
    metadata: dict[str, str] | None
    provider_job_id: str | None
    fine_tuned_model: str | None = Field(description="The provider's name for the new model.")
    fine_tuned_model_id: str | None = Field(description="TuneForge's model, once created.")
    progress_percentage: float
    trained_tokens: int | None
    estimated_finish: datetime | None
    latest_metrics: dict[str, float] | None
    error: JobError | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_view(cls, job: JobView, resolved: ResolvedHyperparameters) -> JobOut:
        error = (
            JobError(code=job.error_code or "error", message=job.error_message or "")
            if job.error_code or job.error_message
            else None
        )
        return cls(
            id=job.id,
            name=job.name,
            status=job.status,
            provider=job.provider,
            model=job.base_model,
            parent_model=job.parent_model,
            method=MethodOut.of(job.method, resolved),
            dataset_id=job.dataset_id,
            validation_dataset_id=job.validation_dataset_id,
            hyperparameters=resolved,
            requested_hyperparameters=dict(job.hyperparameters or {}),
            suffix=job.suffix,
            seed=job.seed,
            metadata=job.job_metadata,
            provider_job_id=job.provider_job_id,
            fine_tuned_model=job.fine_tuned_model_name,
            fine_tuned_model_id=job.model_id,
            progress_percentage=job.progress_percentage,
            trained_tokens=job.trained_tokens,
            estimated_finish=job.estimated_finish,
            latest_metrics=job.latest_metrics,
            error=error,
            created_at=job.created_at,
            updated_at=job.updated_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class EventOut(BaseModel):
    id: int
    created_at: datetime
    level: str
    type: str
    message: str
    data: dict[str, Any] | None

    @classmethod
    def from_row(cls, event: FineTuningEvent) -> EventOut:
        return cls(
            id=event.id,
            created_at=event.created_at,
            level=event.level,
            type=event.event_type,
            message=event.message,
            data=event.data,
        )


class EventPage(BaseModel):
    """Newest first; pass the last id as ``after`` for the next (older) page, as OpenAI does."""

    data: list[EventOut]
    has_more: bool


class MetricPoint(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    step: int
    name: str
    value: float

    @classmethod
    def from_row(cls, metric: JobMetric) -> MetricPoint:
        return cls(step=metric.step, name=metric.name, value=metric.value)


class MetricPage(BaseModel):
    """Flat points ordered by step then name; continue from ``min_step`` when cut off."""

    data: list[MetricPoint]
    has_more: bool


class CheckpointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    step: int
    provider_checkpoint_id: str | None
    model_reference: str | None
    metrics: dict[str, float] | None
    created_at: datetime


class CheckpointList(BaseModel):
    """Newest (highest step) first."""

    data: list[CheckpointOut]

    @classmethod
    def from_rows(cls, rows: list[JobCheckpoint]) -> CheckpointList:
        return cls(data=[CheckpointOut.model_validate(row) for row in rows])


class EstimateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: ObjectId
    model: ModelName = Field(description="A base model, or a fine-tuned model to start from.")
    method: Method | None = None
    hyperparameters: RequestedHyperparameters = Field(
        default_factory=RequestedHyperparameters,
        description="n_epochs, batch_size and learning_rate_multiplier for every provider; "
        "the local provider also takes lora_r, lora_alpha, lora_dropout, target_modules, "
        "max_seq_length, warmup_ratio, eval_every_steps, checkpoint_every_steps, "
        "micro_batch_tokens and num_processes.",
    )


class EstimateOut(BaseModel):
    """What training would bill, from the same figures the dataset's validation report uses."""

    dataset_id: str
    model: str
    provider: str
    n_epochs: int
    requested_n_epochs: EpochCount
    hyperparameters: ResolvedHyperparameters = Field(
        description='What training will use: each requested value, "auto" resolved by the '
        "provider's rules."
    )
    billed_tokens_per_epoch: int
    billed_tokens: int
    price_per_million_tokens: float | None = Field(description="USD; null when unpriced.")
    estimated_cost_usd: float | None
