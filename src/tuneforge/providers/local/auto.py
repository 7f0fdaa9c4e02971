"""What "auto" means for a LoRA run on this machine (OpenAI's rules are for OpenAI's trainer).

OpenAI's batch size of ~0.2% of the examples gives batch 1 below 750 examples: packing then
has nothing to pack and every token pays a whole optimizer step. Locally, "auto" aims at a
token budget per optimizer step instead (``STEP_TOKENS``, within one micro-batch: the
step's examples pack into one forward pass), scales the learning rate linearly with the
batch up to LoRA's high end (8e-4 at 8 examples), and sets the epochs so a run makes
``MIN_AUTO_STEPS`` optimizer steps: a small dataset is seen many times, a large one once.
A DPO job's "example" is a pair (both replies and the prompt twice), and its learning rate
is ``DPO_LEARNING_RATE_SCALE`` of the supervised one: the DPO loss moves log-ratios that
start at 0, and at supervised rates the margin overshoots (``benchmarks/dpo_quality.py``).
Early stopping ends a run once held-out loss stops reaching new lows, so the epochs are
an upper bound, not a cost. The figures behind these numbers are in ``docs/decisions.md``
("Auto for local LoRA runs") and ``benchmarks/auto_quality.py``.
"""

from __future__ import annotations

import math

from tuneforge.providers.contract import (
    DPO,
    SUPERVISED,
    DatasetFigures,
    ResolvedHyperparameters,
    resolve_beta,
)
from tuneforge.providers.local.jobdir import LocalHyperparameters

STEP_TOKENS = 768
MAX_AUTO_BATCH = 64
REFERENCE_BATCH = 2  # the batch whose learning rate is LoRA's usual 2e-4 (multiplier 1)
MAX_AUTO_LEARNING_RATE_MULTIPLIER = 4.0
MIN_AUTO_STEPS = 60
MAX_AUTO_EPOCHS = 10
DPO_LEARNING_RATE_SCALE = 0.25


def resolve_local(
    hp: LocalHyperparameters, figures: DatasetFigures, method: str = SUPERVISED
) -> ResolvedHyperparameters:
    """The numbers a local run trains with: each knob as requested, else by the rules above."""
    examples = max(1, figures.train_examples)
    batch_size = hp.batch_size
    if not isinstance(batch_size, int):
        budget = min(STEP_TOKENS, hp.micro_batch_tokens)
        by_tokens = math.floor(budget / max(1.0, figures.mean_example_tokens))
        batch_size = max(1, min(by_tokens, MAX_AUTO_BATCH, examples))
    multiplier = hp.learning_rate_multiplier
    if not isinstance(multiplier, float):
        scaled = batch_size / REFERENCE_BATCH
        multiplier = min(MAX_AUTO_LEARNING_RATE_MULTIPLIER, max(1.0, scaled))
        if method == DPO:
            multiplier *= DPO_LEARNING_RATE_SCALE
        multiplier = round(multiplier, 3)
    n_epochs = hp.n_epochs
    if not isinstance(n_epochs, int):
        steps_per_epoch = math.ceil(examples / batch_size)
        n_epochs = min(MAX_AUTO_EPOCHS, math.ceil(MIN_AUTO_STEPS / steps_per_epoch))
    return ResolvedHyperparameters(
        n_epochs=n_epochs,
        batch_size=batch_size,
        learning_rate_multiplier=multiplier,
        beta=resolve_beta(hp.model_dump(), method),
    )
