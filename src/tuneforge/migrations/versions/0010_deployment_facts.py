"""Facts about the deployment shared by every process, such as the local jobs' storage id

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tuneforge.db.base

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployment_facts",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_deployment_facts")),
    )


def downgrade() -> None:
    op.drop_table("deployment_facts")
