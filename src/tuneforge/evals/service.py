"""Creating, reading and cancelling evaluation runs, and reading their results.

A run row is its own queue entry, like a job: ``create_run`` inserts it queued in the
caller's transaction and a worker claims it with a lease (see ``evals/execution.py``).
Everything a worker would trip over is checked here first: the dataset is the
organization's and has examples in the split, every model resolves to one served here,
and the graders parse.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.scoping import get_owned
from tuneforge.db.tables.datasets import FineTuningDataset, TrainingExample
from tuneforge.db.tables.evals import ACTIVE_EVAL_STATUSES, EvalResult, EvalRun, EvalStatus
from tuneforge.errors import Conflict, InvalidInput, NotFound
from tuneforge.evals import repository
from tuneforge.evals.graders import Grader, grader_for
from tuneforge.evals.schemas import EvalCreate
from tuneforge.inference.targets import resolve_model

RUN_LABEL = "Evaluation"
GRADERS = TypeAdapter(list[Grader])


def prompt_and_expected(example: TrainingExample) -> tuple[list[dict[str, Any]], str]:
    """The conversation up to its last assistant turn, and that turn's text."""
    messages = list(example.messages or [])
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "assistant":
            return messages[:index], str(messages[index].get("content") or "")
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
            target = resolve_model(session, settings, organization_id, model.reference)
        except (InvalidInput, NotFound) as exc:
            field = f"models.{index}.reference"
            raise InvalidInput(f"{field}: {exc.detail}", field=field) from exc
        label = model.label or (
            model.reference if target.fine_tuned_model_id is None else target.source.label
        )
        models.append({"reference": target.public_id, "label": label})
    if len({m["label"] for m in models}) != len(models):
        raise InvalidInput("models: each model needs its own label", field="models")
    graders = request.graders or [grader_for([prompt_and_expected(e)[1] for e in examples])]
    run = EvalRun(
        organization_id=organization_id,
        created_by=user_id,
        name=request.name,
        dataset_id=dataset.id,
        split=request.split,
        max_examples=request.max_examples,
        max_tokens=request.max_tokens,
        models=models,
        graders=GRADERS.dump_python(graders, mode="json"),
        examples_total=len(examples),
        run_after=utcnow(),
    )
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, organization_id: str, run_id: str) -> EvalRun:
    return get_owned(session, EvalRun, run_id, organization_id, label=RUN_LABEL)


def list_runs(
    session: Session, organization_id: str, *, limit: int, offset: int
) -> tuple[list[EvalRun], int]:
    return repository.list_runs(session, organization_id, limit=limit, offset=offset)


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
