"""Engine and session factory; the request session dependency commits or rolls back."""

from __future__ import annotations

import json
import select
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

# Connections older than this are replaced at checkout: one that a firewall dropped silently
# while idle would otherwise be found only by a failing query.
POOL_RECYCLE_SECONDS = 30 * 60


def _load_json(document: str | bytes) -> Any:
    """orjson: several times the stdlib's speed on the JSON columns that every job view reads.
    The stdlib for what orjson refuses and the stdlib writes, such as NaN."""
    try:
        return orjson.loads(document)
    except orjson.JSONDecodeError:
        return json.loads(document)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_deserializer=_load_json,
        )
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_recycle=POOL_RECYCLE_SECONDS,
        json_deserializer=_load_json,
    )
    event.listen(engine, "checkout", _discard_if_closed_by_server)
    return engine


def _discard_if_closed_by_server(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """``pool_pre_ping`` without its round trip on every checkout.

    An idle connection has nothing to read unless the server ended it (a restart, a
    terminated backend): then its socket is readable, and the pool connects afresh.
    """
    # Imported here: only PostgreSQL engines listen, and SQLite servers start without it.
    from psycopg import Error as PsycopgError

    try:
        poller = select.poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN)
    except PsycopgError as exc:
        raise DisconnectionError("The PostgreSQL connection is closed") from exc
    if poller.poll(0):
        raise DisconnectionError("PostgreSQL closed the connection")


def _configure_sqlite(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
