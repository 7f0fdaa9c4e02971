"""What runs inside the model during training: per-example attention and the loss.

Packed rows hold several examples back to back, their position ids restarting at 0.
``segment_attention`` attends within each example only: causal attention per example,
cost proportional to the sum of squared example lengths, like flash-attention's varlen
kernels but on any device. It is registered with transformers' attention interface and
used for architectures whose attention is plain causal softmax attention; for the others
(sliding windows, soft-capping, biases) transformers' own ``sdpa`` path turns the
restarting position ids into a block-diagonal mask, which isolates examples equally but
computes attention over the whole row.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import PeftModel
from torch import nn
from torch.nn import functional
from transformers import AttentionInterface, PreTrainedModel

from tuneforge.providers.local.data import IGNORE_INDEX

SEGMENT_ATTENTION = "tuneforge_segments"
_PLAIN_ATTENTION_MODEL_TYPES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "granite", "olmo", "olmo2", "phi3"}
)


def segment_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    segment_lengths: list[int] | None = None,
    **_: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each segment of a single packed row ([1, heads, T, dim])."""
    lengths = segment_lengths or [query.shape[2]]
    grouped = query.shape[1] != key.shape[1]
    outputs = [
        functional.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=grouped
        )
        for q, k, v in zip(
            query.split(lengths, dim=2),
            key.split(lengths, dim=2),
            value.split(lengths, dim=2),
            strict=True,
        )
    ]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)


def use_segment_attention(model: PreTrainedModel) -> bool:
    """Switch a plain-attention model to ``segment_attention``; False leaves it on sdpa."""
    config = model.config
    plain = (
        config.model_type in _PLAIN_ATTENTION_MODEL_TYPES
        and not (
            getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
        )
        and not getattr(config, "attn_logit_softcapping", None)
    )
    if plain:
        model.set_attn_implementation(SEGMENT_ATTENTION)
    return model.config._attn_implementation == SEGMENT_ATTENTION


class AssistantTokenLoss(nn.Module):
    """Summed cross-entropy and correct-token count over target positions only.

    The backbone runs on every token, the LM head only on positions with a target, which
    saves a (tokens x vocabulary) matmul and its logits for all prompt tokens.
    """

    def __init__(self, model: PeftModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        targets: torch.Tensor,
        segment_lengths: list[int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, labels, _ = _target_logits(
            self.model, input_ids, position_ids, targets, segment_lengths
        )
        loss_sum = functional.cross_entropy(logits.float(), labels, reduction="sum")
        correct = (logits.detach().argmax(-1) == labels).sum()
        return loss_sum, correct


class SequenceLogProbs(nn.Module):
    """Each packed example's summed log-probability of its target tokens: what DPO compares.

    Like ``AssistantTokenLoss``, the LM head runs on target positions only; the per-token
    log-probabilities are then added up per segment of the packed row.
    """

    def __init__(self, model: PeftModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        targets: torch.Tensor,
        segment_lengths: list[int],
    ) -> torch.Tensor:
        logits, labels, selected = _target_logits(
            self.model, input_ids, position_ids, targets, segment_lengths
        )
        token_log_probs = -functional.cross_entropy(logits.float(), labels, reduction="none")
        segments = torch.repeat_interleave(
            torch.arange(len(segment_lengths), device=input_ids.device),
            torch.tensor(segment_lengths, device=input_ids.device),
        )
        sums = torch.zeros(len(segment_lengths), device=input_ids.device)
        return sums.index_add(0, segments[selected[0]], token_log_probs)


def _target_logits(
    model: PeftModel,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    targets: torch.Tensor,
    segment_lengths: list[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, labels) at the target positions of a packed row, and those positions."""
    causal_lm = model.get_base_model()
    # No cache: with one, transformers skips the packed-sequence mask and rows leak.
    hidden = causal_lm.base_model(
        input_ids=input_ids,
        position_ids=position_ids,
        use_cache=False,
        segment_lengths=segment_lengths,
    ).last_hidden_state
    selected = targets != IGNORE_INDEX
    head = causal_lm.get_output_embeddings()
    logits = _final_logits(causal_lm.config, head(hidden[selected]))
    return logits, targets[selected], selected


def _final_logits(config: Any, logits: torch.Tensor) -> torch.Tensor:
    """The output scalings some architectures apply after the LM head in their forward."""
    if getattr(config, "logit_scale", None):
        logits = logits * config.logit_scale
    if getattr(config, "logits_scaling", None):
        logits = logits / config.logits_scaling
    if getattr(config, "final_logit_softcapping", None):
        cap = config.final_logit_softcapping
        logits = torch.tanh(logits / cap) * cap
    return logits
