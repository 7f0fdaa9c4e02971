"""Running a claimed export: write its file into the data dir, hash it, record it.

The worker holds the export's lease throughout (a heartbeat thread extends it). Progress
is written at most once a second, each time checking that the lease is still this
worker's; a lost lease stops the work and leaves the row to the worker that took it. The
file is written under a temporary name and renamed when complete, so a download never
sees half a file; a worker that died mid-way leaves only dot-named scratch files, which
the next attempt clears. An export that has been claimed ``MAX_ATTEMPTS`` times (its workers keep
dying, e.g. out of memory) fails rather than loop.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.engine import unit_of_work
from tuneforge.db.tables.exports import ExportStatus, ModelExport
from tuneforge.errors import TuneForgeError
from tuneforge.exports import service
from tuneforge.exports.service import ExportWork
from tuneforge.exports.writers import file_sha256, write_export

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
PROGRESS_INTERVAL_SECONDS = 1.0


class LeaseLost(Exception):
    """Another worker holds the export now."""


class _Reporter:
    """Writes (stage, progress) to the row at most once a second, checking the lease."""

    def __init__(
        self, session_factory: sessionmaker[Session], export_id: str, worker_id: str
    ) -> None:
        self.session_factory = session_factory
        self.export_id = export_id
        self.worker_id = worker_id
        self._stage = ""
        self._written_at = 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if stage == self._stage and now - self._written_at < PROGRESS_INTERVAL_SECONDS:
            return
        self._stage, self._written_at = stage, now
        with unit_of_work(self.session_factory) as session:
            result = session.execute(
                update(ModelExport)
                .where(
                    ModelExport.id == self.export_id,
                    ModelExport.lease_owner == self.worker_id,
                    ModelExport.status == ExportStatus.RUNNING,
                )
                .values(stage=stage[:200], progress=min(max(fraction, 0.0), 1.0))
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost(f"Export {self.export_id} is no longer this worker's")


def execute_export(
    session_factory: sessionmaker[Session], settings: Settings, export_id: str, worker_id: str
) -> ExportStatus | None:
    """Work on a leased export until it ends; None when the lease was lost."""
    folder = service.export_dir(settings, export_id)
    # Per worker, so a worker that lost the lease unnoticed never writes the next one's files.
    own = f".{hashlib.sha256(worker_id.encode()).hexdigest()[:12]}"
    scratch = folder / f"{own}-scratch"
    try:
        with unit_of_work(session_factory) as session:
            work = _start(session, settings, export_id, worker_id)
        if work is None:
            return ExportStatus.FAILED
        _clear(folder)
        scratch.mkdir(parents=True)
        report = _Reporter(session_factory, export_id, worker_id)
        partial = folder / f"{own}-{work.file_name}"
        write_export(work, partial, scratch, report)
        shutil.rmtree(scratch, ignore_errors=True)
        digest = file_sha256(partial, lambda done: report("hashing", 0.9 + 0.1 * done))
        final = folder / work.file_name
        with unit_of_work(session_factory) as session:
            export = _leased(session, export_id, worker_id)  # locked: renamed only while ours
            if export is None:
                partial.unlink(missing_ok=True)
                return None
            partial.replace(final)
            export.file_name = final.name
            export.size_bytes = final.stat().st_size
            export.sha256 = digest
            _finish(export, ExportStatus.SUCCEEDED, "done")
        return ExportStatus.SUCCEEDED
    except LeaseLost:
        log.warning("Worker %s lost the lease of export %s", worker_id, export_id)
        _clear(folder, own)
        return None
    except Exception as exc:  # an export that cannot be written fails, with the reason
        log.exception("Export %s failed", export_id)
        _clear(folder, own)
        detail = exc.detail if isinstance(exc, TuneForgeError) else f"{type(exc).__name__}: {exc}"
        with unit_of_work(session_factory) as session:
            export = _leased(session, export_id, worker_id)
            if export is not None:
                export.error_message = detail
                _finish(export, ExportStatus.FAILED, "failed")
        return ExportStatus.FAILED


def _start(
    session: Session, settings: Settings, export_id: str, worker_id: str
) -> ExportWork | None:
    """Mark the export running and resolve its files; None when it failed for good here."""
    export = _leased(session, export_id, worker_id)
    if export is None:
        raise LeaseLost(f"Export {export_id} is no longer this worker's")
    export.attempts += 1
    if export.attempts > MAX_ATTEMPTS:
        export.error_message = (
            f"Gave up after {MAX_ATTEMPTS} attempts: each worker stopped mid-way "
            "(out of memory or killed?)"
        )
        _finish(export, ExportStatus.FAILED, "failed")
        return None
    export.status = ExportStatus.RUNNING
    export.started_at = utcnow()
    export.stage, export.progress = "starting", 0.0
    return service.export_work(session, settings, export)


def _leased(session: Session, export_id: str, worker_id: str) -> ModelExport | None:
    """The export, locked, while this worker still holds its lease."""
    export = session.get(ModelExport, export_id, with_for_update=True)
    return export if export is not None and export.lease_owner == worker_id else None


def _finish(export: ModelExport, status: ExportStatus, stage: str) -> None:
    export.status = status
    export.stage = stage
    if status is ExportStatus.SUCCEEDED:
        export.progress = 1.0
    export.finished_at = utcnow()
    export.lease_owner = None
    export.lease_expires_at = None


def _clear(folder: Path, prefix: str = ".") -> None:
    """Scratch folders and partial files: this worker's, or every earlier attempt's."""
    if not folder.is_dir():
        return
    for leftover in folder.iterdir():
        if not leftover.name.startswith(prefix):
            continue
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
