"""FastAPI dependencies for settings and the per-request session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tuneforge.config import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_app_settings(request: Request) -> Settings:
    """Async so that FastAPI calls it inline instead of through the threadpool."""
    return request.app.state.settings


def session_slots(engine: Engine) -> anyio.CapacityLimiter:
    """As many concurrent request sessions as the pool keeps connections.

    A session keeps its connection between the threadpool steps of a request. Without this
    cap, more requests than connections can each hold one while every thread waits for a
    connection, and nobody gets a thread to commit: the workers stall until the pool times out.
    The pool's overflow is left to streams and background units of work; a burst of requests
    would otherwise open and close overflow connections, each a new PostgreSQL backend.
    """
    size = getattr(engine.pool, "size", lambda: 5)()
    return anyio.CapacityLimiter(max(1, size))


def _finish(session: Session, *, commit: bool) -> None:
    """Commit or roll back, then release the connection: one threadpool hop, not two."""
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


def _has_pending_writes(session: Session) -> bool:
    return bool(session.new or session.dirty or session.deleted)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's unit of work: services never commit, this does (or rolls back).

    A safe method's session is in autocommit: under READ COMMITTED each statement sees its
    own snapshot anyway, so BEGIN and COMMIT would only add two round trips. Such a session
    holds no transaction at the end, and closes without I/O unless it has changes to flush."""
    state = request.app.state
    read_only = request.method in SAFE_METHODS
    async with state.session_slots:
        factory = state.read_session_factory if read_only else state.session_factory
        session: Session = factory()
        try:
            yield session
        except BaseException:
            await run_in_threadpool(_finish, session, commit=False)
            raise
        if read_only and not _has_pending_writes(session):
            session.close()
        else:
            await run_in_threadpool(_finish, session, commit=True)


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
