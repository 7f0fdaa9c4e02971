"""Store the hyperparameters "auto" resolved to when a job was created

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 05:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "fine_tuning_jobs",
        sa.Column(
            "resolved_hyperparameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
    )


def downgrade() -> None:
    op.drop_column("fine_tuning_jobs", "resolved_hyperparameters")
