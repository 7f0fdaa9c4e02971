"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the LoRA adapter, optimizer and scheduler states and the step; the
data order and the random draws are pure functions of (seed, step), so the step is the
whole position in the data and no RNG state needs saving. It is written into a hidden
temporary directory and renamed into place, so a killed writer never leaves a half
checkpoint that a resume could load. The last ``KEEP_CHECKPOINTS`` are kept, as OpenAI does.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerBase

from tuneforge.providers.local.jobdir import (
    ADAPTER_DIR,
    INFO_FILE,
    JobPaths,
    checkpoint_dirs,
    utc_now_iso,
)

if TYPE_CHECKING:
    from tuneforge.providers.local.stacking import AdapterFiles

KEEP_CHECKPOINTS = 3
STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path

    @property
    def adapter(self) -> Path:
        return self.path / ADAPTER_DIR


def save_checkpoint(
    paths: JobPaths,
    *,
    step: int,
    model: PeftModel,
    files: AdapterFiles,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    trained_tokens: int,
    metrics: dict[str, float],
    early_stopping: dict[str, Any],
) -> Path:
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    final = paths.checkpoints / f"step-{step}"
    tmp = paths.checkpoints / f".step-{step}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files.save(model, tmp / ADAPTER_DIR)
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "trained_tokens": trained_tokens,
            "early_stopping": early_stopping,
        },
        tmp / STATE_FILE,
    )
    info = {"step": step, "metrics": metrics, "created_at": utc_now_iso()}
    (tmp / INFO_FILE).write_text(json.dumps(info))
    shutil.rmtree(final, ignore_errors=True)  # a re-run after resume writes the same step
    tmp.replace(final)
    for _, old in checkpoint_dirs(paths)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_adapter(
    paths: JobPaths, model: PeftModel, files: AdapterFiles, tokenizer: PreTrainedTokenizerBase
) -> Path:
    """Write the final adapter, with the tokenizer for inference, atomically into place."""
    tmp = paths.root / f".adapter.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    files.save(model, tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(paths.adapter, ignore_errors=True)
    tmp.replace(paths.adapter)
    return paths.adapter


def latest_checkpoint(paths: JobPaths) -> Checkpoint | None:
    found = checkpoint_dirs(paths)
    if not found:
        return None
    step, path = found[-1]
    return Checkpoint(step=step, path=path)


@dataclass(frozen=True)
class RestoredState:
    trained_tokens: int
    early_stopping: dict[str, Any] | None


def restore_checkpoint(
    checkpoint: Checkpoint,
    model: PeftModel,
    files: AdapterFiles,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> RestoredState:
    """Load a checkpoint into the live objects; returns the run's counters as of it."""
    files.load(model, checkpoint.adapter)
    state = torch.load(checkpoint.path / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return RestoredState(int(state["trained_tokens"]), state.get("early_stopping"))


def load_adapter_weights(model: PeftModel, adapter_dir: Path) -> None:
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    result = set_peft_model_state_dict(model, weights)
    if result.unexpected_keys:
        raise RuntimeError(f"Adapter {adapter_dir} does not match this model")


def save_best_adapter(paths: JobPaths, model: PeftModel, files: AdapterFiles) -> None:
    """Keep the LoRA weights of the best step so far, replacing the previous best atomically."""
    tmp = paths.root / f".best-adapter.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    files.save(model, tmp)
    shutil.rmtree(paths.best_adapter, ignore_errors=True)
    tmp.replace(paths.best_adapter)
