"""Training throughput: TuneForge's LoRA trainer against a plain ``transformers.Trainer``.

Both train the same LoRA configuration on the same chat examples (same model, epochs,
batch size, learning-rate schedule, optimizer and clipping), each in a fresh process so
peak memory is its own. The baseline uses the standard padding collator
(``DataCollatorForSeq2Seq``), the model's own loss, and gradient accumulation over
``--hf-micro-batch`` examples per forward (a whole batch at once runs out of memory).
Ours packs each step's examples into rows and runs the LM head on assistant tokens only.

Reported per trainer: real-token throughput (the examples' tokens, padding excluded,
times epochs, over the training loop's wall time, and over its CPU time, which a busy
machine disturbs far less), peak RSS of its process, and the final loss, measured the
same way for both: mean assistant-token loss of the trained model on held-out examples.
The examples are a deterministic synthetic chat set with realistic, widely varying
lengths (or ``--data FILE`` in OpenAI chat JSONL).

    python benchmarks/train_throughput.py                 # SmolLM2-135M from the store
    python benchmarks/train_throughput.py --tiny          # the tests' tiny Llama, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_WORD_TEXT = (
    "model data train agent user answer question system token batch loss step value "
    "order account invoice refund shipping delivery package address customer support "
    "ticket issue error update version release feature request review change deploy "
    "server network latency memory storage query index table report metric chart the "
    "a an of to in for on with and or but if then when please thanks could would should"
)
WORDS = _WORD_TEXT.split()


def synthetic_chats(count: int, seed: int) -> list[dict[str, Any]]:
    """Support-style conversations: 1-3 turns, prompt and answer lengths log-normal."""
    rng = random.Random(seed)

    def text(mean_words: float) -> str:
        n = max(2, int(rng.lognormvariate(math.log(mean_words), 0.8)))
        sentence = [rng.choice(WORDS) for _ in range(n)]
        return " ".join(sentence).capitalize() + "."

    chats = []
    for _ in range(count):
        messages: list[dict[str, str]] = []
        if rng.random() < 0.6:
            messages.append({"role": "system", "content": text(25)})
        for _turn in range(rng.choice((1, 1, 2, 3))):
            messages.append({"role": "user", "content": text(30)})
            messages.append({"role": "assistant", "content": text(60)})
        chats.append({"messages": messages})
    return chats


def run_ours(args: argparse.Namespace, train: list[dict], work: Path) -> dict[str, Any]:
    from tuneforge.providers.local import trainer
    from tuneforge.providers.local.jobdir import (
        JobPaths,
        JobSpec,
        parse_local_hyperparameters,
        read_events,
        write_spec,
    )

    paths = JobPaths(work / "job")
    paths.root.mkdir(parents=True)
    paths.train_file.write_text("".join(json.dumps(c) + "\n" for c in train))
    hyperparameters = parse_local_hyperparameters(
        {
            **shared_hyperparameters(args),
            **({"micro_batch_tokens": args.micro_batch_tokens} if args.micro_batch_tokens else {}),
            "checkpoint_every_steps": 10**9,
            # The same work as the baseline: every example trained, every epoch, no
            # held-out evaluations along the way.
            "holdout_fraction": 0.0,
            "early_stopping_patience": 0,
        }
    )
    write_spec(
        paths,
        JobSpec(
            job_id="bench",
            base_model="bench",
            base_model_path=str(args.model_dir),
            hyperparameters=hyperparameters.model_dump(),
            seed=args.seed,
            has_validation=False,
        ),
    )
    # CPU time from the end of loading (model, tokenization) to the end of training.
    build_run, loaded = trainer.build_run, []

    def timed_build(*args: Any) -> Any:
        run = build_run(*args)
        loaded.append(time.process_time())
        return run

    trainer.build_run = timed_build
    if trainer.run_training(paths, lambda: False) != "succeeded":
        raise RuntimeError(f"training failed; see {paths.progress}")
    cpu_seconds = time.process_time() - loaded[0]
    events = read_events(paths.progress, 0)[0]
    started = next(e for e in events if e["type"] == "started")
    last_step = [e for e in events if e["type"] == "metrics"][-1]
    seconds = _seconds_between(started["created_at"], last_step["created_at"])
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "adapter": str(paths.adapter)}


def run_hf(args: argparse.Namespace, train: list[dict], work: Path) -> dict[str, Any]:
    import torch
    from peft import get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from tuneforge.providers.local.data import IGNORE_INDEX, encode_dataset

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    encoded = encode_dataset(tokenizer, train, args.max_seq_length).examples
    rows = [
        {
            "input_ids": e.input_ids,
            "attention_mask": [1] * e.length,
            "labels": [IGNORE_INDEX, *e.targets[:-1]],  # the model shifts labels itself
        }
        for e in encoded
    ]
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    torch.manual_seed(args.seed)
    model = get_peft_model(model, lora_config(args))
    if args.batch_size % args.hf_micro_batch:
        raise SystemExit("--batch-size must be a multiple of --hf-micro-batch")
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(work / "hf"),
            per_device_train_batch_size=args.hf_micro_batch,
            gradient_accumulation_steps=args.batch_size // args.hf_micro_batch,
            num_train_epochs=args.epochs,
            learning_rate=2e-4 * args.lr_multiplier,
            lr_scheduler_type="linear",
            warmup_steps=args.warmup_ratio,  # a float below 1 is a ratio here
            weight_decay=0.0,
            max_grad_norm=1.0,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            use_cpu=True,
            seed=args.seed,
            dataloader_num_workers=0,
            bf16=args.hf_bf16,
        ),
        train_dataset=rows,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True),
        processing_class=tokenizer,
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    adapter = work / "hf-adapter"
    model.save_pretrained(adapter)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "adapter": str(adapter)}


def shared_hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "n_epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate_multiplier": args.lr_multiplier,
        "lora_r": args.lora_r,
        "lora_alpha": 2.0 * args.lora_r,
        "lora_dropout": args.lora_dropout,
        "max_seq_length": args.max_seq_length,
        "warmup_ratio": args.warmup_ratio,
    }


def lora_config(args: argparse.Namespace) -> Any:
    from peft import LoraConfig

    hp = shared_hyperparameters(args)
    return LoraConfig(
        r=hp["lora_r"],
        lora_alpha=hp["lora_alpha"],
        lora_dropout=hp["lora_dropout"],
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )


def heldout_loss(args: argparse.Namespace, adapter: str, heldout: list[dict]) -> float:
    """Mean assistant-token loss of base + adapter on ``heldout``; identical for both runs."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.providers.local.data import encode_dataset, pack_examples
    from tuneforge.providers.local.modeling import AssistantTokenLoss

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    examples = encode_dataset(tokenizer, heldout, args.max_seq_length).examples
    base = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    loss = AssistantTokenLoss(PeftModel.from_pretrained(base, adapter).eval())
    total, count = 0.0, 0
    with torch.no_grad():
        for index, example in enumerate(examples):
            batch = pack_examples(examples, [index])
            loss_sum, _ = loss(
                batch.input_ids, batch.position_ids, batch.targets, batch.segment_lengths
            )
            total += float(loss_sum)
            count += example.n_targets
    return total / count


