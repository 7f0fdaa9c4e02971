"""Supervised fine-tuning's objective: next-token cross-entropy on assistant turns.

One optimizer step is ``batch_size`` examples, OpenAI's meaning, whatever the number of
processes: every rank takes a token-balanced share of the step's examples and divides its
summed loss by the step's global target count, so gradients (averaged by DDP) equal those
of one process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tuneforge.providers.local.data import EncodedExample, pack_examples, plan_micro_batches
from tuneforge.providers.local.plan import step_indices
from tuneforge.providers.local.steps import StopCheck, TrainingRun, apply_gradients, shard_for_rank


@dataclass
class SupervisedObjective:
    """Next-token cross-entropy on the assistant turns of chat examples."""

    train: list[EncodedExample]
    valid: list[EncodedExample]

    @property
    def held_out(self) -> int:
        return len(self.valid)

    def train_step(self, run: TrainingRun, step: int, stop: StopCheck) -> dict[str, float] | None:
        """One optimizer step (0-based); None when a stop request interrupted it."""
        rt, examples = run.runtime, self.train
        run.seed_step(step)
        indices = step_indices(run.plan, len(examples), run.seed, step)
        lengths = [e.length for e in examples]
        shard = shard_for_rank(lengths, indices, rt.world_size, rt.rank)
        scale = rt.world_size / sum(examples[i].n_targets for i in indices)
        micro_batches = plan_micro_batches(lengths, shard, run.micro_batch_tokens)
        totals = torch.zeros(3, device=rt.device)  # loss sum, correct tokens, stop votes
        started = time.perf_counter()
        for number, row in enumerate(micro_batches):
            batch = pack_examples(examples, row)
            with run.sync_unless_last(number == len(micro_batches) - 1):
                with run.autocast():
                    loss_sum, correct = run.loss_model(
                        batch.input_ids.to(rt.device),
                        batch.position_ids.to(rt.device),
                        batch.targets.to(rt.device),
                        batch.segment_lengths,
                    )
                (loss_sum * scale).backward()
            totals[0] += loss_sum.detach()
            totals[1] += correct
            if not rt.distributed and stop():
                run.optimizer.zero_grad(set_to_none=True)
                return None
        learning_rate, grad_norm = apply_gradients(run)
        totals[2] = float(stop())
        if rt.distributed:
            dist.all_reduce(totals)
        loss_sum_total, correct_total, stop_votes = totals.tolist()
        n_targets = sum(examples[i].n_targets for i in indices)
        tokens = sum(lengths[i] for i in indices)
        seconds = time.perf_counter() - started
        return {
            "train_loss": loss_sum_total / n_targets,
            "train_mean_token_accuracy": correct_total / n_targets,
            "learning_rate": learning_rate,
            "tokens_per_second": tokens / seconds,
            "grad_norm": grad_norm,
            "tokens": float(tokens),
            "stop": stop_votes,
        }

    @torch.no_grad()
    def evaluate(self, run: TrainingRun) -> dict[str, float]:
        """Mean loss and token accuracy over the validation set, split across ranks."""
        rt, examples = run.runtime, self.valid
        loss_model = getattr(run.loss_model, "module", run.loss_model)
        run.model.eval()
        totals = torch.zeros(3, device=rt.device)
        mine = list(range(rt.rank, len(examples), rt.world_size))
        lengths = [e.length for e in examples]
        for row in plan_micro_batches(lengths, mine, run.micro_batch_tokens):
            batch = pack_examples(examples, row)
            with run.autocast():
                loss_sum, correct = loss_model(
                    batch.input_ids.to(rt.device),
                    batch.position_ids.to(rt.device),
                    batch.targets.to(rt.device),
                    batch.segment_lengths,
                )
            totals[0] += loss_sum.float()
            totals[1] += correct
            totals[2] += batch.n_targets
        if rt.distributed:
            dist.all_reduce(totals)
        run.model.train()
        loss_sum, correct, count = totals.tolist()
        return {"valid_loss": loss_sum / count, "valid_mean_token_accuracy": correct / count}
