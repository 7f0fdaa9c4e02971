"""The evaluations API's request and response shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.db.tables.evals import EvalResult, EvalRun, EvalStatus
from tuneforge.evals.graders import Grader

MAX_MODELS = 8
MAX_GRADERS = 8
MAX_EXAMPLES = 2_000


class EvalModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference: str = Field(
        min_length=1,
        max_length=300,
        description="A fine-tuned model's id or name, or a base model's name.",
    )
    label: str | None = Field(default=None, max_length=100, description="Shown in results.")


class ContestantOut(BaseModel):
    reference: str = Field(description="The model's id, or the base model's name.")
    label: str


class EvalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(min_length=1, max_length=32)
    split: Literal["validation", "train", "all"] = Field(
        default="validation", description="Which of the dataset's valid examples to run."
    )
    models: list[EvalModel] = Field(
        min_length=1,
        max_length=MAX_MODELS,
        description="The first is the baseline the others are compared with.",
    )
    graders: list[Grader] | None = Field(
        default=None,
        max_length=MAX_GRADERS,
        description="Default: the grader the expected replies call for (JSON match, exact "
        "match for short labels, similarity otherwise).",
    )
    max_examples: int = Field(default=200, ge=1, le=MAX_EXAMPLES)
    max_tokens: int = Field(default=256, ge=1, le=2_048, description="Per reply; greedy.")
    name: str | None = Field(default=None, max_length=200)


class ModelSummary(BaseModel):
    model: str
    reference: str
    mean_score: float
    pass_rate: float
    wins: int = Field(description="Examples where it scored above the baseline.")
    ties: int
    losses: int


class EvalOut(BaseModel):
    id: str
    name: str | None
    status: EvalStatus
    dataset_id: str
    split: str
    job_id: str | None = Field(
        description="The job whose before/after this is, when a finished job queued it."
    )
    models: list[ContestantOut]
    graders: list[Grader]
    max_examples: int
    max_tokens: int
    examples_total: int
    examples_done: int
    summary: list[ModelSummary] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, run: EvalRun) -> EvalOut:
        return cls(
            id=run.id,
            name=run.name,
            status=run.status,
            dataset_id=run.dataset_id,
            split=run.split,
            job_id=run.job_id,
            models=[ContestantOut.model_validate(m) for m in run.models],
            graders=run.graders,  # type: ignore[arg-type]
            max_examples=run.max_examples,
            max_tokens=run.max_tokens,
            examples_total=run.examples_total,
            examples_done=run.examples_done,
            summary=[ModelSummary.model_validate(s) for s in run.summary or []] or None,
            error=run.error_message,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
        )


class EvalPage(BaseModel):
    items: list[EvalOut]
    total: int


class GradeOut(BaseModel):
    grader: str
    score: float
    passed: bool
    detail: str | None = None


class ReplyOut(BaseModel):
    model: str
    text: str
    score: float
    grades: list[GradeOut]


class ResultOut(BaseModel):
    position: int
    line_number: int | None
    messages: list[dict[str, object]]
    expected: str
    replies: list[ReplyOut]
    regression: bool

    @classmethod
    def from_row(cls, row: EvalResult) -> ResultOut:
        return cls(
            position=row.position,
            line_number=row.line_number,
            messages=row.messages,
            expected=row.expected,
            replies=[ReplyOut.model_validate(reply) for reply in row.replies],
            regression=row.regression,
        )


class ResultPage(BaseModel):
    items: list[ResultOut]
    total: int
