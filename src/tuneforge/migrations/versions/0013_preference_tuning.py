"""Preference tuning: dataset kinds, preference pairs, DPO jobs, conversation corrections

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # Every dataset before this revision holds chat examples, every job is supervised.
    op.add_column(
        "fine_tuning_datasets",
        sa.Column(
            "kind",
            sa.Enum("chat", "preference", name="datasetkind", native_enum=False, length=32),
            server_default="chat",
            nullable=False,
        ),
    )
    op.add_column("training_examples", sa.Column("preferred_output", _json(), nullable=True))
    op.add_column("training_examples", sa.Column("non_preferred_output", _json(), nullable=True))
    op.add_column(
        "fine_tuning_jobs",
        sa.Column("method", sa.String(length=20), server_default="supervised", nullable=False),
    )
    op.add_column("fine_tuning_jobs", sa.Column("parent_model", sa.String(300), nullable=True))
    op.add_column("fine_tuning_jobs", sa.Column("parent_model_id", sa.String(32), nullable=True))
    op.add_column("conversation_messages", sa.Column("correction", _json(), nullable=True))


def downgrade() -> None:
    op.drop_column("conversation_messages", "correction")
    op.drop_column("fine_tuning_jobs", "parent_model_id")
    op.drop_column("fine_tuning_jobs", "parent_model")
    op.drop_column("fine_tuning_jobs", "method")
    op.drop_column("training_examples", "non_preferred_output")
    op.drop_column("training_examples", "preferred_output")
    op.drop_column("fine_tuning_datasets", "kind")
