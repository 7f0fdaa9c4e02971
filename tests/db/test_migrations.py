from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from tests.fixtures.database import create_postgres_database, drop_postgres_database
from tuneforge.db.engine import make_engine
from tuneforge.db.migrate import alembic_config, upgrade_to_head
from tuneforge.db.tables import Base


def test_migrations_produce_exactly_the_models_schema(migrated_database_url: str) -> None:
    engine = make_engine(migrated_database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()

    assert differences == []


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own, for migrating step by step."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"tuneforge_fresh_{os.getpid()}"
    yield create_postgres_database(name)
    drop_postgres_database(name)


def test_existing_users_get_their_case_folded_email_key(fresh_database_url: str) -> None:
    command.upgrade(alembic_config(fresh_database_url), "0006")
    engine = make_engine(fresh_database_url)
    with engine.begin() as conn:
        for user_id, email in (("u1", "Ölaf@Example.com"), ("u2", "plain@example.com")):
            conn.execute(
                text(
                    "INSERT INTO users (id, email, name, password_hash, is_active, created_at, "
                    "updated_at) VALUES (:id, :email, 'x', 'x', true, :now, :now)"
                ),
                {"id": user_id, "email": email, "now": datetime.now(UTC)},
            )

    upgrade_to_head(fresh_database_url)

    with engine.connect() as conn:
        keys = dict(conn.execute(text("SELECT id, email_key FROM users")).all())
    engine.dispose()
    assert keys == {"u1": "ölaf@example.com", "u2": "plain@example.com"}
