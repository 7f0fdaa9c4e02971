from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import text

from tests.fixtures.database import POSTGRES_ADMIN_DSN
from tuneforge.db.engine import make_engine


def test_a_connection_the_server_closed_is_replaced_before_use(database_url: str) -> None:
    """No pre-ping round trip, yet a restart or a terminated backend costs no request."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL connections only")
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
            deadline = time.monotonic() + 10
            while admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)
            ).fetchone():
                assert time.monotonic() < deadline
                time.sleep(0.01)

        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != backend
    finally:
        engine.dispose()
