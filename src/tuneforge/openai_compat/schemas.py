"""OpenAI's ``file`` and ``fine_tuning.job`` objects, field for field as the ``openai`` SDK
types them (``openai/types/file_object.py``, ``openai/types/fine_tuning/*.py``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from tuneforge.jobs.schemas import DpoSettings, Metadata, ModelName, ObjectId, Suffix
from tuneforge.providers.contract import RequestedHyperparameters

FILE_PURPOSE = "fine-tune"
RESULTS_PURPOSE = "fine-tune-results"
FileId = Annotated[str, StringConstraints(min_length=1, max_length=64)]

JobStatusName = Literal[
    "validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"
]


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["fine-tune", "fine-tune-results"] = FILE_PURPOSE
    status: Literal["uploaded", "processed", "error"]
    expires_at: int | None = None
    status_details: str | None = Field(
        default=None, description="Why validation failed: the report's first errors by line."
    )


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool
    first_id: str | None
    last_id: str | None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class SupervisedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: RequestedHyperparameters = Field(default_factory=RequestedHyperparameters)


class MethodRequest(BaseModel):
    """``{type, supervised | dpo: {hyperparameters}}``; reinforcement is named so that asking
    for it is a clear refusal rather than a validation error."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedSettings | None = None
    dpo: DpoSettings | None = None
    reinforcement: dict[str, Any] | None = None

    @model_validator(mode="after")
    def settings_of_its_type(self) -> MethodRequest:
        for other in ("supervised", "dpo", "reinforcement"):
            if other != self.type and getattr(self, other) is not None:
                raise ValueError(f"{other} settings given for a {self.type} method")
        return self


class FineTuningJobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName = Field(
        description="A local base model, e.g. smollm2-135m-instruct, or a fine-tuned model to "
        "train on top of (for DPO after a supervised step)."
    )
    training_file: ObjectId = Field(description="A file uploaded with purpose fine-tune.")
    validation_file: ObjectId | None = None
    hyperparameters: RequestedHyperparameters | None = Field(
        default=None, description="Deprecated by OpenAI in favour of method; still accepted."
    )
    method: MethodRequest | None = None
    suffix: Suffix | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    metadata: Metadata | None = None
    integrations: list[dict[str, Any]] | None = Field(
        default=None, max_length=0, description="Not supported: must be empty or absent."
    )


class JobErrorObject(BaseModel):
    code: str
    message: str
    param: str | None = None


class HyperparametersObject(BaseModel):
    batch_size: Literal["auto"] | int | None = None
    learning_rate_multiplier: Literal["auto"] | float | None = None
    n_epochs: Literal["auto"] | int | None = None


class SupervisedObject(BaseModel):
    hyperparameters: HyperparametersObject


class DpoHyperparametersObject(HyperparametersObject):
    beta: Literal["auto"] | float | None = None


class DpoObject(BaseModel):
    hyperparameters: DpoHyperparametersObject


class MethodObject(BaseModel):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedObject | None = None
    dpo: DpoObject | None = None


class FineTuningJobObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobErrorObject | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: HyperparametersObject
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: JobStatusName
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None
    method: MethodObject


class FineTuningJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobObject]
    has_more: bool


class JobEventObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None = None


class JobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEventObject]
    has_more: bool


class CheckpointMetrics(BaseModel):
    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class CheckpointObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CheckpointObject]
    has_more: bool
    first_id: str | None
    last_id: str | None
