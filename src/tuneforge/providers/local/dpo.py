"""Direct Preference Optimization (Rafailov et al., 2023) in the trainer's own loop.

A preference pair is one prompt with a preferred and a non-preferred reply. Each reply is
encoded like a chat example whose only learned turn is that reply (``data.py``), so a
pair is two sequences whose targets are the reply tokens. The loss, per pair:

    -log sigmoid(beta * ((log p(y+|x) - log ref(y+|x)) - (log p(y-|x) - log ref(y-|x))))

DPO alone widens the margin, and can do it by making both replies less likely: on a model
that learned plain replies, 100% of held-out pairs were won while not one greedy reply
changed (``benchmarks/dpo_quality.py``). So, as Llama 3's preference step and RPO (Pang et
al., 2024) do, the loss adds ``nll_weight`` times the preferred reply's mean per-token
negative log-likelihood, which pulls the preferred reply up, not only the other one down.

The reference is the same weights with the LoRA switched off (peft's
``disable_adapter()``), so no second model is held in memory; a job that starts from a
fine-tune has that fine-tune merged into the weights (``stacking.py``), which makes it the
reference. The reference never changes, so each pair's reference log-probabilities are
computed once, the first time a step or an evaluation needs them, and kept.

Metrics follow TRL's names for the same quantities: the loss, the reward margin (mean
beta-scaled log-ratio difference) and the reward accuracy (share of pairs whose preferred
reply has the higher implicit reward; an exact tie counts half, so an untrained adapter
scores 50%, chance, not 0).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.nn import functional
from transformers import PreTrainedTokenizerBase

from tuneforge.providers.local.data import (
    EncodedExample,
    PackedBatch,
    encode_chat_example,
    pack_examples,
    plan_micro_batches,
)
from tuneforge.providers.local.plan import step_indices
from tuneforge.providers.local.steps import StopCheck, TrainingRun, apply_gradients, shard_for_rank


@dataclass(frozen=True)
class EncodedPair:
    chosen: EncodedExample
    rejected: EncodedExample

    @property
    def length(self) -> int:
        return self.chosen.length + self.rejected.length


@dataclass(frozen=True)
class EncodedPairs:
    pairs: list[EncodedPair]
    truncated: int  # pairs with a sequence cut at max_seq_length (kept if both kept a target)
    dropped: int  # pairs with a reply that had nothing left after truncation


def pair_conversations(line: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A DPO line as two chat examples, each learning only its own reply."""
    source = line["input"]
    prompt = [
        {**message, "weight": 0} if message.get("role") == "assistant" else message
        for message in source["messages"]
    ]
    tools = {"tools": source["tools"]} if source.get("tools") else {}
    chosen = {"messages": [*prompt, *line["preferred_output"]], **tools}
    rejected = {"messages": [*prompt, *line["non_preferred_output"]], **tools}
    return chosen, rejected


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, lines: Sequence[dict[str, Any]], max_seq_length: int
) -> EncodedPairs:
    pairs, truncated, dropped = [], 0, 0
    for line in lines:
        chosen, rejected = (
            encode_chat_example(tokenizer, example, max_seq_length)
            for example in pair_conversations(line)
        )
        truncated += chosen.truncated or rejected.truncated
        if chosen.n_targets == 0 or rejected.n_targets == 0:
            dropped += 1
        else:
            pairs.append(EncodedPair(chosen, rejected))
    return EncodedPairs(pairs, truncated, dropped)


@dataclass(frozen=True)
class DpoTerms:
    losses: torch.Tensor  # per pair: the DPO loss plus the weighted NLL of the preferred reply
    margins: torch.Tensor  # beta-scaled log-ratio of preferred minus non-preferred, per pair
    wins: torch.Tensor  # 1 where the preferred reply has the higher reward, 0.5 on a tie
    nll: torch.Tensor  # per pair: the preferred reply's mean per-token negative log-likelihood


def dpo_terms(
    policy: torch.Tensor,
    reference: torch.Tensor,
    beta: float,
    preferred_tokens: torch.Tensor,
    nll_weight: float = 0.0,
) -> DpoTerms:
    """The sigmoid DPO loss from [pairs, 2] log-probabilities (preferred first), plus
    ``nll_weight`` times the preferred reply's per-token NLL (``preferred_tokens`` long)."""
    rewards = beta * (policy - reference)
    margins = rewards[:, 0] - rewards[:, 1]
    nll = -policy[:, 0] / preferred_tokens
    detached = margins.detach()
    wins = (detached > 0).float() + 0.5 * (detached == 0).float()
    losses = -functional.logsigmoid(margins) + nll_weight * nll
    return DpoTerms(losses, detached, wins, nll.detach())


def _pack_pairs(pairs: Sequence[EncodedPair], row: list[int]) -> PackedBatch:
    """The pairs of ``row`` in one packed sequence: preferred, then non-preferred, per pair."""
    sequences = [sequence for i in row for sequence in (pairs[i].chosen, pairs[i].rejected)]
    return pack_examples(sequences, list(range(len(sequences))))


