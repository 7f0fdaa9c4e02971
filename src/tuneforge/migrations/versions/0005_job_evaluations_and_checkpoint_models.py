"""Evaluations a job queues for itself, on its held-out lines; models from checkpoints

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 08:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

FINAL_MODEL = sa.text("checkpoint_step IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("eval_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "example_lines",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("job_id", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_eval_runs_job_id"), ["job_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_eval_runs_job_id_fine_tuning_jobs"),
            "fine_tuning_jobs",
            ["job_id"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("fine_tuned_models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checkpoint_step", sa.Integer(), nullable=True))
        batch_op.drop_constraint(batch_op.f("uq_fine_tuned_models_job_id"), type_="unique")
        batch_op.create_index(
            "uq_fine_tuned_models_job_final",
            ["job_id"],
            unique=True,
            sqlite_where=FINAL_MODEL,
            postgresql_where=FINAL_MODEL,
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuned_models_job_id_checkpoint_step"),
            ["job_id", "checkpoint_step"],
            unique=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("fine_tuned_models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fine_tuned_models_job_id_checkpoint_step"))
        batch_op.drop_index("uq_fine_tuned_models_job_final")
        batch_op.create_unique_constraint(batch_op.f("uq_fine_tuned_models_job_id"), ["job_id"])
        batch_op.drop_column("checkpoint_step")
    with op.batch_alter_table("eval_runs", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_eval_runs_job_id_fine_tuning_jobs"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_eval_runs_job_id"))
        batch_op.drop_column("job_id")
        batch_op.drop_column("example_lines")
