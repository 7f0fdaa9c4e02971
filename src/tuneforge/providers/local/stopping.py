"""When a run has learned enough: the held-out slice, early stopping and the best step.

A run is judged on held-out examples. Without validation data the trainer holds out a
small deterministic slice of the training set (``holdout``), so every local job has a
valid loss from step 0 on. ``EarlyStopping`` watches that loss:

- the step with the lowest loss is the one the model is made from;
- the run stops once ``patience`` evaluations in a row brought no real improvement: a fall
  of more than ``min_delta`` below the loss of the last real improvement. On auto,
  ``min_delta`` is 0: every new low counts, because held-out loss creeping down by a
  hair is still exact replies being won (docs/decisions.md); the epochs bound the run;
- it warns once when the loss climbs clearly above its best while the training loss
  keeps falling (overfitting).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

MAX_HOLDOUT_EXAMPLES = 200
MIN_TRAIN_EXAMPLES = 8  # below this nothing is held out: every example is needed to learn
AUTO_PATIENCE = 3
# Overfitting: valid loss this far above its best (relative and absolute), train loss lower.
OVERFIT_RATIO = 1.1
OVERFIT_MARGIN = 0.02
TRAIN_SMOOTHING = 0.2


def holdout_indices(n_examples: int, fraction: float, seed: int) -> list[int]:
    """Which training examples to hold out: a seeded sample, the same on every (re)start."""
    count = min(MAX_HOLDOUT_EXAMPLES, math.floor(n_examples * fraction))
    if count < 1 or n_examples - count < MIN_TRAIN_EXAMPLES:
        return []
    order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed + 7919))
    return sorted(order[:count].tolist())


def resolve_patience(requested: int | str, has_holdout: bool) -> int:
    """Evaluations without improvement before stopping; 0 means never stop early."""
    if isinstance(requested, int):
        return requested if has_holdout else 0
    return AUTO_PATIENCE if has_holdout else 0


@dataclass
class Verdict:
    improved: bool
    stop: bool
    overfitting: bool


@dataclass
class EarlyStopping:
    """Tracks held-out loss across evaluations; its state rides in every checkpoint.

    ``min_delta`` None means auto: any new low is an improvement."""

    patience: int
    min_delta: float | None
    initial_loss: float | None = None
    best_loss: float | None = None
    best_step: int | None = None
    best_train_loss: float | None = None
    reference_loss: float | None = None  # the loss of the last real improvement
    train_loss: float | None = None  # smoothed over steps: one step's loss is noisy
    evaluations_without_improvement: int = 0
    warned_overfitting: bool = False

    def track_train_loss(self, loss: float) -> None:
        previous = self.train_loss
        self.train_loss = (
            loss if previous is None else TRAIN_SMOOTHING * loss + (1 - TRAIN_SMOOTHING) * previous
        )

    def threshold(self) -> float:
        """How far below the last real improvement the loss must fall to count."""
        return self.min_delta or 0.0

    def observe(self, step: int, valid_loss: float) -> Verdict:
        if self.initial_loss is None:
            self.initial_loss = valid_loss
        lowest = self.best_loss is None or valid_loss < self.best_loss
        real = self.reference_loss is None or valid_loss < self.reference_loss - self.threshold()
        overfitting = False
        if lowest:
            self.best_loss, self.best_step = valid_loss, step
            self.best_train_loss = self.train_loss
        if real:
            self.reference_loss = valid_loss
            self.evaluations_without_improvement = 0
        else:
            self.evaluations_without_improvement += 1
            overfitting = not self.warned_overfitting and self._overfits(valid_loss)
            self.warned_overfitting |= overfitting
        stop = self.patience > 0 and self.evaluations_without_improvement >= self.patience
        return Verdict(improved=lowest, stop=stop, overfitting=overfitting)

    def _overfits(self, valid_loss: float) -> bool:
        best, train_loss = self.best_loss, self.train_loss
        if best is None or train_loss is None or self.best_train_loss is None:
            return False
        risen = valid_loss > best * OVERFIT_RATIO and valid_loss > best + OVERFIT_MARGIN
        return risen and train_loss < self.best_train_loss

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def restore(
        cls, state: dict[str, Any] | None, *, patience: int, min_delta: float | None
    ) -> EarlyStopping:
        """The tracker as a checkpoint left it, with this run's settings."""
        saved = {**(state or {}), "patience": patience, "min_delta": min_delta}
        return cls(**saved)
