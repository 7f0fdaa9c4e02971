"""Creating, reading and cancelling evaluation runs, and reading their results.

A run row is its own queue entry, like a job: ``create_run`` inserts it queued in the
caller's transaction and a worker claims it with a lease (see ``evals/execution.py``).
Everything a worker would trip over is checked here first: the dataset is the
organization's and has examples in the split, every model resolves to one served here,
and the graders parse. A finished local job queues its own before/after run
(``queue_job_evaluation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.scoping import get_owned
from tuneforge.db.tables.datasets import FineTuningDataset, TrainingExample
from tuneforge.db.tables.evals import ACTIVE_EVAL_STATUSES, EvalResult, EvalRun, EvalStatus
from tuneforge.db.tables.jobs import FineTuningJob
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.errors import Conflict, InvalidInput, NotFound
from tuneforge.evals import repository
from tuneforge.evals.graders import Grader, Similarity, grader_for
from tuneforge.evals.schemas import EvalCreate, EvalModel
from tuneforge.inference.targets import resolve_model
from tuneforge.jobs.service import training_verdict
from tuneforge.providers.chat_format import assistant_text

RUN_LABEL = "Evaluation"
DEFAULT_MAX_EXAMPLES = 200
MAX_REPLY_TOKENS = 1_024
REPLY_SLACK_TOKENS = 16
GRADERS = TypeAdapter(list[Grader])


def prompt_and_expected(example: TrainingExample) -> tuple[list[dict[str, Any]], str]:
    """The conversation up to its last assistant turn, and that turn as the model would
    write it (its text, and its tool calls in the trained format). A preference pair's
    prompt is all of its messages, and its preferred reply is the one expected."""
    messages = list(example.messages or [])
    if example.preferred_output:
        return messages, assistant_text(example.preferred_output[0])
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "assistant":
            return messages[:index], assistant_text(messages[index])
    return messages, ""


def create_run(
    session: Session,
    settings: Settings,
    organization_id: str,
    user_id: str | None,
    request: EvalCreate,
) -> EvalRun:
    dataset = get_owned(
        session, FineTuningDataset, request.dataset_id, organization_id, label="Dataset"
    )
    examples = repository.examples_for(session, dataset.id, request.split, request.max_examples)
    if not examples:
        raise InvalidInput(
            f"split: dataset {dataset.id} has no valid {request.split} examples to evaluate",
            field="split",
        )
    models = []
    for index, model in enumerate(request.models):
        try:
            models.append(_contestant(session, settings, organization_id, model))
        except (InvalidInput, NotFound) as exc:
            field = f"models.{index}.reference"
            raise InvalidInput(f"{field}: {exc.detail}", field=field) from exc
    if len({m["label"] for m in models}) != len(models):
        raise InvalidInput("models: each model needs its own label", field="models")
    run = EvalRun(
        organization_id=organization_id,
        created_by=user_id,
        name=request.name,
        dataset_id=dataset.id,
        split=request.split,
        max_examples=request.max_examples,
        max_tokens=request.max_tokens,
        models=models,
        graders=GRADERS.dump_python(request.graders or _graders_for(examples), mode="json"),
        examples_total=len(examples),
        run_after=utcnow(),
    )
    session.add(run)
    session.flush()
    return run


def _contestant(
    session: Session, settings: Settings, organization_id: str, model: EvalModel
) -> dict[str, str]:
    target = resolve_model(session, settings, organization_id, model.reference)
    label = model.label or (
        model.reference if target.fine_tuned_model_id is None else target.source.label
    )
    return {"reference": target.public_id, "label": label}


def _graders_for(examples: list[TrainingExample]) -> list[Grader]:
    return [grader_for([prompt_and_expected(e)[1] for e in examples])]


def queue_job_evaluation(
    session: Session, settings: Settings, job: FineTuningJob, model: FineTunedModel
) -> EvalRun:
    """The before/after of a finished job: its base model against its fine-tune, greedy, on
    the data the run was judged on (its validation data, else the slice its trainer held
    out), with the grader the expected replies call for.

    Raises InvalidInput, saying why, when the job has nothing held out to evaluate on or
    its models are not served here.
    """
    dataset_id, split, lines = _held_out_data(session, job)
    examples = repository.examples_for(session, dataset_id, split, DEFAULT_MAX_EXAMPLES, lines)
    if not examples:
        raise InvalidInput("the job has no held-out examples to evaluate on")
    models = [
        _contestant(session, settings, job.organization_id, EvalModel(reference=reference))
        for reference in (job.base_model, model.id)
    ]
    expected = [prompt_and_expected(e)[1] for e in examples]
    run = EvalRun(
        organization_id=job.organization_id,
        created_by=job.created_by,
        name=f"Before/after of job {job.id}",
        dataset_id=dataset_id,
        split=split,
        example_lines=lines,
        job_id=job.id,
        max_examples=DEFAULT_MAX_EXAMPLES,
        max_tokens=reply_budget(expected),
        models=models,
        graders=GRADERS.dump_python(_graders_for(examples), mode="json"),
        examples_total=len(examples),
        run_after=utcnow(),
    )
    session.add(run)
    session.flush()
    return run


def _held_out_data(session: Session, job: FineTuningJob) -> tuple[str, str, list[int] | None]:
    """(dataset, split, lines) of what the job was judged on, as its files were exported."""
    if job.validation_dataset_id is not None:
        return job.validation_dataset_id, "all", None
    positions = training_verdict(session, job).held_out_positions
    if not positions:
        return job.dataset_id, "validation", None
    file_lines = repository.training_file_lines(session, job.dataset_id)
    return job.dataset_id, "train", [file_lines[p] for p in positions if p < len(file_lines)]


def reply_budget(expected_replies: list[str]) -> int:
    """Tokens to let each model generate: room for the longest expected reply (a token is
    rarely under two characters) and some slack, so a base model that rambles costs little."""
    longest = max((len(reply) for reply in expected_replies), default=0)
    return min(MAX_REPLY_TOKENS, longest // 2 + REPLY_SLACK_TOKENS)


def get_run(session: Session, organization_id: str, run_id: str) -> EvalRun:
    return get_owned(session, EvalRun, run_id, organization_id, label=RUN_LABEL)


def list_runs(
    session: Session, organization_id: str, *, limit: int, offset: int, job_id: str | None = None
) -> tuple[list[EvalRun], int]:
    return repository.list_runs(session, organization_id, limit=limit, offset=offset, job_id=job_id)


def job_evaluation(session: Session, organization_id: str, job_id: str) -> EvalRun | None:
    """The latest before/after evaluation a job queued for itself."""
    runs, _ = repository.list_runs(session, organization_id, limit=1, offset=0, job_id=job_id)
    return runs[0] if runs else None


def cancel_run(session: Session, organization_id: str, run_id: str) -> EvalRun:
    """A queued run is cancelled at once; a running one at its worker's next batch."""
    run = get_owned(session, EvalRun, run_id, organization_id, label=RUN_LABEL, for_update=True)
    if run.status not in ACTIVE_EVAL_STATUSES:
        raise Conflict(
            f"Evaluation {run.id} is already {run.status.value}", status=run.status.value
        )
    if run.status == EvalStatus.QUEUED and run.lease_owner is None:
        repository.finish(session, run, EvalStatus.CANCELLED, at=utcnow())
    else:
        run.cancel_requested = True
        session.flush()
    return run


