"""OpenAI's fine-tuning API served by TuneForge, driven by the official ``openai`` SDK with
only ``base_url`` and ``api_key`` changed: files, jobs (create, poll, events, checkpoints,
list by metadata, cancel, pause and resume), then the fine-tune answering chat completions.

Every response is also parsed with the SDK's own pydantic types, validating, so a missing or
mistyped field fails here rather than in a user's script.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai.types import FileObject
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint
from pydantic import BaseModel

from tests.fixtures.files import chat, jsonl
from tests.fixtures.tiny_model import TINY_BASE_MODEL
from tuneforge.config import Settings

pytestmark = pytest.mark.usefixtures("installed_tiny_model", "one_cpu_thread")

TERMINAL = ("succeeded", "failed", "cancelled")
# Tiny-model knobs (the local provider's own, passed through OpenAI's hyperparameters).
LOCAL = {"lora_r": 8, "lora_alpha": 64, "warmup_ratio": 0.0, "early_stopping_patience": 0}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The app with its embedded worker, as ``tuneforge serve`` runs it."""
    return settings.model_copy(update={"embedded_worker": True})


def training_file() -> io.BytesIO:
    examples = [chat(f"Colour {i}?", f"Blue {i}.") for i in range(24)]
    return io.BytesIO(jsonl(*examples))


def raw(response: Any) -> Any:
    return response.http_response.json()


def typed(model: type[BaseModel], body: dict[str, Any]) -> BaseModel:
    """Validating parse with the SDK's type: a missing or mistyped field raises (the SDK's
    own calls build their objects without validating)."""
    return model.model_validate(body)


def wait_for(
    job_id: str, sdk: openai.OpenAI, done: Callable[[FineTuningJob], bool]
) -> FineTuningJob:
    deadline = time.monotonic() + 300
    while not done(job := sdk.fine_tuning.jobs.retrieve(job_id)):
        assert time.monotonic() < deadline, f"job {job_id} still {job.status}"
        time.sleep(0.2)
    return job


def create(sdk: openai.OpenAI, file_id: str, run: str, **knobs: Any) -> FineTuningJob:
    hyperparameters = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 5.0}
    return sdk.fine_tuning.jobs.create(
        model=TINY_BASE_MODEL,
        training_file=file_id,
        suffix=f"sdk-{run}",
        seed=7,
        metadata={"run": run},
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {**hyperparameters, **LOCAL, **knobs}},
        },
    )


@pytest.mark.slow  # trainer processes and generation
def test_the_sdk_trains_pauses_cancels_and_serves_a_fine_tune(sdk: openai.OpenAI) -> None:
    uploaded = sdk.files.with_raw_response.create(
        file=("colours.jsonl", training_file()), purpose="fine-tune"
    )
    file = typed(FileObject, raw(uploaded))
    assert isinstance(file, FileObject)
    assert (file.status, file.purpose, file.filename) == ("processed", "fine-tune", "colours.jsonl")
    assert sdk.files.retrieve(file.id).bytes == file.bytes
    assert sdk.files.content(file.id).read() == training_file().getvalue()
    assert [f.id for f in sdk.files.list(purpose="fine-tune")] == [file.id]

    job = create(sdk, file.id, "a")
    assert job.status == "validating_files" and job.seed == 7
    assert job.method is not None and job.method.type == "supervised"
    cancelled = create(sdk, file.id, "b")
    cancelled = sdk.fine_tuning.jobs.cancel(cancelled.id)
    assert cancelled.status == "cancelled"

    done = wait_for(job.id, sdk, lambda j: j.status in TERMINAL)
    assert done.status == "succeeded", done.error
    body = raw(sdk.fine_tuning.jobs.with_raw_response.retrieve(job.id))
    typed(FineTuningJob, body)
    assert re.fullmatch(
        rf"ft:{TINY_BASE_MODEL}:org-\d+:sdk-a:{job.id}", done.fine_tuned_model or ""
    )
    assert done.trained_tokens and done.finished_at and done.organization_id
    [results_id] = done.result_files
    results = typed(FileObject, raw(sdk.files.with_raw_response.retrieve(results_id)))
    assert isinstance(results, FileObject) and results.purpose == "fine-tune-results"
    rows = sdk.files.content(results_id).read().decode().splitlines()
    assert rows[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert len(rows) > 2 and rows[-1].split(",")[1]  # a train loss on the last step

    events = raw(sdk.fine_tuning.jobs.with_raw_response.list_events(job.id, limit=100))["data"]
    for event in events:
        typed(FineTuningJobEvent, event)
    metrics = [e for e in events if e["type"] == "metrics"]
    assert metrics, [e["message"] for e in events]
    assert {"step", "train_loss", "train_mean_token_accuracy", "total_steps"} <= set(
        metrics[0]["data"]
    )
    older = sdk.fine_tuning.jobs.list_events(job.id, after=events[0]["id"], limit=100)
    assert [e.id for e in older.data] == [e["id"] for e in events[1:]]

    checkpoints = raw(sdk.fine_tuning.jobs.checkpoints.with_raw_response.list(job.id))["data"]
    assert checkpoints
    for checkpoint in checkpoints:
        typed(FineTuningJobCheckpoint, checkpoint)
    newest = checkpoints[0]
    assert newest["fine_tuned_model_checkpoint"] == (
        f"{done.fine_tuned_model}:ckpt-step-{newest['step_number']}"
    )
    assert newest["metrics"]["train_loss"] is not None

    listed = sdk.fine_tuning.jobs.list(metadata={"run": "a"})
    assert [j.id for j in listed.data] == [job.id]
    assert {j.id for j in sdk.fine_tuning.jobs.list().data} == {job.id, cancelled.id}

    for model in (done.fine_tuned_model, newest["fine_tuned_model_checkpoint"]):
        reply = sdk.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Colour 3?"}],
            temperature=0,
            max_tokens=4,
        )
        assert reply.choices[0].message.content is not None
    served = {m.id for m in sdk.models.list()}
    assert {done.fine_tuned_model, newest["fine_tuned_model_checkpoint"]} <= served

    long_run = create(sdk, file.id, "c", n_epochs=40, batch_size=1)  # 960 steps: time to pause
    wait_for(long_run.id, sdk, lambda j: j.status == "running" and bool(j.trained_tokens))
    pausing = sdk.fine_tuning.jobs.pause(long_run.id)
    assert pausing.status in ("running", "paused")
    paused = wait_for(long_run.id, sdk, lambda j: j.status in ("paused", *TERMINAL))
    assert paused.status == "paused"
    paused_at = sdk.fine_tuning.jobs.checkpoints.list(long_run.id).data[0].step_number
    assert sdk.fine_tuning.jobs.resume(long_run.id).status == "queued"
    finished = wait_for(long_run.id, sdk, lambda j: j.status in TERMINAL)
    assert finished.status == "succeeded", finished.error
    messages = [e.message for e in sdk.fine_tuning.jobs.list_events(long_run.id, limit=100)]
    assert f"Training paused at step {paused_at}" in messages
    assert any(m.startswith(f"Resumed from checkpoint step-{paused_at}") for m in messages)


