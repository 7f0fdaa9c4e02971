"""Dataset validation throughput and memory: TuneForge's validator against the cookbook way.

Generates a chat JSONL file (deterministic; shared system prompts, varied lengths, a few
invalid lines and duplicates), then validates it twice, each in a fresh subprocess so that
peak RSS is measured separately:

- baseline: what OpenAI's "Data preparation and analysis for chat model fine-tuning"
  notebook does: every line ``json.loads``-ed into a list, its format checks, tokens counted
  per message value with the tiktoken-compatible o200k_base encoder from bpe-openai
  (``len(enc.encode(value))``), distributions with numpy;
- ours: ``read_examples`` + ``ReportBuilder`` over the whole file, exactly what the datasets
  service runs, which also computes duplicates, overlap, truncation and cost.

Both must count the same tokens; the script checks it and exits 1 when they differ. Wall
and CPU seconds are both printed: on a shared machine CPU time is the steadier ratio. Run:
``python benchmarks/validate_throughput.py --mb 100``.

``--api sqlite postgresql`` measures end to end instead: for each database, a fresh
``tuneforge serve`` on a migrated data dir receives the file twice through
``POST /fine-tuning/datasets`` (the first upload also starts the fork server the check pool
comes from), each timed from the first byte sent to the 201 that carries the report; the
server's memory growth (its whole process tree) is sampled meanwhile, as PSS, which counts
a page shared by the server, the fork server and the pool's workers once, and as the sum of
RSS, which counts it in each (an upper bound). The baseline runs in the same invocation,
and the ratio to it is printed with the goal's verdict: at least 2x the baseline, memory
growth (PSS) under 300 MB.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import serving

MODEL = "gpt-4o-mini-2024-07-18"
GOAL_RATIO = 2.0
GOAL_MEMORY_MB = 300.0
ENCODING = "o200k_base"
CONTEXT_LENGTH = 65_536

_SYLLABLES = "ka lo mi ne ru ta shi en an re co de pro ver ing tion al ly ous ment ex pe ri"
_COMMON = (
    "the of and to in is you that it for on with as are this be at have from or one had by "
    "word but not what all were we when your can said there use an each which she do how "
    "their if will up other about out many then them these so some her would make like him "
    "into time has look two more write go see number no way could people my than first water "
    "order refund shipping account password model dataset token customer agent please thanks"
)


def _corpus(rng: random.Random, chars: int) -> str:
    """Text to slice message contents from: words, numbers, punctuation, some non-ASCII."""
    syllables = _SYLLABLES.split()
    words = _COMMON.split()
    words += ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(3_000)]
    words += ["café", "naïve", "日本語", "Straße", "😀", "données", "привет"]
    pieces: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(words)
        if rng.random() < 0.04:
            word = str(rng.randint(0, 100_000))
        separator = rng.choices([" ", ", ", ". ", "\n", "!\n\n- "], [80, 8, 8, 3, 1])[0]
        pieces.append(word + separator)
        size += len(word) + len(separator)
    return "".join(pieces)


def _length(rng: random.Random) -> int:
    return max(1, min(20_000, int(rng.lognormvariate(5.3, 1.1))))


def generate(path: Path, megabytes: float, seed: int = 1234) -> int:
    """Write about ``megabytes`` MB of chat JSONL; returns the number of lines."""
    rng = random.Random(seed)
    corpus = _corpus(rng, 4_000_000)
    systems = [corpus[i * 5_000 : i * 5_000 + rng.randint(200, 3_000)] for i in range(30)]

    def text() -> str:
        start = rng.randrange(len(corpus) - 20_000)
        return corpus[start : start + _length(rng)]

    target = int(megabytes * 1_000_000)
    written = lines = 0
    previous = ""
    previous_messages: list[dict[str, Any]] = []
    with path.open("w", encoding="utf-8") as file:
        while written < target:
            roll = rng.random()
            if roll < 0.005 and previous:
                line = previous
            elif roll < 0.008 and previous_messages:
                shouted = [
                    {**message, "content": message["content"].upper() + " !"}
                    for message in previous_messages
                ]
                line = json.dumps({"messages": shouted}, ensure_ascii=False)
            elif roll < 0.018:
                line = _invalid_line(rng, text())
            else:
                messages: list[dict[str, Any]] = []
                if rng.random() < 0.85:
                    system = systems[min(int(rng.paretovariate(1.2)) - 1, len(systems) - 1)]
                    messages.append({"role": "system", "content": system})
                for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4])):
                    user: dict[str, Any] = {"role": "user", "content": text()}
                    if rng.random() < 0.05:
                        user["name"] = rng.choice(["alice", "bob", "carol"])
                    messages.append(user)
                    messages.append({"role": "assistant", "content": text()})
                line = json.dumps({"messages": messages}, ensure_ascii=False)
                previous_messages = messages
            previous = line
            file.write(line + "\n")
            written += len(line.encode()) + 1
            lines += 1
    return lines


def _invalid_line(rng: random.Random, content: str) -> str:
    kind = rng.randrange(5)
    good = [{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}]
    if kind == 0:
        return json.dumps({"messages": good})[:-7]
    if kind == 1:
        return json.dumps({"messages": good[:1]})
    if kind == 2:
        return json.dumps({"messages": [{"role": "bot", "content": content}, good[1]]})
    if kind == 3:
        return json.dumps({"messages": [good[0], {"role": "assistant", "content": ""}]})
    return json.dumps({"messages": [{**good[0], "mood": "happy"}, good[1]]})


def _distribution(values: list[int]) -> dict[str, float]:
    import numpy as np

    return {
        "min": min(values),
        "max": max(values),
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "p5": float(np.quantile(values, 0.05)),
        "p95": float(np.quantile(values, 0.95)),
    }


def run_baseline(path: Path) -> dict[str, Any]:
    """The cookbook notebook's steps, made to survive invalid lines."""
    import bpe_openai

    encoding = bpe_openai.get_encoding(ENCODING)
    started, started_cpu = time.perf_counter(), time.process_time()
    dataset = []
    lines = 0
    with path.open(encoding="utf-8") as file:
        for line in file:
            if line.strip():
                lines += 1
                try:
                    dataset.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    format_errors: dict[str, int] = defaultdict(int)
    valid = []
    for example in dataset:
        before = sum(format_errors.values())
        if not isinstance(example, dict):
            format_errors["data_type"] += 1
            continue
        messages = example.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(
                k not in ("role", "content", "name", "function_call", "weight") for k in message
            ):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1
        if sum(format_errors.values()) == before:
            valid.append(example)

    def num_tokens_from_messages(messages: list[dict[str, Any]]) -> int:
        num_tokens = 0
        for message in messages:
            num_tokens += 3
            for key, value in message.items():
                num_tokens += len(encoding.encode(value))
                if key == "name":
                    num_tokens += 1
        return num_tokens + 3

    def num_assistant_tokens_from_messages(messages: list[dict[str, Any]]) -> int:
        return sum(
            len(encoding.encode(message["content"]))
            for message in messages
            if message["role"] == "assistant"
        )

    n_messages = [len(example["messages"]) for example in valid]
    convo_lens = [num_tokens_from_messages(example["messages"]) for example in valid]
    assistant_lens = [num_assistant_tokens_from_messages(example["messages"]) for example in valid]
    stats = [_distribution(n_messages), _distribution(convo_lens), _distribution(assistant_lens)]
    too_long = sum(length > CONTEXT_LENGTH for length in convo_lens)
    n_epochs = 3
    if len(valid) * 3 < 100:
        n_epochs = min(25, 100 // len(valid))
    elif len(valid) * 3 > 25_000:
        n_epochs = max(1, 25_000 // len(valid))
    billed = sum(min(CONTEXT_LENGTH, length) for length in convo_lens)
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - started_cpu,
        "examples": lines,
        "valid": len(valid),
        "total_tokens": sum(convo_lens),
        "assistant_tokens": sum(assistant_lens),
        "summary": [stats[1]["mean"], too_long, n_epochs, billed],
    }


def run_ours(path: Path) -> dict[str, Any]:
    from tuneforge.config import Settings
    from tuneforge.datasets.parsing import detect_format, read_examples
    from tuneforge.datasets.tokens import token_counter_for
    from tuneforge.datasets.validation import ReportBuilder
    from tuneforge.providers.catalog import find_base_model, training_price_per_million

    settings = Settings()
    model = find_base_model(MODEL, settings)
    counter = token_counter_for(model)
    started, started_cpu = time.perf_counter(), time.process_time()
    with path.open("rb") as file:
        fmt = detect_format(path.name, file.read(65_536))
    builder = ReportBuilder(
        model=model,
        counter=counter,
        price_per_million=training_price_per_million(MODEL, settings),
    )
    assistant_tokens = 0
    for raw in read_examples(path, fmt):
        assistant_tokens += builder.add(raw).assistant_token_count
    report = builder.finish()
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - started_cpu,
        "examples": report.total_examples,
        "valid": report.valid_examples,
        "total_tokens": report.total_tokens,
        "assistant_tokens": assistant_tokens,
        "summary": [
            report.tokens_per_example.mean if report.tokens_per_example else 0,
            report.over_context_limit.count,
            report.n_epochs,
            report.billed_tokens_per_epoch,
        ],
        "error_counts": report.error_counts,
        "exact_duplicates": report.exact_duplicates.count,
        "near_duplicates": report.near_duplicates.count,
    }


