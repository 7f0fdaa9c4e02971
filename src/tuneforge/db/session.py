"""The per-request session: its FastAPI dependency and the unit of work under it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tuneforge.state import AppState, app_state

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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


def _ends_without_io(session: Session, *, autocommit: bool) -> bool:
    """Whether closing is all there is to do: nothing to flush, and no database transaction
    to commit (an autocommit session never has one; an unused session has none yet)."""
    if session.new or session.dirty or session.deleted:
        return False
    return autocommit or not session.in_transaction()


@asynccontextmanager
async def request_unit_of_work(state: AppState, *, read_only: bool) -> AsyncIterator[Session]:
    """A request's unit of work on the app's pool: commit on success, roll back on error.

    A read-only one is in autocommit: under READ COMMITTED each statement sees its own
    snapshot anyway, so BEGIN and COMMIT would only add two round trips. A session that ends
    without I/O is closed on the event loop, saving a threadpool hop."""
    async with state.session_slots:
        factory = state.read_session_factory if read_only else state.session_factory
        session: Session = factory()
        try:
            yield session
        except BaseException:
            await run_in_threadpool(_finish, session, commit=False)
            raise
        if _ends_without_io(session, autocommit=read_only):
            session.close()
        else:
            await run_in_threadpool(_finish, session, commit=True)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's session: services never commit, this does (or rolls back). Safe
    methods get a read-only one. Async, so that FastAPI runs it inline."""
    read_only = request.method in SAFE_METHODS
    async with request_unit_of_work(app_state(request), read_only=read_only) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
