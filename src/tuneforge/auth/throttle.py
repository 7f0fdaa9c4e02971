"""Sign-in throttling: failures per account and per client address, in the database.

Each key (``account:<email key>``, ``address:<ip>``) may fail a few times for free; after
that every further attempt waits, twice as long after each failure, up to a maximum, and
is refused with a 429 and ``Retry-After`` until then. Rows live in the database so every
process and worker host sees the same counts. Failures older than the maximum wait are
forgotten; a successful sign-in clears its account's count (not its address's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.tables.auth import LoginThrottle
from tuneforge.errors import TooManyRequests


@dataclass(frozen=True)
class ThrottleKey:
    key: str
    free_failures: int


def keys_for(email_key: str, address: str | None, settings: Settings) -> list[ThrottleKey]:
    keys = [ThrottleKey(f"account:{email_key}", settings.login_free_failures_per_account)]
    if address:
        keys.append(ThrottleKey(f"address:{address}", settings.login_free_failures_per_address))
    return keys


def refuse_if_waiting(session: Session, keys: list[ThrottleKey]) -> None:
    now = utcnow()
    stmt = select(LoginThrottle.blocked_until).where(
        LoginThrottle.key.in_([k.key for k in keys]), LoginThrottle.blocked_until > now
    )
    until = max(session.scalars(stmt), default=None)
    if until is not None:
        wait = max(1, math.ceil((until - now).total_seconds()))
        raise TooManyRequests(
            f"Too many failed sign-ins; try again in {wait} seconds", retry_after=wait
        )


def record_failure(session: Session, keys: list[ThrottleKey], settings: Settings) -> None:
    now = utcnow()
    forget_before = now - timedelta(seconds=settings.login_max_wait_seconds)
    for throttle in keys:
        row = session.get(LoginThrottle, throttle.key, with_for_update=True)
        if row is None:
            _insert_once(session, throttle.key, now)
            row = session.get(
                LoginThrottle, throttle.key, with_for_update=True, populate_existing=True
            )
            assert row is not None
        if row.last_failure_at < forget_before:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        row.blocked_until = _blocked_until(row.failures, throttle.free_failures, now, settings)
    session.flush()


def clear(session: Session, key: ThrottleKey) -> None:
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == key.key))


def _blocked_until(failures: int, free: int, now: datetime, settings: Settings) -> datetime | None:
    over = failures - free
    if over < 0:
        return None
    return now + timedelta(seconds=min(2**over, settings.login_max_wait_seconds))


def _insert_once(session: Session, key: str, now: datetime) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: two processes failing at once make one row."""
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    values = {
        "key": key,
        "failures": 0,
        "last_failure_at": now,
        "created_at": now,
        "updated_at": now,
    }
    session.execute(
        insert(LoginThrottle).values(values).on_conflict_do_nothing(index_elements=["key"])
    )
