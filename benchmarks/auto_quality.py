"""Does "auto" pick good settings for local LoRA runs? Base model vs auto vs hand-tuned.

For each task of ``quality_tasks.py`` (~300 training and ~60 held-out examples from a
seeded generator) on the built-in SmolLM2, in one run:

1. the base model's held-out score;
2. a job with every hyperparameter on "auto", trained the way TuneForge trains it (the
   local provider's child process, with its held-out slice and early stopping): score,
   training wall time, steps run vs planned, tokens per second;
3. the same for a hand-tuned configuration.

Scores come from greedy generations graded by the grader the data calls for
(``evals.graders.grader_for``: JSON match, exact match, or similarity); the score is the
pass rate in percent. Goals (2-core CPU): every auto job trains in <= 5 minutes, early
stopping included, and scores within 2 points of the hand-tuned one; extraction >= 95%.

    python benchmarks/auto_quality.py                    # all three tasks (~40 min on 2 cores)
    python benchmarks/auto_quality.py --hand-tuned extraction   # hand-tuned runs on one task
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_tasks import TASKS, Task

from tuneforge.config import Settings
from tuneforge.evals.graders import grader_for
from tuneforge.inference.engine import InferenceEngine, ModelSource
from tuneforge.providers.contract import ProviderJobRequest, ProviderJobState
from tuneforge.providers.local.jobdir import job_paths, read_status
from tuneforge.providers.local.provider import LocalProvider
from tuneforge.store.base_models import DEFAULT_MODEL, pull_builtin_model

TRAIN_EXAMPLES = 300
HELD_OUT_EXAMPLES = 60
MAX_REPLY_TOKENS = 64
GENERATION_BATCH = 12
HAND_TUNED = {
    "n_epochs": 3,
    "batch_size": 8,
    "learning_rate_multiplier": 3.0,
    "early_stopping_patience": 0,
    "holdout_fraction": 0.0,
}
GOAL_TRAIN_SECONDS = 300
GOAL_POINTS_BEHIND = 2.0
GOAL_EXTRACTION = 95.0
FINISHED = {ProviderJobState.SUCCEEDED, ProviderJobState.FAILED, ProviderJobState.CANCELLED}


@dataclass
class Trained:
    score: float
    seconds: float
    steps: int
    planned_steps: int
    tokens_per_second: float
    plan: dict[str, Any]


def held_out(task: Task, train: list[dict]) -> list[dict]:
    """Held-out examples whose prompts never appear in training."""
    seen = {json.dumps(e["messages"][:-1]) for e in train}
    fresh = [
        e
        for e in task.examples(HELD_OUT_EXAMPLES * 3, seed=2)
        if json.dumps(e["messages"][:-1]) not in seen
    ]
    return fresh[:HELD_OUT_EXAMPLES]


def score(base: Path, adapter: Path | None, examples: list[dict]) -> float:
    """Pass rate (%) of greedy replies under the grader the expected replies call for."""
    engine, source = InferenceEngine(4 * 1024**3), ModelSource("bench", base, adapter)
    prompts = [e["messages"][:-1] for e in examples]
    expected = [e["messages"][-1]["content"] for e in examples]
    replies = []
    for start in range(0, len(prompts), GENERATION_BATCH):
        batch = prompts[start : start + GENERATION_BATCH]
        replies += [c.text for c in engine.complete_greedy_batch(source, batch, MAX_REPLY_TOKENS)]
    grader = grader_for(expected)
    passed = sum(
        grader.grade(reply, want).passed for reply, want in zip(replies, expected, strict=True)
    )
    return 100.0 * passed / len(examples)


def train(
    settings: Settings, job_id: str, rows: list[dict], hyperparameters: dict, work: Path
) -> tuple[Path, dict]:
    provider = LocalProvider(settings)
    data = work / f"{job_id}.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    provider.create_job(
        ProviderJobRequest(
            idempotency_key=job_id,
            base_model=DEFAULT_MODEL,
            training_file_id=provider.upload_training_file(data, idempotency_key=f"{job_id}-t"),
            validation_file_id=None,
            hyperparameters=hyperparameters,
            suffix="bench",
            seed=0,
            metadata={},
        )
    )
    while (status := provider.get_status(job_id)).status not in FINISHED:
        time.sleep(1.0)
    if status.status != ProviderJobState.SUCCEEDED:
        raise RuntimeError(f"{job_id} ended {status.status}: {status.error_message}")
    return job_paths(settings, job_id).adapter, read_status(job_paths(settings, job_id)) or {}


def run_config(
    settings: Settings,
    base: Path,
    name: str,
    rows: list[dict],
    test: list[dict],
    hyperparameters: dict,
    work: Path,
) -> Trained:
    started = time.perf_counter()
    adapter, status = train(settings, name, rows, hyperparameters, work)
    seconds = time.perf_counter() - started
    plan = status.get("plan", {})
    steps = int(status.get("step", 0))
    return Trained(
        score=score(base, adapter, test),
        seconds=seconds,
        steps=steps,
        planned_steps=int(plan.get("total_steps", steps)),
        tokens_per_second=float(status.get("trained_tokens", 0)) / seconds,
        plan=plan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=[task.name for task in TASKS])
    parser.add_argument(
        "--hand-tuned",
        nargs="*",
        default=None,
        help="Tasks to also train the hand-tuned configuration on (default: every task).",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("var/bench-quality"))
    args = parser.parse_args()
    settings = Settings(data_dir=args.data_dir)
    base = pull_builtin_model(settings, DEFAULT_MODEL, print)
    stamp = time.strftime("%H%M%S")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in (t for t in TASKS if t.name in args.tasks):
            train_rows = task.examples(TRAIN_EXAMPLES, seed=1)
            test = held_out(task, train_rows)
            print(
                f"[{task.name}] {len(train_rows)} training, {len(test)} held-out examples",
                flush=True,
            )
            base_score = score(base, None, test)
            print(f"[{task.name}] base model: {base_score:.1f}%", flush=True)
            auto = run_config(
                settings, base, f"{task.name}-auto-{stamp}", train_rows, test, {}, Path(tmp)
            )
            print(f"[{task.name}] auto: {auto}", flush=True)
            hand = None
            if args.hand_tuned is None or task.name in args.hand_tuned:
                hand = run_config(
                    settings,
                    base,
                    f"{task.name}-hand-{stamp}",
                    train_rows,
                    test,
                    HAND_TUNED,
                    Path(tmp),
                )
                print(f"[{task.name}] hand-tuned: {hand}", flush=True)
            rows.append((task.name, base_score, auto, hand))
    report(rows)


def report(rows: list[tuple[str, float, Trained, Trained | None]]) -> None:
    print(
        "\n| task | base | auto | hand-tuned | auto train s | steps run/planned | tokens/s "
        "| auto batch, lr, epochs |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    goals = []
    for name, base_score, auto, hand in rows:
        plan = auto.plan
        hand_text = f"{hand.score:.1f}%" if hand else "-"
        print(
            f"| {name} | {base_score:.1f}% | {auto.score:.1f}% | {hand_text} "
            f"| {auto.seconds:.0f} | {auto.steps}/{auto.planned_steps} "
            f"| {auto.tokens_per_second:.0f} | {plan.get('batch_size')}, "
            f"{plan.get('learning_rate', 0):.1e}, {plan.get('n_epochs')} |"
        )
        goals.append(
            (
                f"{name}: auto trains in <= {GOAL_TRAIN_SECONDS} s",
                auto.seconds <= GOAL_TRAIN_SECONDS,
            )
        )
        if hand:
            gap = hand.score - auto.score
            goals.append(
                (
                    f"{name}: auto within {GOAL_POINTS_BEHIND} points of hand-tuned ({gap:+.1f})",
                    gap <= GOAL_POINTS_BEHIND,
                )
            )
        if name == "extraction":
            goals.append(
                (
                    f"extraction: auto >= {GOAL_EXTRACTION}% exact JSON match",
                    auto.score >= GOAL_EXTRACTION,
                )
            )
    for goal, met in goals:
        print(f"{'MET ' if met else 'MISSED'} {goal}")


if __name__ == "__main__":
    main()
