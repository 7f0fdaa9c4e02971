"""Does an auto fine-tune of the built-in SmolLM2 learn to call tools? Base vs fine-tune,
through the API.

A seeded task: four tools whose arguments come from the request (track or cancel an order,
book a table, convert money), and requests that need no tool. ~300 training and ~60
held-out examples. The script runs the app on SQLite with its embedded worker, uploads the
training set, trains a local job with every hyperparameter on "auto", and asks the base
model and the fine-tune each held-out request through ``/v1/chat/completions`` with the
official ``openai`` SDK (``tools``, greedy). Replies are graded with the evaluations'
tool call match (same functions, same parsed arguments; no call where none is due).

Goal: the fine-tune scores >= 90% on held-out data. (What constrained decoding costs is
``benchmarks/constrained_overhead.py``'s figure.)

    python benchmarks/tool_calling.py            # ~30 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import openai
from fastapi.testclient import TestClient

from tuneforge.app import create_app
from tuneforge.config import Settings
from tuneforge.db.migrate import upgrade_to_head
from tuneforge.evals.graders import ToolCallMatch
from tuneforge.providers.chat_format import assistant_text
from tuneforge.store.base_models import DEFAULT_MODEL, pull_builtin_model

TRAIN_EXAMPLES = 300
HELD_OUT_EXAMPLES = 60
GOAL_SCORE = 90.0
MAX_REPLY_TOKENS = 64  # a call here is under 50 tokens; a rambling base model stops there
SYSTEM = "You are the assistant of a shop and restaurant. Use a tool when one fits."
REASONS = ["changed_mind", "too_late", "duplicate"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
CURRENCIES = ["EUR", "USD", "GBP", "JPY"]
RESTAURANTS = ["Luna", "Sakura", "El Toro", "Bistro 9", "Green Leaf", "Nordic"]


def _function(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            },
        },
    }


TOOLS = [
    _function("track_order", "Where an order is", {"order_id": {"type": "integer"}}),
    _function(
        "cancel_order",
        "Cancel an order",
        {"order_id": {"type": "integer"}, "reason": {"enum": REASONS}},
    ),
    _function(
        "book_table",
        "Reserve a table",
        {"restaurant": {"type": "string"}, "people": {"type": "integer"}, "day": {"enum": DAYS}},
    ),
    _function(
        "convert",
        "Convert money",
        {
            "amount": {"type": "number"},
            "source": {"enum": CURRENCIES},
            "target": {"enum": CURRENCIES},
        },
    ),
]
NAMES = ["Anna", "Ben", "Chloe", "Omar", "Mia", "Kenji", "Lea", "Sam", "Ivy", "Noah", "Rita"]
CHATTER = [
    ("Thanks, that is all! - {name}", "You're welcome, {name}! Have a nice day."),
    ("Hello there, I am {name}", "Hello {name}! How can I help you today?"),
    (
        "What can you do for me? ({name})",
        "I can track or cancel orders, book tables and convert money.",
    ),
]


def _request(rng: random.Random) -> tuple[str, dict[str, Any] | None, str | None]:
    """(user message, the call it needs or None, the plain reply when no call is due)."""
    kind = rng.randrange(5)
    order = rng.randrange(1000, 99999)
    if kind == 0:
        text = rng.choice(["Where is order {o}?", "Track my order {o} please", "Status of #{o}?"])
        return text.format(o=order), {"name": "track_order", "arguments": {"order_id": order}}, None
    if kind == 1:
        reason = rng.choice(REASONS)
        phrase = {"changed_mind": "I changed my mind", "too_late": "it is too late now",
                  "duplicate": "I ordered it twice"}[reason]  # fmt: skip
        call = {"name": "cancel_order", "arguments": {"order_id": order, "reason": reason}}
        return f"Cancel order {order}, {phrase}.", call, None
    if kind == 2:
        place, people, day = rng.choice(RESTAURANTS), rng.randrange(1, 9), rng.choice(DAYS)
        text = f"Book a table at {place} for {people} on {day.capitalize()}."
        call = {
            "name": "book_table",
            "arguments": {"restaurant": place, "people": people, "day": day},
        }
        return text, call, None
    if kind == 3:
        amount = rng.randrange(5, 2000)
        source, target = rng.sample(CURRENCIES, 2)
        call = {
            "name": "convert",
            "arguments": {"amount": amount, "source": source, "target": target},
        }
        return f"How much is {amount} {source} in {target}?", call, None
    prompt, reply = rng.choice(CHATTER)
    name = rng.choice(NAMES)
    return prompt.format(name=name), None, reply.format(name=name)


def examples(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(f"tools-{seed}")
    rows = []
    for index in range(count):
        prompt, call, reply = _request(rng)
        if call is None:
            answer: dict[str, Any] = {"role": "assistant", "content": reply}
        else:
            function = {"name": call["name"], "arguments": json.dumps(call["arguments"])}
            answer = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": f"call_{index}", "type": "function", "function": function}],
            }
        rows.append(
            {
                "tools": TOOLS,
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": prompt},
                    answer,
                ],
            }
        )
    return rows


def held_out(train: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen = {json.dumps(e["messages"][:-1]) for e in train}
    fresh = [
        e
        for e in examples(HELD_OUT_EXAMPLES * 3, seed=2)
        if json.dumps(e["messages"][:-1]) not in seen
    ]
    return fresh[:HELD_OUT_EXAMPLES]


def score(
    sdk: openai.OpenAI, model: str, test: list[dict[str, Any]], **options: Any
) -> tuple[float, float]:
    """(tool call match pass rate in %, generated tokens per second)."""
    grader, passed, tokens, started = ToolCallMatch(), 0, 0, time.perf_counter()
    for example in test:
        reply = sdk.chat.completions.create(
            model=model,
            messages=example["messages"][:-1],
            tools=example["tools"],
            temperature=0,
            max_tokens=MAX_REPLY_TOKENS,
            **options,
        )
        message = reply.choices[0].message
        got = assistant_text(
            {
                "content": message.content,
                "tool_calls": [c.model_dump() for c in message.tool_calls or ()],
            }
        )
        passed += grader.grade(got, assistant_text(example["messages"][-1])).passed
        tokens += reply.usage.completion_tokens if reply.usage else 0
    return 100.0 * passed / len(test), tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("var/bench-tools"))
    args = parser.parse_args()
    train = examples(TRAIN_EXAMPLES, seed=1)
    test = held_out(train)
    settings = Settings(data_dir=args.data_dir, database_url=f"sqlite:///{args.data_dir}/bench.db")
    settings.ensure_data_dir()
    upgrade_to_head(settings.resolved_database_url)
    pull_builtin_model(settings, DEFAULT_MODEL, print)
    with TestClient(create_app(settings)) as client:
        token = client.post(
            "/auth/register",
            json={
                "email": f"bench{time.time_ns()}@example.com",
                "password": "a long password",
                "name": "Bench",
                "organization_name": "Bench",
            },
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        key = client.post("/auth/api-keys", json={"name": "bench"}, headers=headers).json()["key"]
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client)
        content = "".join(json.dumps(row) + "\n" for row in train).encode()
        dataset = client.post(
            "/fine-tuning/datasets",
            files={"file": ("tools.jsonl", content)},
            data={"name": "tools", "model": DEFAULT_MODEL},
            headers=headers,
        ).json()
        print(f"{len(train)} training, {len(test)} held-out examples; dataset {dataset['id']}")
        base_score, auto_rate = score(sdk, DEFAULT_MODEL, test)
        print(f"base model: {base_score:.1f}% tool call match", flush=True)
        started = time.perf_counter()
        job = client.post(
            "/fine-tuning/jobs",
            json={"dataset_id": dataset["id"], "model": DEFAULT_MODEL, "provider": "local"},
            headers=headers,
        ).json()
        print(f"job {job['id']}: auto became {job['hyperparameters']}", flush=True)
        while (job := client.get(f"/fine-tuning/jobs/{job['id']}", headers=headers).json())[
            "status"
        ] not in ("succeeded", "failed", "cancelled"):
            time.sleep(2)
        seconds = time.perf_counter() - started
        if job["status"] != "succeeded":
            raise SystemExit(f"job {job['status']}: {job['error']}")
        tuned_score, tuned_rate = score(sdk, job["fine_tuned_model_id"], test)
    print(
        f"\n| model | tool call match (held-out) |\n| --- | ---: |\n"
        f"| base {DEFAULT_MODEL} | {base_score:.1f}% |\n| auto fine-tune | {tuned_score:.1f}% |\n"
    )
    print(
        f"training: {seconds:.0f} s wall; generation {auto_rate:.1f} tokens/s base, "
        f"{tuned_rate:.1f} fine-tune"
    )
    verdict = "met" if tuned_score >= GOAL_SCORE else "MISSED"
    print(f"goal >= {GOAL_SCORE:.0f}% tool call match: {verdict}")


if __name__ == "__main__":
    main()
