"""Whether every worker sees the same data dir, where local jobs keep their directories.

A local job's trainer writes checkpoints into ``<data dir>/jobs/<job id>/`` and the
database keeps absolute paths into it (training files, checkpoints). The worker that
resumes a job after another one died must therefore see that directory at the same path:
on PostgreSQL, where workers run on several machines, the data dir must be shared storage.
Each data dir holds a random ``storage-id``; the first worker records its id and path in
``deployment_facts``, and every later worker compares its own with them at start.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.db.tables.deployment import DeploymentFact

STORAGE_ID_FILE = "storage-id"
LOCAL_JOBS_STORAGE = "local_jobs_storage"


def data_dir_storage_id(settings: Settings) -> str:
    """The data dir's random id, created once (0600): equal ids mean the same storage.

    The file is written in full under a private name and then linked into place, so a
    concurrent starter never reads it half written, and only the first link wins."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    id_file = settings.data_dir / STORAGE_ID_FILE
    if not id_file.exists():
        draft = settings.data_dir / f".{STORAGE_ID_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(16))
        try:
            with contextlib.suppress(FileExistsError):
                os.link(draft, id_file)
        finally:
            draft.unlink()
    return id_file.read_text().strip()


@dataclass(frozen=True)
class DataDirRecord:
    """Which data dir a worker uses: its storage id, its path and the host that saw it."""

    storage_id: str
    path: str
    host: str

    @classmethod
    def here(cls, settings: Settings) -> DataDirRecord:
        return cls(
            storage_id=data_dir_storage_id(settings),
            path=str(settings.data_dir.resolve()),
            host=socket.gethostname(),
        )


def check_shared_data_dir(session: Session, settings: Settings) -> str | None:
    """On PostgreSQL, record this worker's data dir if none is yet, else compare it with the
    recorded one: a warning to log when they differ, None when they agree (or on SQLite,
    whose one database file means one machine)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    here = DataDirRecord.here(settings)
    session.execute(
        insert(DeploymentFact)
        .values(key=LOCAL_JOBS_STORAGE, value=json.dumps(asdict(here)))
        .on_conflict_do_nothing(index_elements=[DeploymentFact.key])
    )
    stored = session.execute(
        select(DeploymentFact.value).where(DeploymentFact.key == LOCAL_JOBS_STORAGE)
    ).scalar_one()
    first = DataDirRecord(**json.loads(stored))
    if first.storage_id != here.storage_id:
        problem = (
            f"this worker's data dir {here.path} (storage id {here.storage_id}) is not the "
            f"data dir {first.path} (storage id {first.storage_id}) that the worker on "
            f"{first.host} uses"
        )
    elif first.path != here.path:
        problem = (
            f"this worker sees the shared data dir (storage id {here.storage_id}) at "
            f"{here.path}, but the worker on {first.host} sees it at {first.path}"
        )
    else:
        return None
    return (
        f"Local jobs cannot move between workers: {problem}. A local job started by another "
        "worker fails here instead of resuming from its checkpoints. Put TUNEFORGE_DATA_DIR "
        "on storage every worker shares, mounted at the same path."
    )
