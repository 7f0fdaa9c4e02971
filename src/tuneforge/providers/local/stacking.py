"""Training on top of a fine-tune: its LoRA merged into the base weights, a new LoRA above.

A job may start from one of TuneForge's own fine-tunes (a DPO step after a supervised
one, or more supervised training). The parent's LoRA is merged into the base weights as
they load, and the job trains a fresh LoRA on those weights. Merged, the parent *is* the
model with the adapter switched off, which is what DPO's reference must be: peft's
``disable_adapter()`` switches off every adapter of a model, so a frozen parent adapter
kept beside the trained one would make the reference the plain base model instead.

What the run writes (checkpoints, the best step, the final model) must still serve on the
plain base, like every other fine-tune. Two LoRAs on the same weight add up, and their sum
is itself one LoRA of rank r1 + r2 with scale 1:

    s1 B1 A1 + s2 B2 A2 = [s1 B1 | s2 B2] [A1 ; A2]

so ``StackedAdapterFiles`` writes that concatenation (exact, no approximation), and reads
back only its trained rows when a run resumes or returns to its best step.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from peft import LoraConfig, PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

from tuneforge.providers.local.checkpoints import load_adapter_weights

ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
_A, _B = ".lora_A.weight", ".lora_B.weight"
# Parent adapter settings a plain merge would get wrong; TuneForge's trainer writes none.
_UNSUPPORTED = ("use_dora", "fan_in_fan_out", "modules_to_save", "rank_pattern", "alpha_pattern")


class AdapterFiles(Protocol):
    """How a run's LoRA weights are written to and read from an adapter directory."""

    def save(self, model: PeftModel, directory: Path) -> None: ...

    def load(self, model: PeftModel, directory: Path) -> None: ...


class PlainAdapterFiles:
    """A run on the base model itself: its adapter is exactly what peft saves."""

    def save(self, model: PeftModel, directory: Path) -> None:
        model.save_pretrained(directory)

    def load(self, model: PeftModel, directory: Path) -> None:
        load_adapter_weights(model, directory)


@dataclass(frozen=True)
class ParentAdapter:
    """The merged parent's factors per module (peft's key prefix), its B pre-scaled."""

    rank: int
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]


def merge_parent_adapter(model: nn.Module, adapter_dir: Path) -> ParentAdapter:
    """Add the LoRA in ``adapter_dir`` into ``model``'s linear weights, in place."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    unsupported = [key for key in _UNSUPPORTED if config.get(key)]
    if config.get("peft_type", "LORA") != "LORA" or unsupported:
        raise ValueError(
            f"The adapter in {adapter_dir} cannot be trained on top of: it is not a plain "
            f"LoRA ({', '.join(unsupported) or config.get('peft_type')})"
        )
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    weights = load_file(adapter_dir / ADAPTER_WEIGHTS)
    modules = dict(model.named_modules())
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, tensor in weights.items():
        if key.endswith(_B):
            continue
        prefix = key.removesuffix(_A)
        module = modules.get(prefix.removeprefix(_PEFT_PREFIX))
        if not key.endswith(_A) or prefix + _B not in weights or not isinstance(module, nn.Linear):
            raise ValueError(f"The adapter in {adapter_dir} has weights {key!r} this model lacks")
        a = tensor.float()
        b = weights[prefix + _B].float() * scale
        with torch.no_grad():
            module.weight += (b @ a).to(module.weight.dtype)
        factors[prefix] = (a, b)
    return ParentAdapter(rank=rank, factors=factors)


class StackedAdapterFiles:
    """A run on a merged parent: one plain LoRA on the original base holds both."""

    def __init__(self, parent: ParentAdapter, base_model_path: str) -> None:
        self._parent = parent
        self._base_model_path = base_model_path

    def save(self, model: PeftModel, directory: Path) -> None:
        trained, rank, scale = _trained_factors(model)
        parent = self._parent
        total = parent.rank + rank
        weights: dict[str, torch.Tensor] = {}
        prefixes = sorted(parent.factors.keys() | trained.keys())
        for prefix in prefixes:
            a1, b1 = parent.factors.get(prefix) or _zeros_like(trained[prefix], parent.rank)
            a2, b2 = trained.get(prefix) or _zeros_like(parent.factors[prefix], rank)
            weights[prefix + _A] = torch.cat([a1, a2], dim=0).contiguous()
            weights[prefix + _B] = torch.cat([b1, b2 * scale], dim=1).contiguous()
        config = LoraConfig(
            r=total,
            lora_alpha=total,  # scale 1: the parent's and the run's scales are in B already
            target_modules=[prefix.removeprefix(_PEFT_PREFIX) for prefix in prefixes],
            bias="none",
            task_type="CAUSAL_LM",
            base_model_name_or_path=self._base_model_path,
            inference_mode=True,
        )
        directory.mkdir(parents=True, exist_ok=True)
        save_file(weights, directory / ADAPTER_WEIGHTS)
        config.save_pretrained(directory)

    def load(self, model: PeftModel, directory: Path) -> None:
        """The trained rows and columns of a stacked adapter, its B unscaled again."""
        weights = load_file(directory / ADAPTER_WEIGHTS)
        trained, rank, scale = _trained_factors(model)
        start = self._parent.rank
        state: dict[str, Any] = {}
        for prefix in trained:
            a, b = weights.get(prefix + _A), weights.get(prefix + _B)
            if a is None or b is None or a.shape[0] != start + rank:
                raise RuntimeError(f"Adapter {directory} does not match this run's adapter")
            state[prefix + _A] = a[start:]
            state[prefix + _B] = b[:, start:] / scale
        set_peft_model_state_dict(model, state)


def _trained_factors(
    model: PeftModel,
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], int, float]:
    """The run's own LoRA per module (B not yet scaled), its rank and its scale."""
    config = model.peft_config["default"]
    rank = int(config.r)
    scale = config.lora_alpha / (math.sqrt(rank) if config.use_rslora else rank)
    state = get_peft_model_state_dict(model)
    factors = {
        key.removesuffix(_A): (
            tensor.detach().float(),
            state[key.removesuffix(_A) + _B].detach().float(),
        )
        for key, tensor in state.items()
        if key.endswith(_A)
    }
    return factors, rank, scale


def _zeros_like(
    factors: tuple[torch.Tensor, torch.Tensor], rank: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero factors of ``rank`` for a module only the other adapter has."""
    a, b = factors
    return torch.zeros(rank, a.shape[1]), torch.zeros(b.shape[0], rank)
