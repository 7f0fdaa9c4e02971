"""The simulated behaviour of OpenAI's files and fine-tuning API, without the HTTP layer.

Kept apart from the server so the job timeline can be read on its own; every method
returns the JSON the real API would and raises :class:`ApiError` where it would refuse.
The server calls it under a lock, so it holds no locking itself.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

STEPS_PER_RUNNING_POLL = 10
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class ApiError(Exception):
    """An error response: ``status`` with OpenAI's ``{"error": {...}}`` body."""

    def __init__(
        self, status: int, message: str, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.code, self.param)


def error_body(message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _now() -> int:
    return int(time.time())


def page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """OpenAI cursor pagination: ``after`` is the id of the last item of the previous page."""
    start = 0
    if after is not None:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    return {
        "object": "list",
        "data": items[start : start + limit],
        "has_more": start + limit < len(items),
    }


@dataclass
class FakeJob:
    data: dict[str, Any]
    timeline: list[str]
    failure: tuple[str, str] | None
    polls: int = 0
    pinned: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    metrics_by_step: dict[int, dict[str, float]] = field(default_factory=dict)


class FakeFineTuningApi:
    """Files and jobs; a job's status advances one step per :meth:`retrieve_job`."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self.file_contents: dict[str, bytes] = {}
        self.jobs: dict[str, FakeJob] = {}
        self.phases = {"validating_files": 1, "queued": 1, "running": 3}
        self.failure: tuple[str, str] | None = None

    def create_file(self, filename: str, content: bytes, purpose: str | None) -> dict[str, Any]:
        if purpose != "fine-tune":
            raise ApiError(400, "Only purpose 'fine-tune' is supported here", param="purpose")
        file_id = _new_id("file")
        self.file_contents[file_id] = content
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": _now(),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        return self.files[file_id]

    def list_files(self, purpose: str | None, order: str) -> list[dict[str, Any]]:
        files = [item for item in self.files.values() if purpose in (None, item["purpose"])]
        return files[::-1] if order == "desc" else files

    def list_jobs(self, metadata: dict[str, str]) -> list[dict[str, Any]]:
        """Newest first, keeping jobs whose metadata holds every ``metadata`` pair."""
        return [
            job.data
            for job in reversed(self.jobs.values())
            if all((job.data["metadata"] or {}).get(k) == v for k, v in metadata.items())
        ]

    def job(self, job_id: str) -> FakeJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"Could not find fine-tune: {job_id}", "fine_tune_not_found")
        return job

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        for param in ("training_file", "validation_file"):
            file_id = body.get(param)
            if (param == "training_file" or file_id is not None) and file_id not in self.files:
                raise ApiError(400, f"invalid {param}: {file_id}", "invalid_file", param)
        if not body.get("model"):
            raise ApiError(400, "Missing required parameter: 'model'", param="model")
        suffix = body.get("suffix")
        if suffix is not None and len(suffix) > 64:
            raise ApiError(400, "suffix must be at most 64 characters", param="suffix")
        method = body.get("method") or {"type": "supervised", "supervised": {}}
        supervised = method.get("supervised") or {}
        hyperparameters = supervised.get("hyperparameters") or body.get("hyperparameters") or {}
        timeline = [
            *["validating_files"] * self.phases["validating_files"],
            *["queued"] * self.phases["queued"],
            *["running"] * self.phases["running"],
            "failed" if self.failure else "succeeded",
        ]
        job_id = _new_id("ftjob")
        data = {
            "id": job_id,
            "object": "fine_tuning.job",
            "created_at": _now(),
            "model": body["model"],
            "organization_id": "org-tuneforge",
            "training_file": body["training_file"],
            "validation_file": body.get("validation_file"),
            "hyperparameters": {
                name: hyperparameters.get(name, "auto")
                for name in ("n_epochs", "batch_size", "learning_rate_multiplier")
            },
            "method": method,
            "seed": 42 if body.get("seed") is None else body["seed"],
            "suffix": suffix,
            "metadata": body.get("metadata"),
            "status": timeline[0],
            "fine_tuned_model": None,
            "finished_at": None,
            "trained_tokens": None,
            "estimated_finish": None,
            "result_files": [],
            "error": None,
            "integrations": [],
        }
        job = FakeJob(data=data, timeline=timeline, failure=self.failure)
        self.jobs[job_id] = job
        self._event(job, f"Created fine-tuning job: {job_id}")
        self._event(job, f"Validating training file: {body['training_file']}")
        return data

    def retrieve_job(self, job_id: str) -> dict[str, Any]:
        job = self.job(job_id)
        self._advance(job)
        return job.data

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        job = self.job(job_id)
        status = job.data["status"]
        if status in ("succeeded", "failed"):
            raise ApiError(400, f"Job has already completed: {job_id}", "invalid_state")
        if status != "cancelled":
            job.data.update(status="cancelled", finished_at=_now(), estimated_finish=None)
            self._event(job, "Fine-tuning job cancelled")
        return job.data

    def list_events(self, job_id: str) -> list[dict[str, Any]]:
        return self.job(job_id).events[::-1]

    def list_checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        return self.job(job_id).checkpoints[::-1]

    def _advance(self, job: FakeJob) -> None:
        if job.pinned or job.data["status"] in TERMINAL:
            return
        job.polls += 1
        status = job.timeline[min(job.polls, len(job.timeline) - 1)]
        previous, job.data["status"] = job.data["status"], status
        if status == "queued" and previous != "queued":
            self._event(job, "Files validated, moving job to queued state")
        elif status == "running":
            if previous != "running":
                self._event(job, f"Fine-tuning job started: {job.data['id']}")
            self._emit_metrics(job)
        elif status == "succeeded":
            self._succeed(job)
        elif status == "failed":
            code, message = job.failure or ("unknown", "failed")
            error = {"code": code, "message": message, "param": None}
            job.data.update(error=error, finished_at=_now(), estimated_finish=None)
            self._event(job, message, level="error")

    def _emit_metrics(self, job: FakeJob) -> None:
        running_polls = job.timeline.count("running")
        index = len(job.metrics_by_step) + 1
        step, total = index * STEPS_PER_RUNNING_POLL, running_polls * STEPS_PER_RUNNING_POLL
        train_loss = round(2.4 * 0.7**index, 4)
        accuracy = round(0.5 + 0.4 * index / running_polls, 4)
        metrics = {"train_loss": train_loss, "train_mean_token_accuracy": accuracy}
        if job.data["validation_file"]:
            metrics["valid_loss"] = round(train_loss * 1.1, 4)
            metrics["valid_mean_token_accuracy"] = round(accuracy - 0.02, 4)
            if index == running_polls:
                metrics["full_valid_loss"] = metrics["valid_loss"]
                metrics["full_valid_mean_token_accuracy"] = metrics["valid_mean_token_accuracy"]
        job.metrics_by_step[step] = metrics
        job.data["estimated_finish"] = _now() + 60 * (running_polls - index + 1)
        self._event(
            job,
            f"Step {step}/{total}: training loss={train_loss:.4f}",
            event_type="metrics",
            data={"step": step, "total_steps": total, **metrics},
        )

    def _succeed(self, job: FakeJob) -> None:
        job_id, model = job.data["id"], job.data["model"]
        name = f"ft:{model}:tuneforge:{job.data['suffix'] or ''}:{job_id.removeprefix('ftjob-')}"
        epochs = job.data["hyperparameters"]["n_epochs"]
        epochs = epochs if isinstance(epochs, int) else 3
        training_bytes = self.files[job.data["training_file"]]["bytes"]
        job.data.update(
            fine_tuned_model=name,
            trained_tokens=max(1, training_bytes // 4) * epochs,
            finished_at=_now(),
            estimated_finish=None,
            result_files=[_new_id("file")],
        )
        for step, metrics in list(job.metrics_by_step.items())[-3:]:
            job.checkpoints.append(
                {
                    "id": _new_id("ftckpt"),
                    "object": "fine_tuning.job.checkpoint",
                    "created_at": _now(),
                    "fine_tuned_model_checkpoint": f"{name}:ckpt-step-{step}",
                    "fine_tuning_job_id": job_id,
                    "step_number": step,
                    "metrics": {"step": step, **metrics},
                }
            )
        self._event(job, f"New fine-tuned model created: {name}")
        self._event(job, "The job has successfully completed")

    def _event(
        self,
        job: FakeJob,
        message: str,
        *,
        level: str = "info",
        event_type: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        job.events.append(
            {
                "id": _new_id("ftevent"),
                "object": "fine_tuning.job.event",
                "created_at": _now(),
                "level": level,
                "message": message,
                "type": event_type,
                "data": data or {},
            }
        )
