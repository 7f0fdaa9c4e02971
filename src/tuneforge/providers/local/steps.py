"""What every training objective's optimizer step shares: the run's live objects, a rank's
share of the step's items, and applying the gradients the micro-batches accumulated.

Supervised steps (``trainer.py``) and preference steps (``dpo.py``) differ only in what a
micro-batch computes; both go through ``apply_gradients`` so clipping, skipped
non-finite steps and the schedule behave the same for every job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedTokenizerBase

from tuneforge.providers.local.plan import Plan
from tuneforge.providers.local.runtime import Runtime, cpu_has_native_bf16

if TYPE_CHECKING:
    from tuneforge.providers.local.stacking import AdapterFiles

MAX_GRAD_NORM = 1.0

StopCheck = Callable[[], bool]


class Objective(Protocol):
    """What a run optimises: its data, one optimizer step, and the held-out figures."""

    @property
    def held_out(self) -> int:
        """How many held-out items ``evaluate`` measures (0: no evaluation, no early stop)."""

    def train_step(self, run: TrainingRun, step: int, stop: StopCheck) -> dict[str, float] | None:
        """One optimizer step (0-based) with its metrics, ``tokens`` and ``stop`` votes
        included; None when a stop request interrupted it."""

    def evaluate(self, run: TrainingRun) -> dict[str, float]:
        """Held-out figures, ``valid_loss`` first among them (early stopping watches it)."""


@dataclass
class TrainingRun:
    """The live training objects of one run."""

    runtime: Runtime
    plan: Plan
    tokenizer: PreTrainedTokenizerBase
    model: PeftModel
    loss_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    objective: Objective
    adapter_files: AdapterFiles
    micro_batch_tokens: int
    seed: int

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 mixed precision where the hardware computes in bf16 natively, else fp32.

        The LoRA weights, gradients and optimizer state stay fp32; only the matmuls and
        attention run in bf16, which roughly halves a CPU step on AVX512-BF16/AMX cores.
        """
        device = self.runtime.device.type
        if device == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if device == "cpu" and cpu_has_native_bf16():
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync_unless_last(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        """DDP's ``no_sync`` for every micro-batch but a step's last, so gradients are
        all-reduced once per step."""
        no_sync = getattr(self.loss_model, "no_sync", None)
        return contextlib.nullcontext() if last or no_sync is None else no_sync()

    def seed_step(self, step: int) -> None:
        """Random draws are a function of (seed, step, rank): a resumed run repeats."""
        torch.manual_seed(self.seed * 1_000_003 + step * 1_009 + self.runtime.rank)


def shard_for_rank(lengths: list[int], indices: list[int], world_size: int, rank: int) -> list[int]:
    """Longest first to the least-loaded rank: balanced tokens, at least one item each."""
    loads = [0] * world_size
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for index in sorted(indices, key=lambda i: (-lengths[i], i)):
        target = min(range(world_size), key=lambda r: (len(shards[r]) > 0, loads[r], r))
        shards[target].append(index)
        loads[target] += lengths[index]
    return shards[rank]


def apply_gradients(run: TrainingRun) -> tuple[float, float]:
    """Clip, step (unless the gradients are not finite), advance the schedule, clear.

    Returns the learning rate the step used and the gradient norm before clipping. DDP
    has already averaged the gradients, so every rank takes the same decision.
    """
    learning_rate = run.optimizer.param_groups[0]["lr"]
    grad_norm = torch.nn.utils.clip_grad_norm_(
        [p for p in run.model.parameters() if p.requires_grad], MAX_GRAD_NORM
    )
    if bool(torch.isfinite(grad_norm)):
        run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return learning_rate, float(grad_norm)
