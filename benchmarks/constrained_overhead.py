"""What structured outputs cost: greedy tokens/s with and without a JSON-schema constraint.

SmolLM2 from the model store (pulled into ``--data-dir`` if missing) answers the same
prompts twice per round, unconstrained and through ``ConstrainedDecoding`` with a schema
for a list of at least ten cities, so both runs generate exactly ``--tokens`` tokens and
compare per token, not per reply. The two alternate (and swap order each round), so a
busy machine slows both alike. Reported: tokens/s over wall time and over process CPU
time (steadier on a shared machine), their ratio, and the processor's own time per token.
Goal: the constraint costs <= 20% of tokens/s.

    python benchmarks/constrained_overhead.py                 # 4 prompts x 2 rounds, 64 tokens
    python benchmarks/constrained_overhead.py --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tuneforge.config import Settings
from tuneforge.inference.constrained import (
    ConstrainedDecoding,
    Grammar,
    response_format_grammar,
    tokenizer_info,
)
from tuneforge.inference.generation import NEUTRAL_SAMPLING
from tuneforge.store.base_models import DEFAULT_MODEL, pull_builtin_model

GOAL_MAX_COST = 0.20
CITY = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "country": {"type": "string"},
        "population": {"type": "integer"},
    },
    "required": ["name", "country", "population"],
    "additionalProperties": False,
}
SCHEMA = {
    "type": "object",
    "properties": {"cities": {"type": "array", "items": CITY, "minItems": 10}},
    "required": ["cities"],
    "additionalProperties": False,
}
PROMPTS = [
    "List ten large cities with their country and population as JSON.",
    "Give me a JSON list of ten European capitals, their countries and populations.",
    "Write JSON describing ten cities in Asia: name, country, population.",
    "Which ten cities have the most people? Answer in JSON.",
]


@dataclass
class Tally:
    tokens: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    in_processor: float = 0.0


class _Timed(LogitsProcessor):
    """Adds the wrapped processor's time to a tally: the grammar's own cost per token."""

    def __init__(self, inner: LogitsProcessor, tally: Tally) -> None:
        self.inner = inner
        self.tally = tally

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        start = time.perf_counter()
        scores = self.inner(input_ids, scores)
        self.tally.in_processor += time.perf_counter() - start
        return scores


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    grammar: Grammar | None,
    tally: Tally,
    max_new_tokens: int,
) -> str:
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    start = int(inputs["input_ids"].shape[1])
    eos = [tokenizer.eos_token_id]
    processors = LogitsProcessorList()
    if grammar is not None:
        constraint = ConstrainedDecoding(tokenizer, grammar, prompt_length=start, eos_ids=eos)
        processors.append(_Timed(constraint, tally))
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            **NEUTRAL_SAMPLING,
            eos_token_id=eos,
            pad_token_id=eos[0],
            logits_processor=processors,
        )
    tally.wall += time.perf_counter() - wall
    tally.cpu += time.process_time() - cpu
    tally.tokens += output.shape[1] - start
    return tokenizer.decode(output[0, start:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("var/bench-quality"))
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = pull_builtin_model(Settings(data_dir=args.data_dir), DEFAULT_MODEL, print)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    start = time.perf_counter()
    tokenizer_info(tokenizer)
    built = time.perf_counter()
    grammar = response_format_grammar(
        {"type": "json_schema", "json_schema": {"name": "cities", "schema": SCHEMA}}
    )
    compiled = time.perf_counter()
    print(
        f"One-off: tokenizer info {built - start:.2f} s (cached per tokenizer), "
        f"schema compile {(compiled - built) * 1000:.1f} ms"
    )

    runs = {"unconstrained": None, "json_schema": grammar}
    for run_grammar in runs.values():  # warm-up: first-call allocations and caches
        generate(model, tokenizer, PROMPTS[0], run_grammar, Tally(), 8)
    tallies = {name: Tally() for name in runs}
    for round_index in range(args.rounds):
        order = list(runs) if round_index % 2 == 0 else list(reversed(runs))
        for prompt in PROMPTS:
            for name in order:
                text = generate(model, tokenizer, prompt, runs[name], tallies[name], args.tokens)
                if round_index == 0 and prompt == PROMPTS[0]:
                    print(f"{name}: {text[:100]!r}...")

    free, constrained = tallies["unconstrained"], tallies["json_schema"]
    if free.tokens != constrained.tokens:
        print(f"note: token counts differ ({free.tokens} vs {constrained.tokens})")
    print(f"\nSmolLM2-135M, float32, {args.threads} thread(s), {args.tokens} new tokens per reply")
    print("| run | tokens | tokens/s (wall) | tokens/s (CPU) | processor us/token |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, tally in tallies.items():
        per_token = tally.in_processor / tally.tokens * 1e6
        print(
            f"| {name} | {tally.tokens} | {tally.tokens / tally.wall:.1f} "
            f"| {tally.tokens / tally.cpu:.1f} | {per_token:.0f} |"
        )
    wall_ratio = (constrained.tokens / constrained.wall) / (free.tokens / free.wall)
    cpu_ratio = (constrained.tokens / constrained.cpu) / (free.tokens / free.cpu)
    print(f"constrained / unconstrained tokens/s: {wall_ratio:.3f} (wall), {cpu_ratio:.3f} (CPU)")
    met = 1 - cpu_ratio <= GOAL_MAX_COST
    cost = (1 - cpu_ratio) * 100
    print(f"{'MET ' if met else 'MISSED'} the constraint costs <= 20% of tokens/s ({cost:+.1f}%)")


if __name__ == "__main__":
    main()
