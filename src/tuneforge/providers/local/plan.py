"""A run's schedule: what "auto" becomes, the steps, and which examples each step takes.

Every rank computes the same plan, and a step's examples are a pure function of (seed,
step), so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.providers.contract import SUPERVISED, DatasetFigures
from tuneforge.providers.local.auto import resolve_local
from tuneforge.providers.local.jobdir import LocalHyperparameters
from tuneforge.providers.local.stopping import resolve_patience

BASE_LEARNING_RATE = 2e-4  # LoRA's usual rate; the job's multiplier scales it
AUTO_INTERVALS = 10  # at least this many evaluations and checkpoints per run on auto
EVAL_EVERY_TOKENS = 4096  # on auto, a held-out evaluation about every this many tokens
# ...but at least this many held-out sets' worth of tokens apart: a forward-only pass costs
# about a third of a training step per token, so evaluating stays under ~25% of the run.
EVAL_COST_RATIO = 1.5


@dataclass(frozen=True)
class Plan:
    n_epochs: int
    batch_size: int
    learning_rate: float
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    eval_every: int
    checkpoint_every: int
    max_seq_length: int
    holdout_examples: int
    early_stopping_patience: int
    early_stopping_min_delta: float | None  # None: auto

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def resolve_plan(
    hp: LocalHyperparameters,
    n_examples: int,
    max_seq_length: int,
    world_size: int,
    *,
    mean_example_tokens: float,
    holdout_examples: int,
    valid_tokens: int,
    method: str = SUPERVISED,
) -> Plan:
    """Concrete numbers for "auto" and the schedule; a batch always feeds every process.

    Evaluations on auto follow the tokens trained, not the run's length, so a long run at a
    small batch is judged early and often enough for early stopping to bite; and never
    more often than every ``EVAL_COST_RATIO`` held-out sets' worth of trained tokens, so
    long held-out examples (tool definitions) cannot make evaluating cost more than training.
    """
    resolved = resolve_local(hp, DatasetFigures(n_examples, mean_example_tokens), method)
    batch_size = min(max(resolved.batch_size, world_size), n_examples)
    if batch_size < world_size:
        raise ValueError(f"{n_examples} examples cannot feed {world_size} processes")
    steps_per_epoch = math.ceil(n_examples / batch_size)
    total = steps_per_epoch * resolved.n_epochs
    interval = max(1, math.ceil(total / AUTO_INTERVALS))
    step_tokens = max(1.0, batch_size * mean_example_tokens)
    eval_tokens = max(EVAL_EVERY_TOKENS, EVAL_COST_RATIO * valid_tokens)
    eval_interval = min(interval, max(1, round(eval_tokens / step_tokens)))
    return Plan(
        n_epochs=resolved.n_epochs,
        batch_size=batch_size,
        learning_rate=BASE_LEARNING_RATE * resolved.learning_rate_multiplier,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        warmup_steps=math.ceil(hp.warmup_ratio * total),
        eval_every=hp.eval_every_steps or eval_interval,
        checkpoint_every=hp.checkpoint_every_steps or interval,
        max_seq_length=max_seq_length,
        holdout_examples=holdout_examples,
        early_stopping_patience=resolve_patience(hp.early_stopping_patience, valid_tokens > 0),
        early_stopping_min_delta=(
            hp.early_stopping_min_delta if isinstance(hp.early_stopping_min_delta, float) else None
        ),
    )


def step_indices(plan: Plan, n_examples: int, seed: int, step: int) -> list[int]:
    """The examples of 0-based ``step``: a slice of its epoch's seeded shuffle."""
    epoch, position = divmod(step, plan.steps_per_epoch)
    order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed + epoch))
    start = position * plan.batch_size
    return order[start : start + plan.batch_size].tolist()
