"""Drop training_examples' index on dataset_id alone: the (dataset_id, line_number) and
(dataset_id, split) indexes serve every lookup by dataset, and each index is one more write
per example row of an upload.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 14:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_training_examples_dataset_id", table_name="training_examples")


def downgrade() -> None:
    op.create_index("ix_training_examples_dataset_id", "training_examples", ["dataset_id"])
