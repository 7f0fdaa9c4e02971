"""A local fine-tune on the real built-in SmolLM2, through the public API, proven on held-out data.

Upload a dataset without validation data, train on the local provider with a real
``Worker`` (trainer process and all), and let the worker run the before/after evaluation
the finished job queues for itself: greedy replies of the base model and of the
fine-tune to the examples the trainer held out, graded by JSON match. The fine-tune has
to beat its base on examples it never trained on, and the job page has to say so.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tests.fixtures.files import Upload, chat, jsonl
from tests.web.conftest import sign_in
from tuneforge.config import Settings
from tuneforge.store.base_models import pull_builtin_model
from tuneforge.worker.loop import Worker
from tuneforge.worker.runner import WorkerConfig

MODEL = "smollm2-135m-instruct"
CITIES = ["Paris", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Accra", "Bern", "Rome", "Dakar"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SYSTEM = "Extract the trip as JSON."

pytestmark = [
    pytest.mark.slow,  # the real model, a trainer process, generation
    pytest.mark.timeout(900),  # training and two models' replies: minutes on a busy 2-core machine
    pytest.mark.parametrize("migrated_database_url", ["sqlite"], indirect=True),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    pull_builtin_model(settings, MODEL, lambda _: None)
    return settings


def trips() -> bytes:
    pairs = list(itertools.product(CITIES, DAYS))
    random.Random(5).shuffle(pairs)
    return jsonl(
        *(
            chat(
                f"Book me a seat to {city} on {day}, please.",
                json.dumps({"destination": city, "day": day}),
                system=SYSTEM,
            )
            for city, day in pairs[:50]
        )
    )


def wait_until(client: TestClient, worker: Worker, url: str, account: Account) -> dict[str, Any]:
    deadline = time.monotonic() + 600
    while (body := client.get(url, headers=account.headers).json())["status"] not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, f"{url} still {body['status']}"
        if not worker.run_once():
            time.sleep(0.05)
    return body


def test_a_local_fine_tune_beats_its_base_on_the_examples_it_held_out(
    client: TestClient, app: FastAPI, settings: Settings, account: Account, upload: Upload
) -> None:
    dataset = upload(trips(), model=MODEL, name="trips").json()
    job = client.post(
        "/fine-tuning/jobs",
        json={
            "dataset_id": dataset["id"],
            "model": MODEL,
            "provider": "local",
            "hyperparameters": {
                "n_epochs": 3,
                "batch_size": 4,
                "learning_rate_multiplier": 4.0,
                "holdout_fraction": 0.2,
            },
        },
        headers=account.headers,
    )
    assert job.status_code == 201, job.text
    worker = Worker(
        app.state.session_factory,
        settings,
        config=WorkerConfig(in_worker_poll_seconds=0.2, idle_sleep_seconds=0.05),
    )

    done = wait_until(client, worker, f"/fine-tuning/jobs/{job.json()['id']}", account)
    assert done["status"] == "succeeded", done["error"]
    [evaluation] = client.get(f"/evals?job_id={done['id']}", headers=account.headers).json()[
        "items"
    ]
    assert evaluation["examples_total"] == 10  # 20% of 50 held out, never trained on
    assert evaluation["graders"][0]["type"] == "json_match"
    finished = wait_until(client, worker, f"/evals/{evaluation['id']}", account)

    assert finished["status"] == "succeeded", finished["error"]
    base, tuned = finished["summary"]
    assert (base["reference"], tuned["reference"]) == (MODEL, done["fine_tuned_model_id"])
    assert tuned["pass_rate"] >= 0.8 and tuned["pass_rate"] > base["pass_rate"], finished
    assert tuned["wins"] > tuned["losses"]
    page = sign_in(client, account).get(f"/dashboard/fine-tuning/jobs/{done['id']}")
    figure = f"held-out JSON match {base['pass_rate']:.0%} → {tuned['pass_rate']:.0%}"
    assert figure in page.text
