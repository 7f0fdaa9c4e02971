"""The built-in SmolLM2 (llama with a tied output head and a 49k-token vocabulary), exported:
the merged model and the f16 GGUF answer exactly as TuneForge serves the fine-tune, and
the q8_0 GGUF agrees with the float32 fine-tune on the top token (``Q8_0_MIN_AGREEMENT``).

The fine-tune is SmolLM2 with a small LoRA delta on every linear layer
(``tests/exports/adapters.py``). transformers takes ~30-50 s to read each GGUF here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from tests.exports.adapters import build_small_adapter
from tests.exports.conftest import unpack
from tuneforge.config import Settings
from tuneforge.db.tables.exports import ExportFormat, ExportQuantization
from tuneforge.exports.service import ExportWork
from tuneforge.exports.writers import load_merged, write_export
from tuneforge.inference.engine import InferenceEngine, ModelSource
from tuneforge.store.base_models import DEFAULT_MODEL, pull_builtin_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOKENS = 24
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "How do I reverse a list in Python?",
    "Suggest a name for a coffee shop.",
]
Q8_0_MIN_AGREEMENT = 0.9
"""benchmarks/export_formats.py measured 97.2% over 8 prompts x 32 tokens; four prompts
have fewer positions, so one flip weighs more."""


def chat(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("smollm2-exports")
    base = pull_builtin_model(Settings(data_dir=root / "data"), DEFAULT_MODEL)
    return base, build_small_adapter(base, root / "adapter")


@pytest.fixture(scope="module")
def served(smollm2: tuple[Path, Path]) -> list[str]:
    """The fine-tune's greedy replies as TuneForge serves them."""
    engine = InferenceEngine(2 * 1024**3)
    source = ModelSource("served", *smollm2)
    replies = engine.complete_greedy_batch(source, [chat(p) for p in PROMPTS], TOKENS)
    return [reply.text for reply in replies]


def export(
    smollm2: tuple[Path, Path],
    folder: Path,
    export_format: ExportFormat,
    quantization: ExportQuantization | None,
) -> Path:
    work = ExportWork(export_format, quantization, "smol", "smol", *smollm2, None)
    scratch = folder / "scratch"
    scratch.mkdir()
    write_export(work, folder / work.file_name, scratch, lambda *_: None)
    return folder / work.file_name


def replies(model: PreTrainedModel, tokenizer: Any) -> list[str]:
    out = []
    for prompt in PROMPTS:
        inputs = tokenizer.apply_chat_template(
            chat(prompt), add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        with torch.inference_mode():
            output = model.generate(
                **inputs,
                max_new_tokens=TOKENS,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = output[0, inputs["input_ids"].shape[1] :]
        out.append(tokenizer.decode(new, skip_special_tokens=True))
    return out


def load_gguf(path: Path) -> tuple[PreTrainedModel, Any]:
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return model.eval(), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def test_the_merged_smollm2_answers_as_served(
    smollm2: tuple[Path, Path], served: list[str], tmp_path: Path
) -> None:
    archive = export(smollm2, tmp_path, ExportFormat.MERGED, None)
    folder = unpack(archive.read_bytes(), tmp_path / "out")

    model = AutoModelForCausalLM.from_pretrained(folder).eval()

    assert model.config.tie_word_embeddings
    assert replies(model, AutoTokenizer.from_pretrained(folder)) == served


def test_the_f16_gguf_of_smollm2_answers_as_served(
    smollm2: tuple[Path, Path], served: list[str], tmp_path: Path
) -> None:
    path = export(smollm2, tmp_path, ExportFormat.GGUF, ExportQuantization.F16)

    model, tokenizer = load_gguf(path)

    assert len(tokenizer) == 49152
    assert replies(model, tokenizer) == served


def test_the_q8_0_gguf_of_smollm2_agrees_on_the_top_token(
    smollm2: tuple[Path, Path], tmp_path: Path
) -> None:
    path = export(smollm2, tmp_path, ExportFormat.GGUF, ExportQuantization.Q8_0)
    exported = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    reference, tokenizer = load_merged(*smollm2)
    agree = total = 0
    for prompt in PROMPTS:
        inputs = tokenizer.apply_chat_template(
            chat(prompt), add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        start = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            sequence = reference.generate(**inputs, max_new_tokens=TOKENS, do_sample=False)
            want = reference(sequence).logits[0, start - 1 : -1].argmax(-1)
            got = exported(sequence).logits[0, start - 1 : -1].argmax(-1)
        agree += int((want == got).sum())
        total += want.numel()

    assert agree / total >= Q8_0_MIN_AGREEMENT
