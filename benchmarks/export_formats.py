"""Export sizes and times per format for SmolLM2, and how faithful the GGUF files are.

SmolLM2-135M-Instruct from the store (pulled into ``--data-dir`` if missing) gets a small
LoRA adapter on every linear layer (``tests/exports/adapters.py``: what a fine-tune
changes, without a training run), then each format is written the way a worker writes it
(``exports.writers.write_export``, hashing included). Reported per format: seconds, file
size, and size over the base model's safetensors. Then the GGUF files, loaded by
transformers' own GGUF reader: how many greedy replies are identical to the ones TuneForge
serves (``InferenceEngine.complete_greedy_batch``), and the top-1 token agreement with the
float32 fine-tune, teacher-forced over its greedy replies (``--tokens`` each, ``PROMPTS``).

    python benchmarks/export_formats.py                  # ~10 min on 2 cores, mostly reading GGUFs
    python benchmarks/export_formats.py --no-fidelity    # sizes and times only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests/

from tests.exports.adapters import build_small_adapter

from tuneforge.config import Settings
from tuneforge.db.tables.exports import ExportFormat, ExportQuantization
from tuneforge.exports.service import ExportWork
from tuneforge.exports.writers import file_sha256, load_merged, write_export
from tuneforge.inference.engine import InferenceEngine, ModelSource
from tuneforge.store.base_models import DEFAULT_MODEL, pull_builtin_model

FORMATS = [
    (ExportFormat.ADAPTER, None),
    (ExportFormat.MERGED, None),
    (ExportFormat.GGUF, ExportQuantization.F16),
    (ExportFormat.GGUF, ExportQuantization.Q8_0),
    (ExportFormat.OLLAMA, ExportQuantization.Q8_0),
]
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a neural network is in two sentences.",
    "Give me three tips for a job interview.",
    "How do I reverse a list in Python?",
    "What causes the seasons on Earth?",
    "Suggest a name for a coffee shop.",
    "Summarize the plot of Romeo and Juliet in one sentence.",
]


def chat(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def greedy(model: Any, tokenizer: Any, prompt: str, tokens: int) -> list[int]:
    inputs = tokenizer.apply_chat_template(
        chat(prompt), add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            max_new_tokens=tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return output[0].tolist()


def fidelity(
    served: list[str], fine_tune: tuple[Any, Any], gguf: Path, tokens: int
) -> tuple[int, float]:
    """(greedy replies identical to the served ones, top-1 agreement with the float32
    fine-tune teacher-forced over its own greedy replies)."""
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    reference, reference_tokenizer = fine_tune
    same = agree = total = 0
    for prompt, served_reply in zip(PROMPTS, served, strict=True):
        prompt_ids = tokenizer.apply_chat_template(
            chat(prompt), add_generation_prompt=True, return_dict=True
        )["input_ids"]
        start = len(prompt_ids)
        reply = greedy(model, tokenizer, prompt, tokens)[start:]
        same += tokenizer.decode(reply, skip_special_tokens=True) == served_reply
        sequence = torch.tensor([greedy(reference, reference_tokenizer, prompt, tokens)])
        with torch.inference_mode():
            want = reference(sequence).logits[0, start - 1 : -1].argmax(-1)
            got = model(sequence).logits[0, start - 1 : -1].argmax(-1)
        agree += int((want == got).sum())
        total += want.numel()
    return same, agree / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("var/bench-export"))
    parser.add_argument("--tokens", type=int, default=32, help="Reply tokens per prompt.")
    parser.add_argument("--no-fidelity", action="store_true", help="Skip loading the GGUFs.")
    args = parser.parse_args()

    settings = Settings(data_dir=args.data_dir)
    settings.ensure_data_dir()
    base = pull_builtin_model(settings, DEFAULT_MODEL, print)
    adapter = args.data_dir / "bench-adapter"
    if not (adapter / "adapter_config.json").is_file():
        build_small_adapter(base, adapter)
    base_bytes = sum(f.stat().st_size for f in base.glob("*.safetensors"))
    print(f"\nbase: {DEFAULT_MODEL}, safetensors {base_bytes / 1e6:.1f} MB (ratio 1.00)")
    print(f"{'format':<16} {'seconds':>8} {'MB':>9} {'ratio':>6}")
    written: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(dir=args.data_dir) as work:
        for export_format, quantization in FORMATS:
            item = ExportWork(export_format, quantization, "bench", "bench", base, adapter, None)
            scratch = Path(work) / f"scratch-{item.file_name}"
            scratch.mkdir()
            target = Path(work) / item.file_name
            started = time.perf_counter()
            write_export(item, target, scratch, lambda *_: None)
            file_sha256(target, lambda _: None)
            seconds = time.perf_counter() - started
            size = target.stat().st_size
            label = f"{export_format.value} {quantization.value if quantization else ''}"
            print(f"{label:<16} {seconds:>8.2f} {size / 1e6:>9.1f} {size / base_bytes:>6.2f}")
            written[label.strip()] = target
        if args.no_fidelity:
            return
        engine = InferenceEngine(2 * 1024**3)
        source = ModelSource("served", base, adapter)
        conversations = [chat(prompt) for prompt in PROMPTS]
        served = [c.text for c in engine.complete_greedy_batch(source, conversations, args.tokens)]
        fine_tune = load_merged(base, adapter)
        for label in ("gguf f16", "gguf q8_0"):
            same, agreement = fidelity(served, fine_tune, written[label], args.tokens)
            print(
                f"{label}: {same}/{len(PROMPTS)} greedy replies identical to the served ones, "
                f"top-1 agreement {agreement:.2%} over {len(PROMPTS)} x {args.tokens} tokens"
            )


if __name__ == "__main__":
    main()
