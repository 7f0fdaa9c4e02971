"""One user's whole journey through the public HTTP API, on SQLite and PostgreSQL.

Register, create an API key (used for everything after), upload and validate a JSONL
dataset, start an OpenAI job, let a real ``Worker`` run it against the local fake of
OpenAI's fine-tuning API until it succeeds, read the job, its events and metrics, find
the model it created, and deploy that model to a new agent.

What it does not exercise: serving the model. TuneForge serves local models only, and
``/v1/chat/completions`` refuses OpenAI-hosted ones, so no usage can be recorded through
the API for this model; the test checks that refusal, and that the deployment shows on
the model and in the dashboard stats (with no usage this month) instead. Local training
and serving have their own tests under ``tests/providers/local`` and ``tests/inference``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.fakes.openai_server import FakeOpenAI
from tests.fixtures.files import valid_jsonl
from tuneforge.config import Settings
from tuneforge.worker.loop import Worker
from tuneforge.worker.runner import WorkerConfig

MODEL = "gpt-4o-mini-2024-07-18"
FAST = WorkerConfig(in_worker_poll_seconds=0.01, idle_sleep_seconds=0.01)


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_openai: FakeOpenAI) -> Settings:
    """The shared test settings, with the openai provider pointed at the fake and polled
    without delay; the test drives its own worker, so the embedded one stays off."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        jwt_secret="test-signing-key-that-is-long-enough-for-hs256",
        embedded_worker=False,
        polling_interval_seconds=0.0,
        **fake_openai.settings_overrides,
    )


def run_worker_until_done(
    client: TestClient, worker: Worker, job_url: str, headers: dict[str, str]
) -> dict[str, Any]:
    """Let the worker take due jobs until the API shows the job finished (or 30 s pass)."""
    deadline = time.monotonic() + 30
    job = client.get(job_url, headers=headers).json()
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job still {job['status']} after 30 s"
        if not worker.run_once():
            time.sleep(0.01)
        job = client.get(job_url, headers=headers).json()
    return job


def test_upload_train_on_openai_and_deploy(
    app: FastAPI, client: TestClient, settings: Settings, fake_openai: FakeOpenAI
) -> None:
    fake_openai.set_steps_per_phase(validating_files=1, queued=1, running=3)
    registered = client.post(
        "/auth/register",
        json={
            "email": "e2e@example.com",
            "password": "correct horse battery",
            "name": "End To End",
            "organization_name": "E2E Org",
        },
    )
    assert registered.status_code == 201, registered.text
    jwt = {"Authorization": f"Bearer {registered.json()['access_token']}"}
    created_key = client.post("/auth/api-keys", json={"name": "ci"}, headers=jwt)
    assert created_key.status_code == 201, created_key.text
    auth = {"Authorization": f"Bearer {created_key.json()['key']}"}

    uploaded = client.post(
        "/fine-tuning/datasets",
        headers=auth,
        files={"file": ("support.jsonl", valid_jsonl(12), "application/octet-stream")},
        data={"name": "Support answers", "model": MODEL},
    )
    assert uploaded.status_code == 201, uploaded.text
    dataset_id = uploaded.json()["id"]
    validated = client.post(
        f"/fine-tuning/datasets/{dataset_id}/validate", json={"model": MODEL}, headers=auth
    )
    assert validated.status_code == 200, validated.text
    assert (validated.json()["status"], validated.json()["valid_examples"]) == ("valid", 12)

    created = client.post(
        "/fine-tuning/jobs",
        json={"dataset_id": dataset_id, "model": MODEL, "provider": "openai", "suffix": "e2e"},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    job_url = f"/fine-tuning/jobs/{created.json()['id']}"
    assert created.json()["status"] == "pending"

    worker = Worker(app.state.session_factory, settings, "e2e-worker", FAST)
    job = run_worker_until_done(client, worker, job_url, auth)
    assert job["status"] == "succeeded", job
    assert job["fine_tuned_model"].startswith(f"ft:{MODEL}:tuneforge:e2e:")
    assert job["progress_percentage"] == 100.0 and job["trained_tokens"] > 0
    assert "train_loss" in job["latest_metrics"]
    events = client.get(f"{job_url}/events", params={"limit": 100}, headers=auth).json()
    statuses = [e["data"]["to"] for e in events["data"] if e["type"] == "status"]
    assert statuses[0] == "succeeded" and "running" in statuses  # newest first
    metrics = client.get(f"{job_url}/metrics", params={"name": "train_loss"}, headers=auth)
    assert len(metrics.json()["data"]) == 3  # one point per running poll of the fake

    models = client.get("/fine-tuning/models", headers=auth).json()
    assert [m["id"] for m in models["items"]] == [job["fine_tuned_model_id"]]
    model = models["items"][0]
    assert (model["provider"], model["provider_model_id"]) == ("openai", job["fine_tuned_model"])

    agent = client.post("/agents", json={"name": "Support bot", "model": MODEL}, headers=auth)
    assert agent.status_code == 201, agent.text
    deployed = client.post(
        f"/fine-tuning/models/{model['id']}/deploy",
        json={"agent_id": agent.json()["id"]},
        headers=auth,
    )
    assert deployed.status_code == 200, deployed.text
    shown = client.get(f"/fine-tuning/models/{model['id']}", headers=auth).json()
    assert [a["id"] for a in shown["deployed_agents"]] == [agent.json()["id"]]

    completion = client.post(
        "/v1/chat/completions",
        json={"model": model["id"], "messages": [{"role": "user", "content": "Hi"}]},
        headers=auth,
    )
    assert completion.status_code == 422, completion.text
    assert "hosted by openai" in completion.text

    stats = client.get("/fine-tuning/stats", headers=auth).json()
    assert stats["jobs"]["by_status"]["succeeded"] == 1
    assert stats["models"] == {"total": 1, "active": 1, "archived": 0, "deployed": 1}
    assert stats["trained_tokens"] == job["trained_tokens"]
    assert stats["usage_this_month"]["requests"] == 0
