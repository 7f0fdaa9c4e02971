"""A LoRA adapter for a real base model that changes it a little, as a fine-tune does.

peft's random initialisation (the tiny model's adapter) would swamp a trained model's
weights; export fidelity is better judged on a model that still answers sensibly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_small_adapter(
    base: Path, directory: Path, *, seed: int = 3, scale: float = 0.002
) -> Path:
    """Every linear layer gets a rank-8 delta with ``lora_B`` drawn at ``scale``."""
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=TARGETS,
        task_type="CAUSAL_LM",
        init_lora_weights="gaussian",
    )
    torch.manual_seed(seed)  # lora_A's gaussian draw
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    peft_model.save_pretrained(directory)
    return directory
