"""The provider as the worker drives it: real trainer child processes on a tiny model."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.providers.local.factories import chat_examples, write_jsonl
from tuneforge.config import Settings
from tuneforge.errors import InvalidInput
from tuneforge.providers.contract import (
    ProviderError,
    ProviderEvent,
    ProviderJobRequest,
    ProviderJobState,
    ProviderJobStatus,
    RetriableProviderError,
)
from tuneforge.providers.local.jobdir import job_paths, read_status
from tuneforge.providers.local.provider import LocalProvider
from tuneforge.providers.registry import get_provider
from tuneforge.store.base_models import register_local_model

FINISHED = {ProviderJobState.SUCCEEDED, ProviderJobState.FAILED, ProviderJobState.CANCELLED}
FAST = {"lora_r": 8, "lora_alpha": 64, "learning_rate_multiplier": 10.0, "warmup_ratio": 0.0}


@pytest.fixture
def provider(local_settings: Settings, tiny_model_dir: Path) -> LocalProvider:
    register_local_model(local_settings, tiny_model_dir, "tiny-llama")
    return LocalProvider(local_settings)


def job_request(
    provider: LocalProvider,
    tmp_path: Path,
    job_id: str,
    hyperparameters: dict,
    *,
    n_train: int = 32,
    n_valid: int = 0,
) -> ProviderJobRequest:
    train = write_jsonl(tmp_path / f"{job_id}-train.jsonl", chat_examples(n_train))
    valid = write_jsonl(tmp_path / f"{job_id}-valid.jsonl", chat_examples(n_valid, seed=9))
    return ProviderJobRequest(
        idempotency_key=job_id,
        base_model="tiny-llama",
        training_file_id=provider.upload_training_file(train, idempotency_key=f"{job_id}-t"),
        validation_file_id=(
            provider.upload_training_file(valid, idempotency_key=f"{job_id}-v") if n_valid else None
        ),
        hyperparameters={**FAST, **hyperparameters},
        suffix=None,
        seed=3,
        metadata={},
    )


def wait_for(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def wait_finished(
    provider: LocalProvider, job_id: str, timeout: float = 180.0
) -> ProviderJobStatus:
    statuses: list[ProviderJobStatus] = []
    wait_for(
        lambda: statuses.append(provider.get_status(job_id)) or statuses[-1].status in FINISHED,
        timeout,
    )
    return statuses[-1]


def metric_steps(events: list[ProviderEvent]) -> list[int]:
    return [e.metrics[0].step for e in events if e.event_type == "metrics"]


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def holds_open(path: Path) -> bool:
    """Whether a trainer process has ``path`` open (it is then waiting for the lock)."""
    for process in psutil.process_iter(["cmdline"]):
        if str(path.parent) in " ".join(process.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                return any(f.path == str(path) for f in process.open_files())
    return False


def test_registry_builds_the_local_provider(local_settings: Settings) -> None:
    provider = get_provider("local", local_settings)
    assert provider.name == "local"
    assert provider.runs_in_worker


def test_ensure_configured_names_the_pull_command_when_the_store_is_empty(
    local_settings: Settings,
) -> None:
    with pytest.raises(InvalidInput, match="tuneforge models pull smollm2-135m-instruct"):
        LocalProvider(local_settings).ensure_configured()


def test_create_job_rejects_unknown_models_and_bad_hyperparameters(
    provider: LocalProvider, tmp_path: Path
) -> None:
    request = job_request(provider, tmp_path, "bad", {"lora_r": 0})
    with pytest.raises(ProviderError) as bad_hp:
        provider.create_job(request)
    assert bad_hp.value.code == "invalid_hyperparameters"
    request = job_request(provider, tmp_path, "bad2", {})
    unknown = ProviderJobRequest(**{**request.__dict__, "base_model": "nope"})
    with pytest.raises(ProviderError) as missing:
        provider.create_job(unknown)
    assert missing.value.code == "model_not_found"
    assert "tuneforge models pull nope" in str(missing.value)


@pytest.mark.slow
def test_a_job_runs_to_success_with_events_metrics_checkpoints_and_a_loadable_adapter(
    provider: LocalProvider, local_settings: Settings, tmp_path: Path, tiny_model_dir: Path
) -> None:
    request = job_request(
        provider,
        tmp_path,
        "ok",
        {"n_epochs": 2, "batch_size": 8, "checkpoint_every_steps": 2},
        n_valid=8,
    )
    assert provider.find_job("ok") is None
    assert provider.create_job(request) == "ok"
    assert provider.find_job("ok") == "ok"
    status = wait_finished(provider, "ok")

    assert status.status == ProviderJobState.SUCCEEDED, status
    assert status.fine_tuned_model == "ft:tiny-llama:tuneforge::ok"
    assert status.progress_percentage == 100.0
    assert status.trained_tokens and status.trained_tokens > 0
    events = provider.list_events("ok", after=None)
    assert [int(e.provider_event_id) for e in events] == list(range(1, len(events) + 1))
    assert metric_steps(events) == list(range(0, 9))  # step 0: the base model
    last = events[-1]
    assert last.event_type == "finished"
    assert provider.list_events("ok", after=last.provider_event_id) == []
    assert provider.list_events("ok", after=events[3].provider_event_id) == events[4:]
    final_metrics = {m.name for m in events[-2].metrics}
    assert {"train_loss", "valid_loss", "valid_mean_token_accuracy"} <= final_metrics
    assert [c.step for c in provider.list_checkpoints("ok")] == [2, 4, 6]
    # Asking again (a retried create) neither restarts nor duplicates the job.
    assert provider.create_job(request) == "ok"
    assert read_status(job_paths(local_settings, "ok"))["attempt"] == 1

    files = provider.servable_files(status.fine_tuned_model, request.base_model)
    assert files is not None
    base_dir, adapter_dir = files.base_path, files.adapter_path
    assert base_dir == tiny_model_dir.resolve()
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    PeftModel.from_pretrained(base, adapter_dir)


@pytest.mark.slow
def test_a_killed_trainer_fails_the_attempt_and_create_job_resumes_from_its_checkpoint(
    provider: LocalProvider, local_settings: Settings, tmp_path: Path
) -> None:
    request = job_request(
        provider, tmp_path, "kill", {"n_epochs": 6, "batch_size": 4, "checkpoint_every_steps": 3}
    )
    provider.create_job(request)
    paths = job_paths(local_settings, "kill")
    wait_for(lambda: bool(provider.list_checkpoints("kill")))
    os.kill(read_status(paths)["pid"], signal.SIGKILL)
    status = wait_finished(provider, "kill")
    assert status.status == ProviderJobState.FAILED
    assert status.error_code == "trainer_crashed"
    assert "signal 9" in (status.error_message or "")
    saved = provider.list_checkpoints("kill")[-1].step

    provider.create_job(request)
    assert wait_finished(provider, "kill").status == ProviderJobState.SUCCEEDED

    events = provider.list_events("kill", after=None)
    resumed = [e for e in events if e.event_type == "resumed"]
    assert len(resumed) == 1 and f"step-{saved}" in resumed[0].message
    assert metric_steps(events) == list(range(0, 49))
    assert read_status(paths)["attempt"] == 2


WORKER_SCRIPT = """
import json, sys, time
from tuneforge.config import Settings
from tuneforge.providers.contract import ProviderJobRequest
from tuneforge.providers.local.provider import LocalProvider
provider = LocalProvider(Settings(data_dir=sys.argv[1]))
provider.create_job(ProviderJobRequest(**json.loads(sys.argv[2])))
time.sleep(600)
"""


@pytest.mark.slow
def test_a_killed_worker_takes_its_trainer_along_and_the_next_worker_resumes(
    provider: LocalProvider, local_settings: Settings, tmp_path: Path
) -> None:
    request = job_request(
        provider, tmp_path, "orphan", {"n_epochs": 6, "batch_size": 4, "checkpoint_every_steps": 3}
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WORKER_SCRIPT,
            str(local_settings.data_dir),
            json.dumps(request.__dict__),
        ]
    )
    paths = job_paths(local_settings, "orphan")
    try:
        wait_for(lambda: bool(provider.list_checkpoints("orphan")))
        trainer_pid = read_status(paths)["pid"]
        worker.kill()
        worker.wait()
        wait_for(lambda: process_gone(trainer_pid), timeout=10)
    finally:
        worker.kill()

    assert provider.find_job("orphan") is None
    with pytest.raises(RetriableProviderError) as detached:
        provider.get_status("orphan")
    assert detached.value.code == "trainer_detached"
    provider.create_job(request)
    assert wait_finished(provider, "orphan").status == ProviderJobState.SUCCEEDED
    events = provider.list_events("orphan", after=None)
    assert [e.event_type for e in events].count("resumed") == 1
    assert metric_steps(events) == list(range(0, 49))


@pytest.mark.slow
def test_cancel_stops_the_trainer_within_seconds(
    provider: LocalProvider, local_settings: Settings, tmp_path: Path
) -> None:
    request = job_request(provider, tmp_path, "stop", {"n_epochs": 50, "batch_size": 4})
    provider.create_job(request)
    paths = job_paths(local_settings, "stop")
    wait_for(lambda: (read_status(paths) or {}).get("step", 0) >= 2)
    trainer_pid = read_status(paths)["pid"]

    started = time.monotonic()
    provider.cancel("stop")
    assert provider.get_status("stop").status in (
        ProviderJobState.CANCELLING,
        ProviderJobState.CANCELLED,
    )
    status = wait_finished(provider, "stop", timeout=30)
    elapsed = time.monotonic() - started

    assert status.status == ProviderJobState.CANCELLED
    assert elapsed < 10
    wait_for(lambda: process_gone(trainer_pid), timeout=5)
    assert provider.list_events("stop", after=None)[-1].event_type == "cancelled"
    assert provider.find_job("stop") == "stop"
    provider.create_job(request)  # a cancelled job is not restarted
    assert provider.get_status("stop").status == ProviderJobState.CANCELLED


@pytest.mark.slow
def test_two_torchrun_processes_train_like_one(provider: LocalProvider, tmp_path: Path) -> None:
    common = {"n_epochs": 2, "batch_size": 8, "lora_dropout": 0.0}
    for job_id, processes in (("one", 1), ("two", 2)):
        provider.create_job(
            job_request(
                provider, tmp_path, job_id, {**common, "num_processes": processes}, n_valid=8
            )
        )
    for job_id in ("one", "two"):
        assert wait_finished(provider, job_id, timeout=240).status == ProviderJobState.SUCCEEDED

    def losses(job_id: str) -> dict[str, list[float]]:
        by_name: dict[str, list[float]] = {"train_loss": [], "valid_loss": []}
        for event in provider.list_events(job_id, after=None):
            for metric in event.metrics:
                if metric.name in by_name:
                    by_name[metric.name].append(metric.value)
        return by_name

    one, two = losses("one"), losses("two")
    assert len(one["train_loss"]) == 8
    # Sums in another order on other thread counts: equal to float32 noise, not bit for bit.
    assert one["train_loss"] == pytest.approx(two["train_loss"], rel=1e-3)
    assert one["valid_loss"] == pytest.approx(two["valid_loss"], rel=1e-3)


@pytest.mark.slow
def test_a_trainer_waits_while_another_process_holds_the_job(
    provider: LocalProvider, local_settings: Settings, tmp_path: Path
) -> None:
    paths = job_paths(local_settings, "locked")
    paths.root.mkdir(parents=True)
    with (paths.root / "trainer.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # an older trainer, still dying
        provider.create_job(job_request(provider, tmp_path, "locked", {"n_epochs": 1}))
        wait_for(lambda: holds_open(paths.root / "trainer.lock"))
        time.sleep(1)
        assert read_status(paths)["state"] == "starting"
        assert not paths.progress.exists()
    assert wait_finished(provider, "locked").status == ProviderJobState.SUCCEEDED
