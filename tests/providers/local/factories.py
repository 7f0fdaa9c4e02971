"""Training data and job directories for local-provider tests (the model: ``tiny_model_dir``).

Conversations follow a rule (the answer repeats the question) so a few training steps on
the tiny model visibly lower the loss.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tuneforge.providers.local.jobdir import (
    JobPaths,
    JobSpec,
    parse_local_hyperparameters,
    read_events,
    write_spec,
)

_WORD_TEXT = (
    "the cat dog sat on a mat ran to park blue red green what is color of sky sea "
    "please tell me about your day it was fine thanks hello world answer question"
)
WORDS = _WORD_TEXT.split()


def chat_examples(count: int, seed: int = 0) -> list[dict]:
    """Deterministic conversations with a learnable rule: the answer repeats the question."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        words = rng.choices(WORDS, k=rng.randint(2, 12))
        question = " ".join(words)
        examples.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": f"you said {question}"},
                ]
            }
        )
    return examples


def preference_examples(count: int, seed: int = 0) -> list[dict]:
    """OpenAI DPO lines with a learnable preference: repeating the question beats a fixed
    non-answer."""
    pairs = []
    for example in chat_examples(count, seed):
        user, reply = example["messages"]
        pairs.append(
            {
                "input": {"messages": [user]},
                "preferred_output": [reply],
                "non_preferred_output": [{"role": "assistant", "content": "no idea sorry"}],
            }
        )
    return pairs


def write_jsonl(path: Path, examples: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


def prepare_job_dir(
    root: Path,
    model_dir: Path,
    hyperparameters: dict,
    *,
    n_train: int = 48,
    n_valid: int = 0,
    seed: int = 7,
    method: str = "supervised",
    parent_adapter: Path | None = None,
) -> JobPaths:
    """A job directory as ``create_job`` writes it, for running the trainer in-process."""
    paths = JobPaths(root)
    root.mkdir(parents=True, exist_ok=True)
    examples = preference_examples if method == "dpo" else chat_examples
    write_jsonl(paths.train_file, examples(n_train))
    if n_valid:
        write_jsonl(paths.valid_file, examples(n_valid, seed=seed + 1))
    write_spec(
        paths,
        JobSpec(
            job_id=root.name,
            base_model="tiny-llama",
            base_model_path=str(model_dir),
            hyperparameters=parse_local_hyperparameters(hyperparameters).model_dump(),
            seed=seed,
            has_validation=bool(n_valid),
            method=method,
            parent_adapter=str(parent_adapter) if parent_adapter else None,
        ),
    )
    return paths


def metric_events(paths: JobPaths) -> list[dict]:
    events, _ = read_events(paths.progress, 0)
    return [e for e in events if e["type"] == "metrics"]
