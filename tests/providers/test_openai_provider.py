"""The openai provider against a real local HTTP fake of OpenAI, through the real SDK."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tuneforge.config import Settings
from tuneforge.errors import InvalidInput
from tuneforge.providers.contract import (
    FineTuningProvider,
    ProviderError,
    ProviderJobRequest,
    ProviderJobState,
    ProviderJobStatus,
    RetriableProviderError,
)
from tuneforge.providers.openai import OpenAIProvider, _retry_after_header
from tuneforge.providers.registry import get_provider

BASE_MODEL = "gpt-4o-mini-2024-07-18"
CLIENT_TIMEOUT = 0.5
S = ProviderJobState


@pytest.fixture
def settings(fake_openai: FakeOpenAI, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", **fake_openai.settings_overrides)


@pytest.fixture
def provider(settings: Settings) -> OpenAIProvider:
    return OpenAIProvider(settings, timeout_seconds=CLIENT_TIMEOUT)


@pytest.fixture
def training_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    example = {
        "messages": [
            {"role": "user", "content": "Where is my order?"},
            {"role": "assistant", "content": "It ships tomorrow."},
        ]
    }
    path.write_text("\n".join(json.dumps(example) for _ in range(10)) + "\n")
    return path


def _request(
    training_file_id: str,
    *,
    key: str = "job-1",
    validation_file_id: str | None = None,
) -> ProviderJobRequest:
    return ProviderJobRequest(
        idempotency_key=key,
        base_model=BASE_MODEL,
        training_file_id=training_file_id,
        validation_file_id=validation_file_id,
        hyperparameters={"n_epochs": 2, "batch_size": None, "lora_rank": 8},
        suffix="support",
        seed=7,
        metadata={"organization_id": "org-1"},
    )


def _start_job(
    provider: OpenAIProvider, path: Path, *, key: str = "job-1", validation: bool = False
) -> str:
    file_id = provider.upload_training_file(path, idempotency_key=key)
    validation_id = (
        provider.upload_training_file(path, idempotency_key=f"{key}-validation")
        if validation
        else None
    )
    return provider.create_job(_request(file_id, key=key, validation_file_id=validation_id))


def _poll_to_end(provider: OpenAIProvider, job_id: str) -> list[ProviderJobStatus]:
    seen = []
    for _ in range(500):
        status = provider.get_status(job_id)
        seen.append(status)
        if status.status in (S.SUCCEEDED, S.FAILED, S.CANCELLED):
            return seen
    raise AssertionError("job never finished")


def test_provider_is_registered_and_offers_openai_models(settings: Settings) -> None:
    provider: FineTuningProvider = get_provider("openai", settings)
    assert isinstance(provider, OpenAIProvider)
    assert (provider.name, provider.runs_in_worker) == ("openai", False)
    models = provider.list_base_models()
    assert BASE_MODEL in {model.name for model in models}
    assert {model.provider for model in models} == {"openai"}


def test_full_lifecycle_maps_every_status(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, training_file: Path
) -> None:
    fake_openai.set_steps_per_phase(validating_files=2, queued=1, running=3)
    job_id = _start_job(provider, training_file)

    seen = _poll_to_end(provider, job_id)

    assert [s.status for s in seen] == [
        S.VALIDATING_FILES,
        S.QUEUED,
        S.RUNNING,
        S.RUNNING,
        S.RUNNING,
        S.SUCCEEDED,
    ]
    running = seen[2]
    assert running.estimated_finish is not None
    assert running.estimated_finish.tzinfo is not None
    assert running.estimated_finish > datetime.now(UTC) - timedelta(seconds=5)
    final = seen[-1]
    assert final.raw_status == "succeeded"
    assert final.fine_tuned_model == f"ft:{BASE_MODEL}:tuneforge:support:{job_id[6:]}"
    assert final.trained_tokens and final.trained_tokens > 0
    assert final.error_code is None and final.estimated_finish is None


def test_create_sends_supervised_method_metadata_and_uploaded_file(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, training_file: Path
) -> None:
    job_id = _start_job(provider, training_file, key="job-42")

    (upload,) = fake_openai.files
    assert upload["filename"] == "tuneforge-job-42-train.jsonl"
    assert fake_openai.file_content(upload["id"]) == training_file.read_bytes()
    (create,) = fake_openai.requests_for("jobs.create")
    assert create.body == {
        "model": BASE_MODEL,
        "training_file": upload["id"],
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        "metadata": {"organization_id": "org-1", "tuneforge_job_id": "job-42"},
        "suffix": "support",
        "seed": 7,
    }
    assert [job["id"] for job in fake_openai.jobs] == [job_id]


def test_metrics_events_become_step_metrics_with_total_steps(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, training_file: Path
) -> None:
    job_id = _start_job(provider, training_file, validation=True)
    _poll_to_end(provider, job_id)

    events = provider.list_events(job_id, after=None)

    assert events[0].message == f"Created fine-tuning job: {job_id}"
    assert events[-1].message == "The job has successfully completed"
    metrics_events = [event for event in events if event.event_type == "metrics"]
    assert [event.data["step"] for event in metrics_events if event.data] == [10, 20, 30]
    assert all(event.data and event.data["total_steps"] == 30 for event in metrics_events)
    first = {metric.name: metric for metric in metrics_events[0].metrics}
    assert set(first) == {
        "train_loss",
        "train_mean_token_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
    }
    assert first["train_loss"].step == 10
    last = {metric.name: metric.value for metric in metrics_events[-1].metrics}
    assert "full_valid_loss" in last
    losses = [
        metric.value
        for event in metrics_events
        for metric in event.metrics
        if metric.name == "train_loss"
    ]
    assert losses == sorted(losses, reverse=True) and len(set(losses)) == 3
    assert all(event.metrics == () for event in events if event.event_type == "message")


def test_events_come_oldest_first_and_only_after_the_given_event(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, training_file: Path
) -> None:
    fake_openai.set_steps_per_phase(validating_files=1, queued=1, running=130)
    job_id = _start_job(provider, training_file)
    for _ in range(3):
        provider.get_status(job_id)
    early = provider.list_events(job_id, after=None)

    _poll_to_end(provider, job_id)
    later = provider.list_events(job_id, after=early[-1].provider_event_id)

    full = provider.list_events(job_id, after=None)
    assert len(full) > 130  # more than one page of 100
    assert [e.provider_event_id for e in full] == [e.provider_event_id for e in early + later]
    assert [e.created_at for e in full] == sorted(e.created_at for e in full)
    steps = [e.data["step"] for e in later if e.event_type == "metrics" and e.data]
    assert steps == sorted(steps) and steps[-1] == 1300
    assert provider.list_events(job_id, after=full[-1].provider_event_id) == []


def test_checkpoints_are_listed_by_step(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, training_file: Path
) -> None:
    fake_openai.set_steps_per_phase(validating_files=1, queued=1, running=4)
    job_id = _start_job(provider, training_file)
    final = _poll_to_end(provider, job_id)[-1]

    checkpoints = provider.list_checkpoints(job_id)

    assert [c.step for c in checkpoints] == [20, 30, 40]
    assert checkpoints[-1].model_reference == f"{final.fine_tuned_model}:ckpt-step-40"
    assert checkpoints[0].provider_checkpoint_id.startswith("ftckpt-")
    assert set(checkpoints[0].metrics) == {"train_loss", "train_mean_token_accuracy"}


def test_cancel_stops_a_running_job_and_tolerates_a_finished_one(
    provider: OpenAIProvider, training_file: Path
) -> None:
    running = _start_job(provider, training_file)
    provider.get_status(running)
    finished = _start_job(provider, training_file, key="job-2")
    _poll_to_end(provider, finished)

    provider.cancel(running)
    provider.cancel(running)
    provider.cancel(finished)

    assert provider.get_status(running).status == S.CANCELLED
    assert provider.list_events(running, after=None)[-1].message == "Fine-tuning job cancelled"
    assert provider.get_status(finished).status == S.SUCCEEDED
    with pytest.raises(ProviderError) as caught:
        provider.cancel("ftjob-missing")
    assert not isinstance(caught.value, RetriableProviderError)
    assert caught.value.code == "fine_tune_not_found"


def test_a_failed_job_reports_its_error(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, training_file: Path
) -> None:
    fake_openai.fail_job_with("invalid_training_file", "Line 3 is not valid JSON")
    job_id = _start_job(provider, training_file)

    final = _poll_to_end(provider, job_id)[-1]

    assert (final.status, final.raw_status) == (S.FAILED, "failed")
    assert (final.error_code, final.error_message) == (
        "invalid_training_file",
        "Line 3 is not valid JSON",
    )
    assert provider.list_events(job_id, after=None)[-1].level == "error"


def test_an_unknown_status_maps_to_none_with_the_raw_status(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, training_file: Path
) -> None:
    job_id = _start_job(provider, training_file)
    fake_openai.set_status(job_id, "paused")

    status = provider.get_status(job_id)

    assert (status.status, status.raw_status) == (None, "paused")


def test_rate_limit_is_retriable_after_the_retry_after_header(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, training_file: Path
) -> None:
    job_id = _start_job(provider, training_file)
    fake_openai.fail_next("jobs.retrieve", 429, retry_after=7, code="rate_limit_exceeded")

    with pytest.raises(RetriableProviderError) as caught:
        provider.get_status(job_id)

    assert caught.value.retry_after == 7
    assert caught.value.code == "rate_limit_exceeded"
    assert provider.get_status(job_id).status == S.QUEUED
    assert [r.status for r in fake_openai.requests_for("jobs.retrieve")] == [429, 200]


def test_server_errors_are_retriable_with_growing_delays(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, training_file: Path
) -> None:
    job_id = _start_job(provider, training_file)
    fake_openai.fail_next("jobs.retrieve", 500, times=2)

    delays = []
    for _ in range(2):
        with pytest.raises(RetriableProviderError) as caught:
            provider.get_status(job_id)
        delays.append(caught.value.retry_after)
    provider.get_status(job_id)
    fake_openai.fail_next("*", 503)
    with pytest.raises(RetriableProviderError) as caught:
        provider.list_checkpoints(job_id)

    assert delays == [5.0, 10.0]
    assert caught.value.retry_after == 5.0  # a success resets the back-off


def test_a_slow_response_times_out_as_retriable(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, training_file: Path
) -> None:
    job_id = _start_job(provider, training_file)
    fake_openai.delay_next("jobs.retrieve", 3)

    started = time.monotonic()
    with pytest.raises(RetriableProviderError) as caught:
        provider.get_status(job_id)

    assert caught.value.code == "timeout"
    assert time.monotonic() - started < 2
    assert len(fake_openai.requests_for("jobs.retrieve")) == 1  # the SDK did not retry


def test_an_unreachable_server_is_retriable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(
        data_dir=tmp_path, openai_api_key="sk-test", openai_base_url=f"http://127.0.0.1:{port}/v1"
    )

    with pytest.raises(RetriableProviderError) as caught:
        OpenAIProvider(settings, timeout_seconds=CLIENT_TIMEOUT).get_status("ftjob-1")

    assert caught.value.code == "connection_error"


def test_a_bad_request_is_a_final_error_with_the_api_message(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, training_file: Path
) -> None:
    file_id = provider.upload_training_file(training_file, idempotency_key="job-1")
    fake_openai.fail_next(
        "jobs.create", 400, message="Model gpt-x is not available", code="model_not_available"
    )

    with pytest.raises(ProviderError) as caught:
        provider.create_job(_request(file_id))
    assert not isinstance(caught.value, RetriableProviderError)
    assert (str(caught.value), caught.value.code) == (
        "Model gpt-x is not available",
        "model_not_available",
    )

    with pytest.raises(ProviderError, match="invalid training_file: file-nope"):
        provider.create_job(_request("file-nope"))


def test_a_wrong_api_key_is_a_final_error(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, openai_api_key="sk-wrong", openai_base_url=fake_openai.base_url
    )

    with pytest.raises(ProviderError) as caught:
        OpenAIProvider(settings).get_status("ftjob-1")

    assert not isinstance(caught.value, RetriableProviderError)
    assert caught.value.code == "invalid_api_key"


def test_find_job_recovers_a_create_whose_response_was_lost(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, training_file: Path
) -> None:
    file_id = provider.upload_training_file(training_file, idempotency_key="job-1")
    _start_job(provider, training_file, key="job-other")
    fake_openai.delay_next("jobs.create", 2)

    with pytest.raises(RetriableProviderError):
        provider.create_job(_request(file_id, key="job-1"))
    found = provider.find_job("job-1")

    created = [job for job in fake_openai.jobs if job["metadata"]["tuneforge_job_id"] == "job-1"]
    assert [job["id"] for job in created] == [found]
    assert len(fake_openai.requests_for("jobs.create")) == 2
    assert provider.find_job("job-never-created") is None


def test_upload_reuses_the_file_a_lost_response_created(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, training_file: Path
) -> None:
    fake_openai.delay_next("files.create", 2)

    with pytest.raises(RetriableProviderError):
        provider.upload_training_file(training_file, idempotency_key="job-1")
    file_id = provider.upload_training_file(training_file, idempotency_key="job-1")
    other_id = provider.upload_training_file(training_file, idempotency_key="job-2")

    assert [f["id"] for f in fake_openai.files] == [file_id, other_id]
    assert len(fake_openai.requests_for("files.create")) == 2


def test_a_missing_api_key_is_invalid_input_up_front(tmp_path: Path) -> None:
    provider = OpenAIProvider(Settings(data_dir=tmp_path, openai_api_key=None))

    with pytest.raises(InvalidInput) as caught:
        provider.ensure_configured()
    assert str(caught.value) == "OpenAI API key is not configured: set TUNEFORGE_OPENAI_API_KEY"
    assert caught.value.extra == {"field": "provider"}

    with pytest.raises(ProviderError) as failed:
        provider.get_status("ftjob-1")
    assert failed.value.code == "not_configured"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "12"}, 12.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header_forms(headers: dict[str, str], expected: float | None) -> None:
    assert _retry_after_header(headers) == expected


def test_retry_after_header_as_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert _retry_after_header({"retry-after": when}) == pytest.approx(30, abs=2)