def run_api(path: Path, kind: str, uploads: int) -> list[dict[str, Any]]:
    """Upload ``path`` ``uploads`` times to a fresh server on a ``kind`` database."""
    results = []
    with serving.temporary_data_dir() as directory:
        data_dir = Path(directory)
        with serving.database(kind, data_dir) as url, serving.served(url, data_dir) as server:
            headers = serving.register(server.url)
            for _ in range(uploads):
                with serving.TreeMemory(server.process.pid) as memory, path.open("rb") as file:
                    started = time.perf_counter()
                    response = httpx.post(
                        f"{server.url}/fine-tuning/datasets",
                        headers=headers,
                        files={"file": (path.name, file, "application/jsonl")},
                        data={"name": "benchmark", "model": MODEL},
                        timeout=600,
                    )
                    seconds = time.perf_counter() - started
                response.raise_for_status()
                body = response.json()
                results.append(
                    {
                        "seconds": seconds,
                        "examples": body["total_examples"],
                        "valid": body["valid_examples"],
                        "total_tokens": body["total_tokens"],
                        "memory_mb": memory.growth_mb,
                    }
                )
    return results


def _child(kind: str, path: Path) -> None:
    result = (run_baseline if kind == "baseline" else run_ours)(path)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _measure(kind: str, path: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--file", str(path)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def report_api(
    size_mb: float, baseline: dict[str, Any], api: dict[str, list[dict[str, Any]]]
) -> None:
    """One line per upload against the baseline; the goal's verdict; exit 1 on a miscount."""
    base_rate = size_mb / baseline["seconds"]
    print(
        f"baseline: {baseline['seconds']:6.2f} s ({baseline['cpu_seconds']:6.2f} s CPU)  "
        f"{base_rate:6.1f} MB/s  valid {baseline['valid']}  tokens {baseline['total_tokens']}"
    )
    same = True
    for kind, uploads in api.items():
        for number, upload in enumerate(uploads, 1):
            rate = size_mb / upload["seconds"]
            rss, pss = upload["memory_mb"]
            ratio = rate / base_rate
            verdict = "PASS" if ratio >= GOAL_RATIO and pss < GOAL_MEMORY_MB else "FAIL"
            print(
                f"API {kind:>10} upload {number}: {upload['seconds']:6.2f} s  {rate:6.1f} MB/s  "
                f"{ratio:4.2f}x baseline  server memory growth PSS {pss:4.0f} MB "
                f"(RSS sum {rss:4.0f} MB)  valid {upload['valid']}  "
                f"tokens {upload['total_tokens']}  goal (>= {GOAL_RATIO:g}x, "
                f"< {GOAL_MEMORY_MB:g} MB): {verdict}"
            )
            same &= (upload["valid"], upload["total_tokens"]) == (
                baseline["valid"],
                baseline["total_tokens"],
            )
    print(f"same valid examples and tokens as the baseline: {same}")
    if not same:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0, help="size of the generated file")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--api",
        nargs="+",
        choices=["sqlite", "postgresql"],
        help="end to end through the API of a fresh server on these databases",
    )
    parser.add_argument("--uploads", type=int, default=2, help="per database, with --api")
    parser.add_argument("--child", choices=["baseline", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.file)
        return
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "chat.jsonl"
        lines = generate(path, args.mb, args.seed)
        size_mb = path.stat().st_size / 1_000_000
        print(f"file: {size_mb:.1f} MB, {lines} lines")
        if args.api:
            baseline = _measure("baseline", path)
            api = {kind: run_api(path, kind, args.uploads) for kind in args.api}
            report_api(size_mb, baseline, api)
            return
        results = {kind: _measure(kind, path) for kind in ("baseline", "ours")}
    for kind, result in results.items():
        seconds = result["seconds"]
        print(
            f"{kind:>8}: {seconds:6.2f} s ({result['cpu_seconds']:6.2f} s CPU)  "
            f"{size_mb / seconds:6.1f} MB/s  {result['examples'] / seconds:8.0f} examples/s  "
            f"peak RSS {result['peak_rss_mb']:6.1f} MB  "
            f"valid {result['valid']}  tokens {result['total_tokens']}"
        )
    baseline, ours = results["baseline"], results["ours"]
    print(
        f"ours also found: errors {ours['error_counts']}, exact duplicates "
        f"{ours['exact_duplicates']}, near duplicates {ours['near_duplicates']}"
    )
    same = (
        all(baseline[key] == ours[key] for key in ("valid", "total_tokens", "assistant_tokens"))
        and baseline["summary"] == ours["summary"]
    )
    print(f"same token counts and estimates as the baseline: {same}")
    print(
        f"throughput ratio ours/baseline: {baseline['seconds'] / ours['seconds']:.2f}x "
        f"(CPU time: {baseline['cpu_seconds'] / ours['cpu_seconds']:.2f}x)"
    )
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
