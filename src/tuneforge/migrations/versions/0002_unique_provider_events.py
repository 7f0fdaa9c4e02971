"""Store each provider event once per job

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 17:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WHERE = sa.text("provider_event_id IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "uq_fine_tuning_events_job_id_provider_event_id",
        "fine_tuning_events",
        ["job_id", "provider_event_id"],
        unique=True,
        postgresql_where=WHERE,
        sqlite_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index("uq_fine_tuning_events_job_id_provider_event_id", "fine_tuning_events")