def test_other_purposes_and_methods_are_refused_naming_the_parameter(
    sdk: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.files.create(file=("a.jsonl", training_file()), purpose="batch")
    assert refused.value.param == "purpose"

    file = sdk.files.create(file=("a.jsonl", training_file()), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.fine_tuning.jobs.create(
            model=TINY_BASE_MODEL,
            training_file=file.id,
            method={"type": "reinforcement", "reinforcement": {}},  # type: ignore[typeddict-item]
        )
    assert refused.value.param == "method.type"

    # DPO trains on preference pairs; this file holds chat examples.
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.fine_tuning.jobs.create(
            model=TINY_BASE_MODEL,
            training_file=file.id,
            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}},
        )
    assert refused.value.param == "training_file"
    assert "preference" in refused.value.message

    with pytest.raises(openai.BadRequestError) as refused:
        sdk.fine_tuning.jobs.create(model=TINY_BASE_MODEL, training_file="file-missing")
    assert refused.value.param == "training_file"

    with pytest.raises(openai.BadRequestError) as refused:
        sdk.fine_tuning.jobs.create(model="no-such-model", training_file=file.id)
    assert refused.value.param == "model"


def test_a_file_that_fails_validation_is_refused_at_job_creation(sdk: openai.OpenAI) -> None:
    broken = jsonl(chat("Hi?", "Hello."), "{not json", {"messages": [{"role": "user"}]})
    file = sdk.files.create(file=("broken.jsonl", io.BytesIO(broken)), purpose="fine-tune")
    assert file.status == "error"
    assert file.status_details is not None and "line 2" in file.status_details

    with pytest.raises(openai.BadRequestError) as refused:
        sdk.fine_tuning.jobs.create(model=TINY_BASE_MODEL, training_file=file.id)
    assert refused.value.param == "training_file"
    assert "line 2" in refused.value.message

    deleted = sdk.files.delete(file.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(file.id)


def test_another_organizations_files_and_jobs_are_not_found(
    sdk: openai.OpenAI, live_server: str, client: Any, other_account: Any
) -> None:
    file = sdk.files.create(file=("a.jsonl", training_file()), purpose="fine-tune")
    response = client.post("/auth/api-keys", json={"name": "x"}, headers=other_account.headers)
    other = openai.OpenAI(base_url=f"{live_server}/v1", api_key=response.json()["key"])
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(file.id)
    with pytest.raises(openai.BadRequestError):
        other.fine_tuning.jobs.create(model=TINY_BASE_MODEL, training_file=file.id)
    assert other.files.list().data == []
