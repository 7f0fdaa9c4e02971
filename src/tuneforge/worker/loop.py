"""The worker loop: claim a due job, keep its lease alive while working on it, give it back.

Any number of workers (threads in ``tuneforge serve``, ``tuneforge worker`` processes on
other machines) share the queue safely because a job is only touched under its lease. A
remote provider's job is stepped once and released until its next poll; a provider that
trains inside the worker keeps the lease and is stepped every few seconds. A heartbeat
thread extends the lease meanwhile, so only a dead worker's lease ever expires.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.engine import unit_of_work
from tuneforge.db.tables.jobs import FineTuningJob
from tuneforge.errors import NotFound
from tuneforge.evals.execution import execute_run
from tuneforge.exports.execution import execute_export
from tuneforge.inference.engine import InferenceEngine
from tuneforge.jobs import service as jobs_service
from tuneforge.webhooks.delivery import DeliveryConfig, DeliveryThreads
from tuneforge.worker.queue import (
    claim_job,
    claim_next_eval_run,
    claim_next_export,
    claim_next_job,
    eval_heartbeat,
    export_heartbeat,
    heartbeat,
    release,
    request_run_now,
)
from tuneforge.worker.runner import JobRunner, LeaseLost, StepResult, WorkerConfig
from tuneforge.worker.storage import check_shared_data_dir

log = logging.getLogger(__name__)

Heartbeat = Callable[[Session, str, str, float], bool]


def new_worker_id(kind: str = "worker") -> str:
    """Unique per worker, readable in the jobs table: kind, host, process, random suffix."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseKeeper:
    """Extends a lease every third of its length from a background thread until closed.

    ``lost`` is set when the lease could not be extended because it is no longer ours.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        job_id: str,
        worker_id: str,
        lease_seconds: float,
        beat: Heartbeat = heartbeat,
    ) -> None:
        self.session_factory = session_factory
        self.job_id = job_id
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self._extend = beat
        self.lost = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._closed.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._closed.wait(self.lease_seconds / 3):
            try:
                with unit_of_work(self.session_factory) as session:
                    alive = self._extend(session, self.job_id, self.worker_id, self.lease_seconds)
            except Exception:
                log.warning("Heartbeat for job %s failed; retrying", self.job_id, exc_info=True)
                continue
            if not alive:
                self.lost.set()
                return


MAX_ERROR_BACKOFF_SECONDS = 30.0


class Worker:
    """Claims due jobs, then due evaluations, then due exports, one at a time, and works
    on each under its lease.

    Evaluations generate with ``engine``: the server's own when the worker is embedded (one
    copy of each model in memory), else one made on the first evaluation."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        worker_id: str | None = None,
        config: WorkerConfig | None = None,
        engine: InferenceEngine | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.worker_id = worker_id or new_worker_id()
        self.config = config or WorkerConfig()
        self.runner = JobRunner(session_factory, settings, self.worker_id, self.config)
        self._engine = engine

    @property
    def engine(self) -> InferenceEngine:
        if self._engine is None:
            self._engine = InferenceEngine.from_settings(self.settings)
        return self._engine

    def run_forever(self, stop_event: threading.Event) -> None:
        """Work until ``stop_event`` is set; the job in hand is finished or handed back first."""
        log.info("Worker %s started", self.worker_id)
        self.check_data_dir()
        failures = 0
        while not stop_event.is_set():
            try:
                worked = self.run_once(stop_event)
                failures = 0
            except Exception:
                # Most often the database is unreachable: wait longer each time, never exit.
                failures += 1
                log.exception("Worker %s hit an error (%d in a row)", self.worker_id, failures)
                worked = False
            if not worked:
                stop_event.wait(self._pause(failures))
        log.info("Worker %s stopped", self.worker_id)

    def check_data_dir(self) -> None:
        """Warn at start when local jobs' directories are not on storage every worker shares;
        a database that is down now must not keep the worker from starting."""
        try:
            with unit_of_work(self.session_factory) as session:
                warning = check_shared_data_dir(session, self.settings)
        except Exception:
            log.warning("Worker %s could not check its data dir", self.worker_id, exc_info=True)
            return
        if warning is not None:
            log.warning("Worker %s: %s", self.worker_id, warning)

    def _pause(self, failures: int) -> float:
        idle = self.config.idle_sleep_seconds
        if not failures:
            return idle
        return min(MAX_ERROR_BACKOFF_SECONDS, idle * 2**failures)

    def run_once(self, stop_event: threading.Event | None = None) -> bool:
        """Claim and work on one due job, else one due evaluation, else one due export;
        False when none was due."""
        with unit_of_work(self.session_factory) as session:
            job = claim_next_job(session, self.worker_id, self.settings.worker_lease_seconds)
            job_id = job.id if job is not None else None
        if job_id is None:
            return self.run_one_evaluation() or self.run_one_export()
        log.info("Worker %s claimed job %s", self.worker_id, job_id)
        work_on_claimed_job(
            self.session_factory,
            self.runner,
            job_id,
            self.settings.worker_lease_seconds,
            stop_event or threading.Event(),
        )
        return True

    def run_one_evaluation(self) -> bool:
        """Claim and run one due evaluation to its end; False when none was due."""
        lease = self.settings.worker_lease_seconds
        with unit_of_work(self.session_factory) as session:
            run = claim_next_eval_run(session, self.worker_id, lease)
            run_id = run.id if run is not None else None
        if run_id is None:
            return False
        log.info("Worker %s claimed evaluation %s", self.worker_id, run_id)
        with LeaseKeeper(self.session_factory, run_id, self.worker_id, lease, eval_heartbeat):
            execute_run(self.session_factory, self.settings, self.engine, run_id, self.worker_id)
        return True

    def run_one_export(self) -> bool:
        """Claim and write one due export to its end; False when none was due."""
        lease = self.settings.worker_lease_seconds
        with unit_of_work(self.session_factory) as session:
            export = claim_next_export(session, self.worker_id, lease)
            export_id = export.id if export is not None else None
        if export_id is None:
            return False
        log.info("Worker %s claimed export %s", self.worker_id, export_id)
        with LeaseKeeper(self.session_factory, export_id, self.worker_id, lease, export_heartbeat):
            execute_export(self.session_factory, self.settings, export_id, self.worker_id)
        return True


