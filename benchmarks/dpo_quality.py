"""Does DPO teach a house style? SmolLM2, a supervised step, then DPO on preference pairs.

The task (seeded, in this file): a travel company's support replies. Every reply's facts
are a pure function of the question; the house style wraps them: it opens with
"Happy to help!" and signs off with "— Tuna Support". In one run, on the built-in SmolLM2:

1. a supervised job on plain replies (the facts, no style), as TuneForge trains one: the
   local provider's child process, "auto" hyperparameters;
2. a DPO job on top of that fine-tune (the supervised model is the reference), on pairs
   whose preferred reply has the house style and whose other reply lacks all or part of it,
   with held-out pairs as its validation file;
3. on the held-out pairs, the reward accuracy (the share of pairs whose preferred reply gets
   the higher implicit reward, beta * log(policy / reference)) before DPO (the policy is the
   reference: every pair ties, 50%) and after, computed here from the served files; and on
   the held-out prompts, the preferred-style rate of greedy generations before and after.

Goals (2-core CPU): held-out reward accuracy >= 90% after DPO, and the style rate clearly up
(from the supervised model's, and to at least 80%). Both jobs run on "auto".

    python benchmarks/dpo_quality.py            # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from tuneforge.config import Settings
from tuneforge.providers.contract import AUTO_BETA, ProviderJobRequest, ProviderJobState
from tuneforge.providers.local.data import IGNORE_INDEX
from tuneforge.providers.local.dpo import encode_pairs
from tuneforge.providers.local.jobdir import job_paths, read_status
from tuneforge.providers.local.provider import LocalProvider
from tuneforge.store.base_models import DEFAULT_MODEL, pull_builtin_model

SYSTEM = "You are the support assistant of Tuna Travel. Answer in one or two sentences."
GREETING = "Happy to help!"
SIGN_OFF = "— Tuna Support"
STYLE = re.compile(rf"^{re.escape(GREETING)} .+ {re.escape(SIGN_OFF)}$", re.DOTALL)
SFT_EXAMPLES = 240
PAIRS = 240
HELD_OUT = 48
MAX_REPLY_TOKENS = 64
GENERATION_BATCH = 8
GOAL_REWARD_ACCURACY = 0.90
GOAL_STYLE_RATE = 0.80
FINISHED = {ProviderJobState.SUCCEEDED, ProviderJobState.FAILED, ProviderJobState.CANCELLED}

CITIES = ["Lisbon", "Oslo", "Rome", "Vienna", "Dublin", "Prague", "Athens", "Madrid", "Riga"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
FARES = {"Light": 0, "Classic": 1, "Flex": 2, "Business": 3}


def _code(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(2)) + str(
        rng.randint(1000, 9999)
    )


def _question(rng: random.Random) -> tuple[str, str]:
    """A customer question and its plain answer (the facts, no house style)."""
    kind = rng.randrange(4)
    if kind == 0:
        fare, bags = rng.choice(list(FARES.items()))
        return (
            f"How many bags can I check on a {fare} fare?",
            f"A {fare} fare includes {bags} checked bag{'s' if bags != 1 else ''} of up to 23 kg.",
        )
    if kind == 1:
        code, day, fee = _code(rng), rng.choice(DAYS), rng.choice([30, 45, 60, 75])
        return (
            f"Can I move booking {code} to {day}?",
            f"Yes, booking {code} can move to {day} for a fee of {fee} euros.",
        )
    if kind == 2:
        code, days = _code(rng), rng.choice([3, 5, 7, 10])
        return (
            f"When will I get the refund for booking {code}?",
            f"The refund for booking {code} reaches your card within {days} business days.",
        )
    city, hours = rng.choice(CITIES), rng.choice([24, 36, 48])
    return (
        f"When can I choose my seat on the flight to {city}?",
        f"Seat selection for the flight to {city} opens {hours} hours before departure.",
    )


def styled(answer: str) -> str:
    return f"{GREETING} {answer} {SIGN_OFF}"


def _not_styled(rng: random.Random, answer: str) -> str:
    """What breaks the house style: no greeting and no sign-off, or one of the two missing."""
    return rng.choice([answer, answer, f"{GREETING} {answer}", f"{answer} {SIGN_OFF}"])


def _prompt(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def task(seed: int, count: int, seen: set[str]) -> list[tuple[str, str]]:
    """``count`` (question, plain answer) pairs whose questions are not in ``seen``."""
    rng = random.Random(f"tuna-{seed}")
    rows: list[tuple[str, str]] = []
    while len(rows) < count:
        question, answer = _question(rng)
        if question not in seen:
            seen.add(question)
            rows.append((question, answer))
    return rows


def sft_examples(rows: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"messages": [*_prompt(q), {"role": "assistant", "content": a}]} for q, a in rows]


def preference_pairs(rows: list[tuple[str, str]], seed: int) -> list[dict[str, Any]]:
    rng = random.Random(f"pairs-{seed}")
    return [
        {
            "input": {"messages": _prompt(q)},
            "preferred_output": [{"role": "assistant", "content": styled(a)}],
            "non_preferred_output": [{"role": "assistant", "content": _not_styled(rng, a)}],
        }
        for q, a in rows
    ]


def train(
    settings: Settings,
    job_id: str,
    rows: list[dict[str, Any]],
    work: Path,
    *,
    method: str = "supervised",
    validation: list[dict[str, Any]] | None = None,
    parent_model: str | None = None,
) -> tuple[Path, dict[str, Any], float]:
    """Run a local job to the end; its final adapter, status and wall seconds."""
    provider = LocalProvider(settings)
    files = {}
    for kind, lines in (("train", rows), ("valid", validation)):
        if lines:
            path = work / f"{job_id}-{kind}.jsonl"
            path.write_text("".join(json.dumps(line) + "\n" for line in lines))
            files[kind] = provider.upload_training_file(path, idempotency_key=f"{job_id}-{kind}")
    started = time.perf_counter()
    provider.create_job(
        ProviderJobRequest(
            idempotency_key=job_id,
            base_model=DEFAULT_MODEL,
            training_file_id=files["train"],
            validation_file_id=files.get("valid"),
            hyperparameters={},
            suffix="bench",
            seed=0,
            metadata={},
            method=method,
            parent_model=parent_model,
        )
    )
    while (status := provider.get_status(job_id)).status not in FINISHED:
        time.sleep(1.0)
    if status.status != ProviderJobState.SUCCEEDED:
        raise RuntimeError(f"{job_id} ended {status.status}: {status.error_message}")
    paths = job_paths(settings, job_id)
    return paths.adapter, read_status(paths) or {}, time.perf_counter() - started


def load(base: Path, adapter: Path) -> tuple[Any, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base)
    return PeftModel.from_pretrained(model, adapter).eval(), tokenizer


@torch.no_grad()
def sequence_log_probs(model: Any, tokenizer: PreTrainedTokenizerBase, pairs: list[dict]) -> Any:
    """[pairs, 2] summed log-probabilities of each pair's (preferred, other) reply."""
    encoded = encode_pairs(tokenizer, pairs, 2048)
    values = []
    for pair in encoded.pairs:
        row = []
        for example in (pair.chosen, pair.rejected):
            logits = model(input_ids=torch.tensor([example.input_ids])).logits[0].float()
            log_probs = torch.log_softmax(logits, dim=-1)
            targets = torch.tensor(example.targets)
            keep = targets != IGNORE_INDEX
            row.append(float(log_probs[keep].gather(1, targets[keep, None]).sum()))
        values.append(row)
    return torch.tensor(values)


