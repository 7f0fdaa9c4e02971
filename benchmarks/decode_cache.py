"""Does a static KV cache, or ``torch.compile``, pay for generation on this CPU?

The serving engine (``inference/decoding.py``) decodes with transformers' dynamic cache:
rows join and leave a running batch, which a dynamic cache allows by concatenating and
slicing. A static cache has fixed shapes, the precondition for ``torch.compile`` (and CUDA
graphs) to pay off. This measures the three on the built-in SmolLM2 with transformers'
own ``generate``, greedy, ``--new-tokens`` each, at batch 1 and batch 8, in one run:

- ``dynamic``: the default cache, eager (what the engine does today): the baseline;
- ``static``: ``cache_implementation="static"``, eager;
- ``static+compile``: the same, the forward compiled by inductor (``mode="reduce-overhead"``,
  transformers' default for generation); the first call's compile time is printed apart.

Each configuration is warmed up once, then timed ``--rounds`` times, alternating, so a
change in the machine's load falls on all three. Prints tokens/s and the ratio to
``dynamic``; replies are checked to be identical to the baseline's.

    python benchmarks/decode_cache.py                # ~5 min on 2 cores, mostly compiling
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.generation.configuration_utils import CompileConfig

from tuneforge.config import Settings
from tuneforge.store.base_models import DEFAULT_MODEL, pull_builtin_model

QUESTIONS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "How do I reverse a list in Python?",
    "Name three colours of the rainbow.",
    "Why is the sky blue? Answer briefly.",
    "Give me a synonym for happy.",
    "What does a LoRA adapter change in a model?",
    "Suggest a name for a grey cat.",
]
CONFIGURATIONS = ("dynamic", "static", "static+compile")


def _inputs(tokenizer: PreTrainedTokenizerBase, batch: int) -> dict[str, torch.Tensor]:
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        for question in QUESTIONS[:batch]
    ]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def _options(name: str) -> dict[str, Any]:
    if name == "dynamic":
        return {}
    if name == "static":
        return {"cache_implementation": "static", "disable_compile": True}
    compile_config = CompileConfig()
    compile_config._compile_all_devices = True  # transformers compiles on CPU only when asked
    return {"cache_implementation": "static", "compile_config": compile_config}


def _generate(
    model: Any, inputs: dict[str, torch.Tensor], name: str, new_tokens: int
) -> tuple[float, torch.Tensor]:
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            **_options(name),
        )
    return time.perf_counter() - started, output[:, inputs["input_ids"].shape[1] :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tuneforge-decode-"))
    path = pull_builtin_model(Settings(data_dir=data_dir), DEFAULT_MODEL, print)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    print(f"SmolLM2, {torch.get_num_threads()} threads, {args.new_tokens} new tokens, greedy")
    for batch in (1, 8):
        inputs = _inputs(tokenizer, batch)
        expected: torch.Tensor | None = None
        for name in CONFIGURATIONS:
            seconds, output = _generate(model, inputs, name, args.new_tokens)
            expected = output if expected is None else expected
            same = torch.equal(output, expected)
            print(f"batch {batch} {name:>15}: first call {seconds:6.1f} s, replies same: {same}")
        times: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
        for _ in range(args.rounds):
            for name in CONFIGURATIONS:
                times[name].append(_generate(model, inputs, name, args.new_tokens)[0])
        baseline = batch * args.new_tokens / statistics.median(times["dynamic"])
        for name in CONFIGURATIONS:
            rate = batch * args.new_tokens / statistics.median(times[name])
            print(
                f"batch {batch} {name:>15}: {rate:6.1f} tokens/s, {rate / baseline:4.2f}x dynamic"
            )


if __name__ == "__main__":
    main()
