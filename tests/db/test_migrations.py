from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tuneforge.db.engine import make_engine
from tuneforge.db.tables import Base


def test_migrations_produce_exactly_the_models_schema(migrated_database_url: str) -> None:
    engine = make_engine(migrated_database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()

    assert differences == []