def work_on_claimed_job(
    session_factory: sessionmaker[Session],
    runner: JobRunner,
    job_id: str,
    lease_seconds: float,
    stop_event: threading.Event,
) -> StepResult | None:
    """Step the job while the provider wants the lease kept, then release it.

    Returns the last step's result, or None when the lease was lost (nothing is released).
    """
    with LeaseKeeper(session_factory, job_id, runner.worker_id, lease_seconds) as keeper:
        try:
            result = runner.advance(job_id)
            while result.keep_lease and not result.finished:
                if keeper.lost.is_set():
                    raise LeaseLost(f"Job {job_id} is leased by another worker now")
                if stop_event.wait(runner.config.in_worker_poll_seconds):
                    break
                result = runner.advance(job_id)
        except LeaseLost:
            log.warning("Worker %s lost the lease of job %s", runner.worker_id, job_id)
            runner.abandon(job_id)
            return None
        except Exception:
            # The database (most likely) failed mid-step: the lease will expire and another
            # worker resume the job from its checkpoint, so the trainer must not outlive us
            # holding the job directory.
            runner.abandon(job_id)
            raise
    if not result.finished:
        # Stopping mid-run hands an in-worker job to the next worker at once, and stops its
        # trainer here first: the next one resumes from the last checkpoint.
        run_after = result.next_run_after
        if result.keep_lease:
            runner.abandon(job_id)
            run_after = utcnow()
        with unit_of_work(session_factory) as session:
            release(session, job_id, runner.worker_id, run_after)
    return result


def advance_job_now(
    session_factory: sessionmaker[Session], settings: Settings, job_id: str
) -> bool:
    """Run one step of the job here and now when no worker holds it ("sync now").

    Otherwise (a worker holds it, or its provider trains inside a worker) only make it due
    now and return False. Call it with no uncommitted writes in the caller's session.
    """
    with unit_of_work(session_factory) as session:
        job = session.get(FineTuningJob, job_id)
        if job is None:
            raise NotFound(f"Fine-tuning job {job_id} not found")
        provider_name = job.provider
    runner = JobRunner(session_factory, settings, new_worker_id("sync"))
    claimed = None
    if not runner.provider_for(provider_name).runs_in_worker:
        with unit_of_work(session_factory) as session:
            claimed = claim_job(session, job_id, runner.worker_id, settings.worker_lease_seconds)
    if claimed is None:
        with unit_of_work(session_factory) as session:
            request_run_now(session, job_id)
        return False
    result = work_on_claimed_job(
        session_factory, runner, job_id, settings.worker_lease_seconds, threading.Event()
    )
    return result is not None


def sync_job(
    session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
    organization_id: str,
    job_id: str,
) -> FineTuningJob:
    """ "Sync now": advance the organization's job in the worker's own transactions, re-read it.

    It lives here, not in the jobs service, because it drives the worker; the jobs domain
    never imports the worker."""
    job = jobs_service.get_job(session, organization_id, job_id)
    advance_job_now(session_factory, settings, job.id)
    session.refresh(job)
    return job


class WorkerThread:
    """The embedded worker of ``tuneforge serve``: one Worker on a daemon thread, and the
    webhook dispatchers on threads of their own (a training job keeps the worker busy)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        engine: InferenceEngine | None = None,
    ) -> None:
        self.stop_event = threading.Event()
        self.worker = Worker(session_factory, settings, new_worker_id("embedded"), engine=engine)
        self._thread = threading.Thread(
            target=self.worker.run_forever, args=(self.stop_event,), name="tuneforge-worker"
        )
        self._thread.daemon = True
        self.webhooks = DeliveryThreads(session_factory, DeliveryConfig.from_settings(settings))

    def start(self) -> WorkerThread:
        self._thread.start()
        self.webhooks.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Let the current step finish and the lease go back, waiting at most ``timeout``."""
        self.stop_event.set()
        self.webhooks.stop(timeout)
        self._thread.join(timeout)