def list_results(
    session: Session,
    organization_id: str,
    run_id: str,
    *,
    regressions_only: bool,
    limit: int,
    offset: int,
) -> tuple[list[EvalResult], int]:
    run = get_run(session, organization_id, run_id)
    return repository.list_results(
        session, run.id, regressions_only=regressions_only, limit=limit, offset=offset
    )


@dataclass(frozen=True)
class BeforeAfter:
    """A job's before/after in one line, from real generations: the base model's score on
    the held-out examples and the fine-tune's."""

    measure: str  # e.g. "JSON match"
    before: float
    after: float
    examples: int

    def __str__(self) -> str:
        return f"held-out {self.measure} {self.before:.0%} → {self.after:.0%}"


def before_after(run: EvalRun) -> BeforeAfter | None:
    """Pass rates of a finished two-model run (mean scores when graded by similarity, where
    a pass is only a threshold)."""
    if run.status != EvalStatus.SUCCEEDED or not run.summary or len(run.summary) < 2:
        return None
    graders = GRADERS.validate_python(run.graders)
    by_mean = all(isinstance(grader, Similarity) for grader in graders)
    key = "mean_score" if by_mean else "pass_rate"
    measure = " + ".join(grader.label for grader in graders)
    base, tuned = run.summary[0], run.summary[1]
    return BeforeAfter(measure, base[key], tuned[key], run.examples_total)
