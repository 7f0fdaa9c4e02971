"""A DPO job through the API and a real worker: on top of a fine-tune, with the tiny model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.fixtures.api import Account
from tests.fixtures.files import Upload, jsonl
from tests.providers.local.factories import preference_examples
from tuneforge.config import Settings
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.providers.local.jobdir import job_paths
from tuneforge.worker.loop import Worker
from tuneforge.worker.runner import WorkerConfig

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("installed_tiny_model", "one_cpu_thread")]

HYPERPARAMETERS = {
    "n_epochs": 2,
    "batch_size": 8,
    "learning_rate_multiplier": 10.0,
    "lora_r": 4,
    "lora_alpha": 32,
    "warmup_ratio": 0.0,
}


def wait_for_job(client: TestClient, worker: Worker, job_id: str, account: Account) -> Any:
    deadline = time.monotonic() + 300
    url = f"/fine-tuning/jobs/{job_id}"
    while (job := client.get(url, headers=account.headers).json())["status"] not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, f"job still {job['status']}"
        if not worker.run_once():
            time.sleep(0.05)
    return job


def test_a_dpo_job_on_a_fine_tune_trains_and_makes_a_servable_model(
    client: TestClient,
    app: FastAPI,
    settings: Settings,
    account: Account,
    upload: Upload,
    fine_tuned: FineTunedModel,
    tiny_model_dir: Path,
) -> None:
    dataset = upload(jsonl(*preference_examples(40)), filename="pairs.jsonl").json()
    assert dataset["kind"] == "preference", dataset
    created = client.post(
        "/fine-tuning/jobs",
        headers=account.headers,
        json={
            "dataset_id": dataset["id"],
            "model": fine_tuned.id,
            "method": {"type": "dpo", "dpo": {"hyperparameters": HYPERPARAMETERS}},
        },
    )
    assert created.status_code == 201, created.text
    worker = Worker(
        app.state.session_factory,
        settings,
        config=WorkerConfig(in_worker_poll_seconds=0.1, idle_sleep_seconds=0.05),
    )

    job = wait_for_job(client, worker, created.json()["id"], account)

    assert job["status"] == "succeeded", job["error"]
    assert job["parent_model"] == fine_tuned.name and job["method"]["type"] == "dpo"
    metrics = client.get(
        f"/fine-tuning/jobs/{job['id']}/metrics",
        headers=account.headers,
        params={"name": ["valid_loss", "valid_reward_accuracy"]},
    ).json()["data"]
    losses = [p["value"] for p in metrics if p["name"] == "valid_loss"]
    assert min(losses) < losses[0]
    accuracies = [p["value"] for p in metrics if p["name"] == "valid_reward_accuracy"]
    assert accuracies[0] == 0.5  # step 0: the policy is its reference, every pair ties
    paths = job_paths(settings, job["id"])
    spec = json.loads(paths.spec.read_text())
    assert spec["method"] == "dpo" and Path(spec["parent_adapter"]).is_dir()
    # The model serves on the plain base: the fine-tune's rank 4 and the run's 4 in one.
    model = client.get(
        f"/fine-tuning/models/{job['fine_tuned_model_id']}", headers=account.headers
    ).json()
    config = json.loads((paths.adapter / "adapter_config.json").read_text())
    assert config["r"] == 8 and model["base_model"] == fine_tuned.base_model
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    PeftModel.from_pretrained(base, paths.adapter)
