"""The ``local`` provider: the worker's side of training on this machine.

Each job is a child process (``process.py``) writing into ``<data dir>/jobs/<job id>/``;
this side starts it, signals it and reads its files. Child handles live in a
process-wide table, not on the provider object, so any instance in the worker process
sees them. A handle exists only in the worker process that started the child: after a
worker restart there is none, ``find_job`` answers None for an unfinished job and the
runner's next ``create_job`` resumes it from its latest checkpoint; a worker that loses
the lease, or stops mid-run, kills its trainer (``abandon``). Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.errors import InvalidInput, TuneForgeError
from tuneforge.providers.catalog import LOCAL_PROVIDER, list_base_models
from tuneforge.providers.contract import (
    DPO,
    SUPERVISED,
    TRAINING_METHODS,
    BaseModelInfo,
    DatasetFigures,
    ModelUnavailable,
    ProviderCheckpoint,
    ProviderError,
    ProviderEvent,
    ProviderJobRequest,
    ProviderJobState,
    ProviderJobStatus,
    ProviderMetric,
    Readiness,
    ResolvedHyperparameters,
    RetriableProviderError,
    ServableFiles,
)
from tuneforge.providers.local.auto import resolve_local
from tuneforge.providers.local.jobdir import (
    ADAPTER_DIR,
    LOCAL_DPO_ONLY,
    TERMINAL_STATES,
    JobPaths,
    JobSpec,
    checkpoint_dirs,
    job_paths,
    jobs_root,
    parse_local_hyperparameters,
    read_events,
    read_json,
    read_status,
    update_status,
    write_spec,
)
from tuneforge.providers.local.process import MODULE, SUPERVISOR_PID_ENV
from tuneforge.store.base_models import DEFAULT_MODEL, find_model_dir, pull_command

_LOG_TAIL_BYTES = 2000
JOB_DIR_NOT_VISIBLE = "job_dir_not_visible"
_FILE_KEY = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class _Child:
    process: subprocess.Popen[bytes]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


_children: dict[str, _Child] = {}
_children_lock = threading.Lock()
_event_offsets: dict[Path, tuple[int, int]] = {}  # progress file -> (last id read, offset)


class LocalProvider:
    """LoRA training in a child process of the worker, polled every couple of seconds."""

    name = LOCAL_PROVIDER
    methods = frozenset(TRAINING_METHODS)
    runs_in_worker = True
    can_pause = True
    serves_models_here = True

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def list_base_models(self) -> list[BaseModelInfo]:
        return [m for m in list_base_models(self._settings) if m.provider == self.name]

    def ensure_configured(self) -> None:
        if not any(find_model_dir(self._settings, m.name) for m in self.list_base_models()):
            raise InvalidInput(
                f"No local base model is installed; run `{pull_command(DEFAULT_MODEL)}`",
                field="provider",
            )

    def readiness(self, model: BaseModelInfo) -> Readiness:
        if find_model_dir(self._settings, model.name) is not None:
            return Readiness(True, "in the model store")
        return Readiness(False, f"run `{pull_command(model.name)}`")

    def servable_files(self, model_reference: str, base_model: str) -> ServableFiles | None:
        """A path reference is the adapter itself; a model name is looked up in its training
        job's directory. The base is the store's model of that name, else the directory the
        adapter says it was trained on."""
        adapter = self._adapter_dir(model_reference)
        base_path = find_model_dir(self._settings, base_model) or _trained_on(adapter)
        if base_path is None:
            raise ModelUnavailable(
                f"Base model {base_model} is not in the local model store; "
                f"run `{pull_command(base_model)}`"
            )
        return ServableFiles(base_path, adapter)

    def _adapter_dir(self, model_reference: str) -> Path:
        reference = Path(model_reference)
        for candidate in (reference, self._settings.data_dir / reference):
            if candidate.is_dir():
                return candidate
        if len(reference.parts) > 1:
            return reference  # a path whose files are gone: the engine says which
        job_id = model_reference.rsplit(":", 1)[-1]
        try:
            return job_paths(self._settings, job_id).adapter
        except InvalidInput as exc:
            raise ModelUnavailable(f"{model_reference!r} is not a local fine-tuned model") from exc

    def check_hyperparameters(self, requested: dict[str, Any], *, method: str = SUPERVISED) -> None:
        hyperparameters = parse_local_hyperparameters(requested)
        if method != DPO and LOCAL_DPO_ONLY in requested:
            field = f"hyperparameters.{LOCAL_DPO_ONLY}"
            raise InvalidInput(
                f"{field}: only DPO jobs take it; set method.type to 'dpo'", field=field
            )
        devices = _training_devices()
        if hyperparameters.num_processes > devices:
            raise InvalidInput(
                f"hyperparameters.num_processes: {hyperparameters.num_processes} processes, but "
                f"this machine trains on {devices} device{'s' if devices != 1 else ''}",
                field="hyperparameters.num_processes",
            )

    def resolve_hyperparameters(
        self, requested: dict[str, Any], figures: DatasetFigures, *, method: str = SUPERVISED
    ) -> ResolvedHyperparameters:
        return resolve_local(parse_local_hyperparameters(requested), figures, method)

    def upload_training_file(self, path: Path, *, idempotency_key: str) -> str:
        """Copy the exported JSONL where the job will read it; the id is that path."""
        uploads = jobs_root(self._settings) / "files"
        uploads.mkdir(parents=True, exist_ok=True)
        target = uploads / f"{_FILE_KEY.sub('_', idempotency_key)}.jsonl"
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(target)
        return str(target.resolve())

    def create_job(self, request: ProviderJobRequest) -> str:
        job_id = request.idempotency_key
        paths = job_paths(self._settings, job_id)
        with _children_lock:
            child = _children.get(job_id)
            if child is not None and child.alive:
                return job_id
            _require_visible(self._settings, paths, request)
            status = read_status(paths) or {}
            if status.get("state") == "succeeded" or paths.cancel_marker.exists():
                return job_id
            paths.pause_marker.unlink(missing_ok=True)  # resuming a paused job
            self._prepare(paths, request)
            _children[job_id] = self._spawn(paths, attempt=int(status.get("attempt", 0)) + 1)
        return job_id

    def find_job(self, idempotency_key: str) -> str | None:
        """Our job id once this worker started its trainer or it has finished; else None.

        None for an unfinished job that no trainer of this worker process runs (the
        worker that ran it died): ``create_job`` then resumes it from its last checkpoint.
        A trainer started here that died is not restarted: ``get_status`` reports it.
        """
        paths = job_paths(self._settings, idempotency_key)
        with _children_lock:
            child = _children.get(idempotency_key)
        if child is not None:
            return idempotency_key
        status = read_status(paths) or {}
        if status.get("state") in TERMINAL_STATES or paths.cancel_marker.exists():
            return idempotency_key
        return None

    def get_status(self, provider_job_id: str) -> ProviderJobStatus:
        """The child's state; a finished state counts only once its processes have exited."""
        paths = job_paths(self._settings, provider_job_id)
        status = read_status(paths)
        if status is None and not paths.root.is_dir():
            raise _not_visible(
                f"The job directory {paths.root.resolve()} of local job {provider_job_id}",
                self._settings,
            )
        if status is None:
            raise ProviderError(f"Local job {provider_job_id} does not exist", code="not_found")
        state = status.get("state", "starting")
        tokens = status.get("trained_tokens")
        with _children_lock:
            child = _children.get(provider_job_id)
        if child is not None and child.alive:
            cancelling = paths.cancel_marker.exists()
            return ProviderJobStatus(
                status=ProviderJobState.CANCELLING if cancelling else ProviderJobState.RUNNING,
                raw_status="cancelling" if cancelling else state,
                trained_tokens=tokens,
                estimated_finish=_estimated_finish(status),
                progress_percentage=_percent(status),
            )
        if state == "succeeded":
            return ProviderJobStatus(
                status=ProviderJobState.SUCCEEDED,
                raw_status=state,
                trained_tokens=tokens,
                fine_tuned_model=status["fine_tuned_model"],
                progress_percentage=100.0,
            )
        if state == "failed":
            return self._failed(state, "training_failed", status.get("error"), tokens)
        if state == "paused" and not paths.cancel_marker.exists():
            with _children_lock:
                _children.pop(provider_job_id, None)  # so find_job lets a resume start it
            return ProviderJobStatus(ProviderJobState.PAUSED, state, trained_tokens=tokens)
        if state == "cancelled" or paths.cancel_marker.exists():
            if state != "cancelled":  # killed before it could say so itself
                update_status(paths, state="cancelled")
            return ProviderJobStatus(ProviderJobState.CANCELLED, "cancelled", trained_tokens=tokens)
        if child is not None:
            code = child.process.returncode
            reason = f"signal {-code}" if code < 0 else f"exit code {code}"
            message = f"The training process ended with {reason}. {_log_tail(paths)}".strip()
            return self._failed(state, "trainer_crashed", message, tokens)
        raise RetriableProviderError(
            f"No trainer is attached to local job {provider_job_id} in this worker; "
            "call find_job, then create_job, to resume it",
            retry_after=0.0,
            code="trainer_detached",
        )

    def list_events(self, provider_job_id: str, *, after: str | None) -> list[ProviderEvent]:
        progress = job_paths(self._settings, provider_job_id).progress
        after_id = int(after) if after else 0
        last_id, offset = _event_offsets.get(progress, (0, 0))
        size = progress.stat().st_size if progress.exists() else 0
        start = offset if last_id <= after_id and offset <= size else 0
        events, end = read_events(progress, after_id, start_offset=start)
        _event_offsets[progress] = (events[-1]["id"] if events else max(after_id, last_id), end)
        return [_provider_event(e) for e in events]

    def list_checkpoints(self, provider_job_id: str) -> list[ProviderCheckpoint]:
        paths = job_paths(self._settings, provider_job_id)
        checkpoints = []
        for step, path in checkpoint_dirs(paths):
            info = read_json(path / "checkpoint.json") or {}
            checkpoints.append(
                ProviderCheckpoint(
                    provider_checkpoint_id=f"step-{step}",
                    step=step,
                    model_reference=str((path / ADAPTER_DIR).resolve()),
                    metrics=dict(info.get("metrics") or {}),
                )
            )
        return checkpoints

    def cancel(self, provider_job_id: str) -> None:
        """Mark the job cancelled and ask its trainer (all its processes) to stop."""
        paths = job_paths(self._settings, provider_job_id)
        if not paths.root.is_dir():
            return
        paths.cancel_marker.touch()
        with _children_lock:
            child = _children.get(provider_job_id)
        if child is not None and child.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)

    def pause(self, provider_job_id: str) -> None:
        """Ask the trainer to checkpoint and exit; with no trainer here, its last checkpoint
        is where a resume starts, so it is paused already."""
        paths = job_paths(self._settings, provider_job_id)
        if not paths.root.is_dir():
            return
        paths.pause_marker.touch()
        with _children_lock:
            child = _children.get(provider_job_id)
        if child is not None and child.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)
        elif (read_status(paths) or {}).get("state") not in TERMINAL_STATES:
            update_status(paths, state="paused")

    def abandon(self, provider_job_id: str) -> None:
        """Kill this worker's trainer of the job (SIGKILL: a SIGTERM would write "cancelled").

        Everything it writes is crash-safe, and the next worker on the job resumes it from
        the last checkpoint once this trainer's lock on the job directory is gone.
        """
        with _children_lock:
            child = _children.pop(provider_job_id, None)
        if child is None:
            return
        if child.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
        child.process.wait()

    def _prepare(self, paths: JobPaths, request: ProviderJobRequest) -> None:
        """Write the job's spec and data files; the same on every (re)start."""
        try:
            hyperparameters = parse_local_hyperparameters(
                {**request.hyperparameters, **(request.resolved_hyperparameters or {})}
            )
        except TuneForgeError as exc:
            raise ProviderError(exc.detail, code="invalid_hyperparameters") from exc
        base_path = find_model_dir(self._settings, request.base_model)
        if base_path is None:
            raise ProviderError(
                f"Base model {request.base_model!r} is not in the model store; "
                f"run `{pull_command(request.base_model)}`",
                code="model_not_found",
            )
        paths.root.mkdir(parents=True, exist_ok=True)
        _link_or_copy(Path(request.training_file_id), paths.train_file)
        if request.validation_file_id:
            _link_or_copy(Path(request.validation_file_id), paths.valid_file)
        if request.parent_model is not None and not paths.parent_adapter.is_dir():
            self._copy_parent_adapter(request.parent_model, paths.parent_adapter)
        seed = request.seed if request.seed is not None else 42
        write_spec(
            paths,
            JobSpec(
                job_id=request.idempotency_key,
                base_model=request.base_model,
                base_model_path=str(base_path.resolve()),
                hyperparameters=hyperparameters.model_dump(),
                seed=seed,
                has_validation=bool(request.validation_file_id),
                suffix=request.suffix,
                owner=request.owner or "tuneforge",
                method=request.method,
                parent_adapter=(
                    str(paths.parent_adapter.resolve()) if request.parent_model else None
                ),
            ),
        )

    def _copy_parent_adapter(self, parent_model: str, target: Path) -> None:
        """Keep the starting fine-tune's adapter with the job: a resume must find it even
        if that model's files have gone since."""
        source = self._adapter_dir(parent_model)
        if not (source / "adapter_config.json").is_file():
            raise ProviderError(
                f"The fine-tune {parent_model!r} this job starts from has no adapter at {source}",
                code="model_not_found",
            )
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        tmp.replace(target)

    def _spawn(self, paths: JobPaths, *, attempt: int) -> _Child:
        # Written before the child exists, so no poll sees a previous attempt's final state.
        update_status(paths, state="starting", attempt=attempt, error=None)
        env = {
            # Idle OpenMP threads sleep instead of spinning: the trainer shares this machine
            # with the server and worker, and spinning threads starve each other (10x slower).
            "OMP_WAIT_POLICY": "PASSIVE",
            **os.environ,
            SUPERVISOR_PID_ENV: str(os.getpid()),
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        with paths.log.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", MODULE, str(paths.root.resolve())],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        return _Child(process)

    @staticmethod
    def _failed(raw: str, code: str, message: str | None, tokens: Any) -> ProviderJobStatus:
        return ProviderJobStatus(
            status=ProviderJobState.FAILED,
            raw_status=raw,
            trained_tokens=tokens,
            error_code=code,
            error_message=message or "Training failed",
        )


def _require_visible(settings: Settings, paths: JobPaths, request: ProviderJobRequest) -> None:
    """Fail clearly when what an earlier worker made is not in this worker's data dir: a
    resumed job would otherwise train again from step 0, a missing file crash obscurely."""
    job_id = request.idempotency_key
    if request.resuming and not paths.root.is_dir():
        raise _not_visible(
            f"Local job {job_id} started on another worker, and its job directory "
            f"{paths.root.resolve()}",
            settings,
        )
    for file_id in (request.training_file_id, request.validation_file_id):
        if file_id and not Path(file_id).is_file():
            raise _not_visible(f"The file {file_id} uploaded for local job {job_id}", settings)


def _not_visible(what: str, settings: Settings) -> ProviderError:
    return ProviderError(
        f"{what} is not visible from this worker, whose data dir is "
        f"{settings.data_dir.resolve()}. Workers that share a PostgreSQL database must share "
        "the data dir: mount one shared storage at the same path on every worker and set "
        "TUNEFORGE_DATA_DIR to it, then create the job again.",
        code=JOB_DIR_NOT_VISIBLE,
    )


def _training_devices() -> int:
    """GPUs when there are any, else CPU cores: one training process each at most."""
    import torch  # the API process has it loaded already, for inference

    return torch.cuda.device_count() or os.cpu_count() or 1


def _trained_on(adapter: Path) -> Path | None:
    """The base model directory an adapter's config names, if it is still there."""
    try:
        config = json.loads((adapter / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return None
    trained_on = config.get("base_model_name_or_path")
    return Path(trained_on) if isinstance(trained_on, str) and Path(trained_on).is_dir() else None


def _link_or_copy(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        tmp.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, tmp)
    tmp.replace(target)


def _percent(status: dict[str, Any]) -> float | None:
    total = status.get("total_steps")
    return 100.0 * status.get("step", 0) / total if total else None


def _estimated_finish(status: dict[str, Any]) -> datetime | None:
    total, seconds = status.get("total_steps"), status.get("seconds_per_step")
    if not total or not seconds:
        return None
    remaining = (total - status.get("step", 0)) * seconds
    return datetime.fromisoformat(status["updated_at"]) + timedelta(seconds=remaining)


def _log_tail(paths: JobPaths) -> str:
    try:
        with paths.log.open("rb") as handle:
            handle.seek(max(0, paths.log.stat().st_size - _LOG_TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    lines = [line for line in tail.splitlines() if line.strip()]
    return "\n".join(lines[-8:])


def _provider_event(event: dict[str, Any]) -> ProviderEvent:
    step = event.get("step")
    return ProviderEvent(
        provider_event_id=str(event["id"]),
        created_at=datetime.fromisoformat(event["created_at"]),
        level=event["level"],
        message=event["message"],
        event_type=event["type"],
        metrics=tuple(
            ProviderMetric(step=step, name=name, value=float(value))
            for name, value in (event.get("metrics") or {}).items()
        )
        if step is not None
        else (),
        # The metrics ride in the event's data too, as OpenAI's metrics events carry them.
        data={**(event.get("data") or {}), "step": step, **(event.get("metrics") or {})}
        if step is not None
        else event.get("data"),
    )