def reward_accuracy(policy: Any, reference: Any, beta: float) -> float:
    """The share of pairs whose preferred reply has the higher implicit reward (ties half)."""
    rewards = beta * (policy - reference)
    margins = rewards[:, 0] - rewards[:, 1]
    return float(((margins > 0).float() + 0.5 * (margins == 0).float()).mean())


@torch.no_grad()
def style_rate(model: Any, tokenizer: PreTrainedTokenizerBase, questions: list[str]) -> float:
    """The share of greedy replies in the house style, and a few of them shown."""
    tokenizer.padding_side = "left"
    replies: list[str] = []
    for start in range(0, len(questions), GENERATION_BATCH):
        texts = [
            tokenizer.apply_chat_template(_prompt(q), tokenize=False, add_generation_prompt=True)
            for q in questions[start : start + GENERATION_BATCH]
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        output = model.generate(
            **batch,
            max_new_tokens=MAX_REPLY_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
        new = output[:, batch["input_ids"].shape[1] :]
        replies += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    for reply in replies[:3]:
        print(f"    {reply!r}", flush=True)
    return sum(bool(STYLE.match(reply)) for reply in replies) / len(replies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("var/bench-dpo"))
    args = parser.parse_args()
    settings = Settings(data_dir=args.data_dir)
    base = pull_builtin_model(settings, DEFAULT_MODEL, print)
    seen: set[str] = set()
    held_out = task(seed=3, count=HELD_OUT, seen=seen)
    sft_rows = task(seed=1, count=SFT_EXAMPLES, seen=seen)
    pair_rows = task(seed=2, count=PAIRS, seen=seen)
    held_out_pairs = preference_pairs(held_out, seed=3)
    questions = [q for q, _ in held_out]
    stamp = time.strftime("%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sft_adapter, _, sft_seconds = train(
            settings, f"tuna-sft-{stamp}", sft_examples(sft_rows), work
        )
        print(f"supervised step: {sft_seconds:.0f} s", flush=True)
        sft, tokenizer = load(base, sft_adapter)
        print("supervised model, held-out replies:", flush=True)
        style_before = style_rate(sft, tokenizer, questions)
        reference = sequence_log_probs(sft, tokenizer, held_out_pairs)
        del sft
        dpo_adapter, status, dpo_seconds = train(
            settings,
            f"tuna-dpo-{stamp}",
            preference_pairs(pair_rows, seed=2),
            work,
            method="dpo",
            validation=held_out_pairs,
            parent_model=str(sft_adapter),
        )
    plan = status.get("plan", {})
    dpo, tokenizer = load(base, dpo_adapter)
    print("after DPO, held-out replies:", flush=True)
    style_after = style_rate(dpo, tokenizer, questions)
    policy = sequence_log_probs(dpo, tokenizer, held_out_pairs)
    accuracy_before = reward_accuracy(reference, reference, AUTO_BETA)  # the job's auto beta
    accuracy_after = reward_accuracy(policy, reference, AUTO_BETA)
    report(
        accuracy_before,
        accuracy_after,
        style_before,
        style_after,
        sft_seconds,
        dpo_seconds,
        status,
        plan,
    )


def report(
    accuracy_before: float,
    accuracy_after: float,
    style_before: float,
    style_after: float,
    sft_seconds: float,
    dpo_seconds: float,
    status: dict[str, Any],
    plan: dict[str, Any],
) -> None:
    print("\n| held-out | supervised model (before DPO) | after DPO |")
    print("| --- | ---: | ---: |")
    print(f"| reward accuracy | {accuracy_before:.1%} | {accuracy_after:.1%} |")
    print(f"| preferred-style rate | {style_before:.1%} | {style_after:.1%} |")
    print(
        f"\nsupervised job {sft_seconds:.0f} s; DPO job {dpo_seconds:.0f} s, "
        f"{status.get('step')} of {plan.get('total_steps')} steps (best step "
        f"{status.get('best_step')}), batch {plan.get('batch_size')}, "
        f"learning rate {plan.get('learning_rate', 0):.1e}, {plan.get('n_epochs')} epochs"
    )
    goals = [
        (
            f"held-out reward accuracy >= {GOAL_REWARD_ACCURACY:.0%}",
            accuracy_after >= GOAL_REWARD_ACCURACY,
        ),
        (
            f"style rate up from {style_before:.0%} to >= {GOAL_STYLE_RATE:.0%}",
            style_after >= GOAL_STYLE_RATE and style_after > style_before,
        ),
    ]
    for goal, met in goals:
        print(f"{'MET ' if met else 'MISSED'} {goal}")


if __name__ == "__main__":
    sys.exit(main())
