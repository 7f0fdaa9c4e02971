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


async def get_app_settings(request: Request) -> Settings:
    """Async so that FastAPI calls it inline instead of through the threadpool."""
    return request.app.state.settings


def session_slots(engine: Engine) -> anyio.CapacityLimiter:
    """As many concurrent request sessions as the pool has connections.

    A session keeps its connection between the threadpool steps of a request. Without this
    cap, more requests than connections can each hold one while every thread waits for a
    connection, and nobody gets a thread to commit: the workers stall until the pool times out.
    """
    pool = engine.pool
    size = getattr(pool, "size", lambda: 5)()
    overflow = getattr(pool, "_max_overflow", 10)
    return anyio.CapacityLimiter(max(1, size + max(overflow, 0)))


def _finish(session: Session, *, commit: bool) -> None:
    """Commit or roll back, then release the connection: one threadpool hop, not two."""
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's unit of work: services never commit, this does (or rolls back)."""
    async with request.app.state.session_slots:
        session: Session = request.app.state.session_factory()
        try:
            yield session
        except BaseException:
            await run_in_threadpool(_finish, session, commit=False)
            raise
        await run_in_threadpool(_finish, session, commit=True)


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
