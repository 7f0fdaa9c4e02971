"""The files a local training job lives in, shared by the worker side and the trainer child.

The job directory is the only channel between the two processes, so every write here is
crash-safe: JSON files are replaced atomically, the event log is append-only with ids
that keep increasing across restarts, and a torn last line (a process killed mid-write)
is never read and is cut off by the next writer. Nothing here imports torch, so the API
and the worker can read progress without loading it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StringConstraints, ValidationError

from tuneforge.config import Settings
from tuneforge.errors import InvalidInput
from tuneforge.providers.contract import (
    AUTO,
    SUPERVISED,
    Auto,
    DpoHyperparameters,
    fine_tuned_model_name,
)

# The trainer's states are "starting", "running", then one of these.
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
INFO_FILE = "checkpoint.json"
ADAPTER_DIR = "adapter"
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TARGET_MODULES = 64
MAX_TOKENS_PER_PASS = 1_048_576
MAX_STEPS = 10_000_000
AUTO_NLL_WEIGHT = 1.0
# The local knob only a DPO job reads (the jobs service refuses beta, every provider's, itself).
LOCAL_DPO_ONLY = "nll_weight"
ModuleName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\w.]+$")]


class LocalHyperparameters(DpoHyperparameters):
    """The shared OpenAI-style knobs (DPO's beta among them, read by DPO jobs only) plus
    what LoRA training on this machine needs."""

    lora_r: int = Field(default=16, ge=1, le=1024)
    lora_alpha: float = Field(default=32.0, gt=0, le=4096, allow_inf_nan=False)
    lora_dropout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Off by default: on CPU its random masks cost ~10% of each step.",
    )
    target_modules: list[ModuleName] | None = Field(
        default=None,
        max_length=MAX_TARGET_MODULES,
        description="Module names to adapt; default: every linear projection.",
    )
    max_seq_length: int | None = Field(
        default=None,
        ge=16,
        le=MAX_TOKENS_PER_PASS,
        description="Tokens per example; default: the model's context.",
    )
    warmup_ratio: float = Field(default=0.03, ge=0, le=0.5)
    eval_every_steps: int | None = Field(
        default=None,
        ge=1,
        le=MAX_STEPS,
        description="Steps between held-out evaluations; default: about every "
        "EVAL_EVERY_TOKENS trained tokens, at least 10 times a run.",
    )
    holdout_fraction: float = Field(
        default=0.1,
        ge=0,
        le=0.5,
        description="Share of the training examples held out (at most 200) to measure valid "
        "loss when the job has no validation data; 0 trains on every example.",
    )
    early_stopping_patience: Auto | Annotated[int, Field(strict=True, ge=0, le=1000)] = Field(
        default=AUTO,
        description='Evaluations without improvement before training stops; "auto" is 3, '
        "0 never stops early. Needs held-out data.",
    )
    early_stopping_min_delta: Auto | Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = (
        Field(
            default=AUTO,
            description='How far valid loss must fall to count as an improvement; "auto" is 0: '
            "every new low counts.",
        )
    )
    nll_weight: Auto | Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = Field(
        default=AUTO,
        description="DPO jobs only: weight of the preferred reply's per-token negative "
        'log-likelihood added to the DPO loss (RPO\'s regularizer); "auto" is '
        f"{AUTO_NLL_WEIGHT}, 0 is DPO alone.",
    )
    checkpoint_every_steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    micro_batch_tokens: int = Field(
        default=1024,
        ge=64,
        le=MAX_TOKENS_PER_PASS,
        description="Tokens per forward pass (at least one example); bounds activation memory.",
    )
    num_processes: int = Field(default=1, ge=1, le=64)


def _field_name(loc: tuple[int | str, ...]) -> str:
    """``hyperparameters.<name>``, with a list item's index; not the tag of a union's branch
    (``literal['auto']``, ``float``) that pydantic adds to the location."""
    name, *rest = loc
    indices = [str(part) for part in rest if isinstance(part, int)]
    return ".".join(["hyperparameters", str(name), *indices])


def parse_local_hyperparameters(raw: dict[str, Any]) -> LocalHyperparameters:
    """Validate a job's hyperparameters for the local provider; errors name the field."""
    try:
        return LocalHyperparameters.model_validate(raw)
    except ValidationError as exc:
        fields = [_field_name(err["loc"]) for err in exc.errors()]
        problems = "; ".join(
            f"{field}: {err['msg']}" for field, err in zip(fields, exc.errors(), strict=True)
        )
        raise InvalidInput(problems, field=fields[0]) from exc


@dataclass(frozen=True)
class JobSpec:
    """What the trainer child needs, written by ``create_job`` and read on every (re)start."""

    job_id: str
    base_model: str
    base_model_path: str
    hyperparameters: dict[str, Any]
    seed: int
    has_validation: bool
    suffix: str | None = None
    owner: str = "tuneforge"
    method: str = SUPERVISED
    # The adapter of the fine-tune the job starts from, copied into the job directory.
    parent_adapter: str | None = None

    @property
    def fine_tuned_model(self) -> str:
        return fine_tuned_model_name(self.base_model, self.owner, self.suffix, self.job_id)


@dataclass(frozen=True)
class JobPaths:
    root: Path

    @property
    def spec(self) -> Path:
        return self.root / "job.json"

    @property
    def train_file(self) -> Path:
        return self.root / "train.jsonl"

    @property
    def valid_file(self) -> Path:
        return self.root / "valid.jsonl"

    @property
    def progress(self) -> Path:
        return self.root / "progress.jsonl"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def cancel_marker(self) -> Path:
        return self.root / "cancel-requested"

    @property
    def pause_marker(self) -> Path:
        return self.root / "pause-requested"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def parent_adapter(self) -> Path:
        """A copy of the starting fine-tune's adapter: the job outlives that model's files."""
        return self.root / "parent-adapter"

    @property
    def best_adapter(self) -> Path:
        """The LoRA weights of the step with the best held-out loss so far."""
        return self.root / "best-adapter"


def jobs_root(settings: Settings) -> Path:
    return settings.data_dir / "jobs"


def job_paths(settings: Settings, job_id: str) -> JobPaths:
    if not _JOB_ID.match(job_id):
        raise InvalidInput(f"Invalid local job id {job_id!r}", field="job_id")
    return JobPaths(jobs_root(settings) / job_id)


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat()


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def write_spec(paths: JobPaths, spec: JobSpec) -> None:
    write_json_atomic(paths.spec, spec.__dict__)


def read_spec(paths: JobPaths) -> JobSpec:
    payload = read_json(paths.spec)
    if payload is None:
        raise FileNotFoundError(f"{paths.spec} is missing")
    return JobSpec(**payload)


def read_status(paths: JobPaths) -> dict[str, Any] | None:
    return read_json(paths.status)


def update_status(paths: JobPaths, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the status file (only one process writes it at a time)."""
    status = {**(read_status(paths) or {}), **fields, "updated_at": utc_now_iso()}
    write_json_atomic(paths.status, status)
    return status


class ProgressLog:
    """Appends events to ``progress.jsonl``; ids continue from the last complete line.

    A restarted trainer re-runs the steps after its last checkpoint; their metrics were
    already reported with identical values (training is deterministic per step), so step
    metrics at or below the last reported step are not written again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last_id = 0
        self.last_metric_step = -1  # step 0 holds the base model's figures
        if path.exists():
            raw = path.read_bytes()
            complete = raw[: raw.rfind(b"\n") + 1]
            if len(complete) != len(raw):
                with path.open("r+b") as handle:
                    handle.truncate(len(complete))
            for line in complete.splitlines():
                event = json.loads(line)
                self._last_id = event["id"]
                if event["type"] == "metrics":
                    self.last_metric_step = max(self.last_metric_step, event["step"])
        self._handle = path.open("a", encoding="utf-8")

    def emit(
        self,
        event_type: str,
        message: str,
        *,
        level: str = "info",
        step: int | None = None,
        metrics: dict[str, float] | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        if event_type == "metrics" and step is not None:
            if step <= self.last_metric_step:
                return
            self.last_metric_step = step
        self._last_id += 1
        event = {
            "id": self._last_id,
            "created_at": utc_now_iso(),
            "type": event_type,
            "level": level,
            "message": message,
            "step": step,
            "metrics": metrics or {},
            "data": data,
        }
        self._handle.write(json.dumps(event) + "\n")
        self._handle.flush()


def read_events(path: Path, after: int, *, start_offset: int = 0) -> tuple[list[dict], int]:
    """Complete events with an id above ``after``, and the byte offset read up to.

    ``start_offset`` lets a poller skip what it has already parsed; only whole lines count.
    """
    try:
        with path.open("rb") as handle:
            handle.seek(start_offset)
            raw = handle.read()
    except FileNotFoundError:
        return [], 0
    complete = raw[: raw.rfind(b"\n") + 1]
    events = [json.loads(line) for line in complete.splitlines()]
    return [e for e in events if e["id"] > after], start_offset + len(complete)


def checkpoint_dirs(paths: JobPaths) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first (one being written is a hidden temporary dir)."""
    if not paths.checkpoints.is_dir():
        return []
    found = []
    for child in paths.checkpoints.iterdir():
        if child.name.startswith("step-") and (child / INFO_FILE).is_file():
            found.append((int(child.name.removeprefix("step-")), child))
    return sorted(found)