@dataclass
class PreferenceObjective:
    """DPO over encoded pairs; reference log-probabilities are kept once computed."""

    train: list[EncodedPair]
    valid: list[EncodedPair]
    beta: float
    nll_weight: float
    _train_reference: torch.Tensor = field(init=False)
    _valid_reference: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self._train_reference = torch.full((len(self.train), 2), math.nan)
        self._valid_reference = torch.full((len(self.valid), 2), math.nan)

    @property
    def held_out(self) -> int:
        return len(self.valid)

    def train_step(self, run: TrainingRun, step: int, stop: StopCheck) -> dict[str, float] | None:
        rt, pairs = run.runtime, self.train
        run.seed_step(step)
        indices = step_indices(run.plan, len(pairs), run.seed, step)
        lengths = [pair.length for pair in pairs]
        shard = shard_for_rank(lengths, indices, rt.world_size, rt.rank)
        started = time.perf_counter()
        reference = reference_log_probs(run, pairs, self._train_reference, shard)
        scale = rt.world_size / len(indices)
        totals = torch.zeros(5, device=rt.device)  # loss, margin, wins, NLL sums; stop votes
        micro_batches = plan_micro_batches(lengths, shard, run.micro_batch_tokens)
        for number, row in enumerate(micro_batches):
            with run.sync_unless_last(number == len(micro_batches) - 1):
                with run.autocast():
                    policy = _log_probs(run.loss_model, run, _pack_pairs(pairs, row))
                terms = self._terms(policy, reference, pairs, row, rt.device)
                (terms.losses.sum() * scale).backward()
            totals[0] += terms.losses.detach().sum()
            totals[1] += terms.margins.sum()
            totals[2] += terms.wins.sum()
            totals[3] += terms.nll.sum()
            if not rt.distributed and stop():
                run.optimizer.zero_grad(set_to_none=True)
                return None
        learning_rate, grad_norm = apply_gradients(run)
        totals[4] = float(stop())
        if rt.distributed:
            dist.all_reduce(totals)
        loss_sum, margin_sum, wins, nll_sum, stop_votes = totals.tolist()
        tokens = sum(lengths[i] for i in indices)
        return {
            "train_loss": loss_sum / len(indices),
            "train_reward_margin": margin_sum / len(indices),
            "train_reward_accuracy": wins / len(indices),
            "train_preferred_nll": nll_sum / len(indices),
            "learning_rate": learning_rate,
            "tokens_per_second": tokens / (time.perf_counter() - started),
            "grad_norm": grad_norm,
            "tokens": float(tokens),
            "stop": stop_votes,
        }

    @torch.no_grad()
    def evaluate(self, run: TrainingRun) -> dict[str, float]:
        """DPO loss, reward margin and reward accuracy over the held-out pairs."""
        rt, pairs = run.runtime, self.valid
        mine = list(range(rt.rank, len(pairs), rt.world_size))
        reference = reference_log_probs(run, pairs, self._valid_reference, mine)
        totals = torch.zeros(3, device=rt.device)
        run.model.eval()
        lengths = [pair.length for pair in pairs]
        for row in plan_micro_batches(lengths, mine, run.micro_batch_tokens):
            with run.autocast():
                policy = _log_probs(_unwrapped(run), run, _pack_pairs(pairs, row))
            terms = self._terms(policy, reference, pairs, row, rt.device)
            totals += torch.stack([terms.losses.sum(), terms.margins.sum(), terms.wins.sum()])
        run.model.train()
        if rt.distributed:
            dist.all_reduce(totals)
        loss_sum, margin_sum, wins = totals.tolist()
        count = len(pairs)
        return {
            "valid_loss": loss_sum / count,
            "valid_reward_margin": margin_sum / count,
            "valid_reward_accuracy": wins / count,
        }

    def _terms(
        self,
        policy: torch.Tensor,
        reference: torch.Tensor,
        pairs: Sequence[EncodedPair],
        row: list[int],
        device: torch.device,
    ) -> DpoTerms:
        preferred_tokens = torch.tensor([pairs[i].chosen.n_targets for i in row], device=device)
        return dpo_terms(
            policy.view(-1, 2),
            reference[row].to(device),
            self.beta,
            preferred_tokens,
            self.nll_weight,
        )


@torch.no_grad()
def reference_log_probs(
    run: TrainingRun, pairs: Sequence[EncodedPair], cache: torch.Tensor, indices: list[int]
) -> torch.Tensor:
    """Fill ``cache`` ([pairs, 2]) for ``indices`` with the adapter switched off; returns it."""
    missing = [i for i in indices if math.isnan(float(cache[i, 0]))]
    if not missing:
        return cache
    lengths = [pair.length for pair in pairs]
    was_training = run.model.training
    run.model.eval()
    with run.model.disable_adapter():
        for row in plan_micro_batches(lengths, missing, run.micro_batch_tokens):
            with run.autocast():
                values = _log_probs(_unwrapped(run), run, _pack_pairs(pairs, row))
            cache[row] = values.view(-1, 2).float().cpu()
    run.model.train(was_training)
    return cache


def _unwrapped(run: TrainingRun) -> torch.nn.Module:
    """The log-probability module without DDP: no-grad passes need no gradient sync."""
    return getattr(run.loss_model, "module", run.loss_model)


def _log_probs(module: torch.nn.Module, run: TrainingRun, batch: PackedBatch) -> torch.Tensor:
    device = run.runtime.device
    return module(
        batch.input_ids.to(device),
        batch.position_ids.to(device),
        batch.targets.to(device),
        batch.segment_lengths,
    ).float()