def child(args: argparse.Namespace) -> None:
    """One trainer in this process; prints its result as JSON."""
    import torch

    from tuneforge.providers.local.data import encode_dataset

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    chats = load_chats(args)
    train, heldout = chats[: args.examples], chats[args.examples :]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result = (run_ours if args.child == "ours" else run_hf)(args, train, Path(tmp))
        peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        loss = heldout_loss(args, result["adapter"], heldout)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    tokens = encode_dataset(tokenizer, train, args.max_seq_length).total_tokens * args.epochs
    print(
        json.dumps(
            {
                "trainer": args.child,
                "tokens": tokens,
                "seconds": result["seconds"],
                "tokens_per_second": tokens / result["seconds"],
                "tokens_per_cpu_second": tokens / result["cpu_seconds"],
                "peak_rss_mib": peak_rss_mib,
                "heldout_loss": loss,
            }
        )
    )


def load_chats(args: argparse.Namespace) -> list[dict[str, Any]]:
    needed = args.examples + args.heldout
    if args.data:
        lines = Path(args.data).read_text().splitlines()
        chats = [json.loads(line) for line in lines if line.strip()]
        if len(chats) < needed:
            raise SystemExit(f"{args.data} has {len(chats)} examples; {needed} are needed")
        return chats[:needed]
    return synthetic_chats(needed, args.seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, help="HF model dir (default: SmolLM2 store)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny Llama, quick")
    parser.add_argument("--data", help="OpenAI chat JSONL to use instead of synthetic chats")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--heldout", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr-multiplier", type=float, default=1.0)
    parser.add_argument("--warmup-ratio", type=float, default=0.03)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-dropout", type=float, default=0.0)
    parser.add_argument("--max-seq-length", type=int, default=1024)
    parser.add_argument("--micro-batch-tokens", type=int, help="default: the trainer's")
    parser.add_argument(
        "--hf-micro-batch",
        type=int,
        default=2,
        help="examples per Trainer forward (gradient accumulation makes up --batch-size); "
        "8 padded chats of up to 1024 tokens with full-vocabulary logits exceed 24 GiB",
    )
    parser.add_argument(
        "--hf-bf16",
        action="store_true",
        help="give the Trainer bf16 mixed precision too (ours uses it where the CPU has bf16)",
    )
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="alternate the trainers N times")
    parser.add_argument("--child", choices=("ours", "hf"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        if args.tiny:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root
            from tests.fixtures.tiny_model import build_tiny_model

            args.model_dir = build_tiny_model(Path(tmp) / "tiny")
        elif args.model_dir is None:
            from tuneforge.config import get_settings
            from tuneforge.store.base_models import DEFAULT_MODEL, find_model_dir

            args.model_dir = find_model_dir(get_settings(), DEFAULT_MODEL)
            if args.model_dir is None:
                raise SystemExit("SmolLM2 is not in the store: run `tuneforge models pull`")
        results: dict[str, list[dict[str, Any]]] = {"ours": [], "hf": []}
        for _ in range(args.repeat):
            for trainer in ("ours", "hf"):
                results[trainer].append(run_child(trainer, sys.argv[1:], args.model_dir))
                print(json.dumps(results[trainer][-1]), flush=True)
    report(results)


def run_child(trainer: str, argv: list[str], model_dir: Path) -> dict[str, Any]:
    argv = [a for a in argv if a != "--tiny"]
    command = [sys.executable, __file__, *argv, "--model-dir", str(model_dir), "--child", trainer]
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",  # as the worker starts the trainer
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{trainer} failed with code {done.returncode}:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict[str, list[dict[str, Any]]]) -> None:
    def median(trainer: str, key: str) -> float:
        values = sorted(r[key] for r in results[trainer])
        return values[len(values) // 2]

    columns = (
        ("tokens/s", "tokens_per_second", ".1f"),
        ("tokens/CPU-s", "tokens_per_cpu_second", ".1f"),
        ("peak RSS MiB", "peak_rss_mib", ".0f"),
        ("held-out loss", "heldout_loss", ".4f"),
    )
    print(f"{'trainer':<22}" + "".join(f"{title:>15}" for title, _, _ in columns))
    names = {"ours": "tuneforge", "hf": "transformers.Trainer"}
    for trainer in ("ours", "hf"):
        cells = "".join(f"{median(trainer, key):>15{fmt}}" for _, key, fmt in columns)
        print(f"{names[trainer]:<22}{cells}")
    for title, key, _ in columns[:3]:
        print(f"{title} ratio (tuneforge / Trainer): {median('ours', key) / median('hf', key):.2f}")


def _seconds_between(start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


if __name__ == "__main__":
    main()
