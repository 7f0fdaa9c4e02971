"""Request and response shapes for datasets, their examples and conversation imports."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from tuneforge.agents.schemas import Rating, TagList
from tuneforge.bounds import UTCDatetime
from tuneforge.db.tables.datasets import (
    DatasetFormat,
    DatasetKind,
    DatasetStatus,
    ExampleSplit,
    FineTuningDataset,
)
from tuneforge.errors import InvalidInput
from tuneforge.providers.catalog import DEFAULT_VALIDATION_MODEL

ValidationFraction = Annotated[
    float,
    Field(ge=0.0, le=0.5, description="Share of examples held out for validation, 0 to 0.5."),
]
SplitSeed = Annotated[int, Field(ge=0, le=2**31 - 1, description="Seed of the stable split.")]


def _no_nul(value: str) -> str:
    # PostgreSQL text columns cannot hold NUL; refuse it here rather than fail on insert.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


ModelName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
DatasetName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
Description = Annotated[str, Field(max_length=10_000), AfterValidator(_no_nul)]


class DatasetUploadForm(BaseModel):
    """The text fields sent beside the file in the multipart upload."""

    model_config = ConfigDict(extra="forbid")

    name: DatasetName
    description: Description | None = None
    model: ModelName = Field(
        default=DEFAULT_VALIDATION_MODEL, description="Base model to validate against."
    )
    validation_fraction: ValidationFraction = 0.0
    split_seed: SplitSeed = 0

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> DatasetUploadForm:
        """Validate form fields, reporting the first bad one as a 422 naming it."""
        try:
            return cls.model_validate({k: v for k, v in fields.items() if v != ""})
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(part) for part in first["loc"]) or "body"
            raise InvalidInput(f"{name}: {first['msg']}", field=name) from exc

    @classmethod
    def openapi_body(cls) -> dict[str, Any]:
        """The multipart request body for the OpenAPI document (the endpoint parses it itself)."""
        schema = cls.model_json_schema()
        schema["properties"] = {
            "file": {"type": "string", "format": "binary", "description": ".jsonl or .csv"},
            **schema["properties"],
        }
        schema["required"] = ["file", *schema.get("required", [])]
        schema.pop("additionalProperties", None)
        return {
            "requestBody": {
                "required": True,
                "content": {"multipart/form-data": {"schema": schema}},
            }
        }


class DatasetSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str | None
    format: DatasetFormat
    kind: DatasetKind = Field(
        description="'chat' (OpenAI's chat format) or 'preference' (its DPO format), from "
        "the examples' own shape."
    )
    status: DatasetStatus
    original_filename: str | None
    file_size_bytes: int
    sha256: str | None
    target_model: str | None
    total_examples: int
    valid_examples: int
    total_tokens: int
    validation_fraction: float
    split_seed: int
    train_examples: int
    validation_examples: int
    validated_at: datetime | None
    created_at: datetime
    updated_at: datetime


class DatasetOut(DatasetSummary):
    validation_report: dict[str, Any] | None = Field(
        description="The last validation report; stale while status is 'uploaded'."
    )


class DatasetPage(BaseModel):
    items: list[DatasetSummary]
    total: int
    limit: int
    offset: int


class DatasetUpdate(BaseModel):
    """Only the fields sent change; ``description`` may be cleared with null."""

    model_config = ConfigDict(extra="forbid")

    name: DatasetName | None = None
    description: Description | None = None

    @model_validator(mode="after")
    def reject_null_name(self) -> DatasetUpdate:
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name may not be null")
        return self


class ValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName | None = Field(
        default=None, description="Base model to validate against; defaults to the last one."
    )


class SplitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    validation_fraction: ValidationFraction
    seed: SplitSeed = 0


# Report sections the statistics endpoint passes through as its distributions summary.
_DISTRIBUTION_KEYS = (
    "messages_per_example",
    "tokens_per_example",
    "assistant_tokens_per_example",
    "over_context_limit",
    "exact_duplicates",
    "near_duplicates",
    "train_validation_overlap",
    "error_counts",
    "warning_counts",
)


class DatasetStatistics(BaseModel):
    """Sizes and estimates for planning a job; distributions come from the last report."""

    dataset_id: str
    status: DatasetStatus
    target_model: str | None
    total_examples: int
    valid_examples: int
    invalid_examples: int
    total_tokens: int
    train_examples: int
    validation_examples: int
    report_is_stale: bool = Field(
        description="True after an edit: the distributions and estimates predate it."
    )
    distributions: dict[str, Any] | None
    estimated_epochs: int | None
    billed_tokens_per_epoch: int | None
    estimated_billed_tokens: int | None
    price_per_million_tokens: float | None
    estimated_cost_usd: float | None

    @classmethod
    def from_dataset(cls, dataset: FineTuningDataset) -> DatasetStatistics:
        report = dataset.validation_report or {}
        return cls(
            dataset_id=dataset.id,
            status=dataset.status,
            target_model=dataset.target_model,
            total_examples=dataset.total_examples,
            valid_examples=dataset.valid_examples,
            invalid_examples=dataset.total_examples - dataset.valid_examples,
            total_tokens=dataset.total_tokens,
            train_examples=dataset.train_examples,
            validation_examples=dataset.validation_examples,
            report_is_stale=dataset.status is DatasetStatus.UPLOADED,
            distributions={k: report[k] for k in _DISTRIBUTION_KEYS if k in report} or None,
            estimated_epochs=report.get("n_epochs"),
            billed_tokens_per_epoch=report.get("billed_tokens_per_epoch"),
            estimated_billed_tokens=report.get("total_billed_tokens"),
            price_per_million_tokens=report.get("price_per_million_tokens"),
            estimated_cost_usd=report.get("estimated_cost_usd"),
        )


class ExampleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    line_number: int
    messages: Any = Field(
        description="As uploaded (a preference pair's input.messages); null when the line "
        "could not be read."
    )
    tools: Any
    preferred_output: Any = Field(description="A preference pair's preferred reply; else null.")
    non_preferred_output: Any = Field(description="A preference pair's other reply; else null.")
    raw_line: str | None = Field(description="The original text of an unreadable line.")
    is_valid: bool
    errors: list[dict[str, Any]] | None = Field(
        description="Problems found by validation; entries with severity 'warning' do not "
        "make the example invalid."
    )
    token_count: int
    assistant_token_count: int
    split: ExampleSplit
    source_conversation_id: str | None
    created_at: datetime
    updated_at: datetime


class ExamplePage(BaseModel):
    items: list[ExampleOut]
    total: int
    limit: int
    offset: int


class ExampleUpdate(BaseModel):
    """Replace an example's messages, tools or (a preference pair's) replies; fields not sent
    stay as they are."""

    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]] | None = Field(
        default=None,
        min_length=1,
        max_length=10_000,
        description="OpenAI chat messages; an assistant message may carry `weight` 0 or 1.",
    )
    tools: list[dict[str, Any]] | None = Field(default=None, description="null removes them.")
    preferred_output: list[dict[str, Any]] | None = Field(
        default=None, max_length=1, description="Preference pairs: the preferred reply."
    )
    non_preferred_output: list[dict[str, Any]] | None = Field(
        default=None, max_length=1, description="Preference pairs: the other reply."
    )

    @model_validator(mode="after")
    def something_to_change(self) -> ExampleUpdate:
        if not self.model_fields_set:
            raise ValueError("send messages, tools, preferred_output or non_preferred_output")
        for name in ("messages", "preferred_output", "non_preferred_output"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self


LOW_RATING = 2  # ratings run 1 to 5; a preference import reads 1 and 2 unless told


class ImportFilter(BaseModel):
    """Which logged conversations to import; empty fields filter nothing."""

    model_config = ConfigDict(extra="forbid")

    agent_ids: list[str] | None = Field(default=None, max_length=1000)
    started_from: UTCDatetime | None = Field(
        default=None,
        validation_alias=AliasChoices("from", "started_from"),
        description="Earliest started_at, inclusive (also accepted as `from`).",
    )
    started_to: UTCDatetime | None = Field(
        default=None,
        validation_alias=AliasChoices("to", "started_to"),
        description="Latest started_at, exclusive (also accepted as `to`).",
    )
    min_rating: Rating | None = None
    max_rating: Rating | None = Field(
        default=None,
        description=f"Highest rating to read; preference imports default to {LOW_RATING}.",
    )
    tags: TagList | None = Field(default=None, description="Conversations with any of them.")
    kind: DatasetKind = Field(
        default=DatasetKind.CHAT,
        description="'chat' imports each conversation as a chat example; 'preference' turns "
        "each corrected assistant reply of a low-rated conversation into a preference pair "
        "(the correction preferred over the logged reply).",
    )

    @property
    def rating_ceiling(self) -> int | None:
        """The highest rating read: a preference import reads low ratings unless told."""
        if self.max_rating is None and self.kind is DatasetKind.PREFERENCE:
            return LOW_RATING
        return self.max_rating


class ImportRequest(ImportFilter):
    """Import into ``dataset_id`` (appending) or into a new dataset called ``name``."""

    include_system_prompt: bool = Field(
        default=True,
        description="Use the agent's system prompt when a conversation has no system message.",
    )
    assistant_turns: Literal["all", "last"] = Field(
        default="all",
        description="'last' trains only on each conversation's final assistant reply.",
    )
    dataset_id: str | None = None
    name: DatasetName | None = None
    description: Description | None = None
    model: ModelName | None = Field(
        default=None,
        description="Base model to validate against (new datasets default to "
        f"{DEFAULT_VALIDATION_MODEL}, existing ones keep theirs).",
    )
    validation_fraction: ValidationFraction | None = Field(
        default=None, description="New datasets only; an existing one keeps its split."
    )
    split_seed: SplitSeed | None = Field(default=None, description="New datasets only.")

    @model_validator(mode="after")
    def one_target(self) -> ImportRequest:
        if (self.dataset_id is None) == (self.name is None):
            raise ValueError("give exactly one of dataset_id (append) or name (new dataset)")
        if self.dataset_id is not None and (
            self.validation_fraction is not None or self.split_seed is not None
        ):
            raise ValueError(
                "validation_fraction and split_seed apply to new datasets; "
                "change an existing dataset's split with POST /fine-tuning/datasets/{id}/split"
            )
        return self


class ImportPreview(BaseModel):
    conversations: int = Field(description="Conversations an import with these filters reads.")
