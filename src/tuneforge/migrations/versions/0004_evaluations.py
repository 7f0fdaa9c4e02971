"""Evaluation runs and their per-example results

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 05:22:14.991679
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import tuneforge.db.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                name="evalstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("dataset_id", sa.String(length=32), nullable=False),
        sa.Column("split", sa.String(length=20), nullable=False),
        sa.Column("max_examples", sa.Integer(), nullable=False),
        sa.Column("max_tokens", sa.Integer(), nullable=False),
        sa.Column(
            "models",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "graders",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("examples_total", sa.Integer(), nullable=False),
        sa.Column("examples_done", sa.Integer(), nullable=False),
        sa.Column(
            "summary",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("started_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("run_after", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_eval_runs_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["fine_tuning_datasets.id"],
            name=op.f("fk_eval_runs_dataset_id_fine_tuning_datasets"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_eval_runs_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_runs")),
    )
    with op.batch_alter_table("eval_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_eval_runs_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_eval_runs_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_eval_runs_organization_id_created_at"),
            ["organization_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_eval_runs_run_after"), ["run_after"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_eval_runs_status_lease_expires_at"),
            ["status", "lease_expires_at"],
            unique=False,
        )

    op.create_table(
        "eval_results",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("line_number", sa.Integer(), nullable=True),
        sa.Column(
            "messages",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("expected", sa.Text(), nullable=False),
        sa.Column(
            "replies",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("regression", sa.Boolean(), nullable=False),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["eval_runs.id"],
            name=op.f("fk_eval_results_run_id_eval_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_results")),
    )
    with op.batch_alter_table("eval_results", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_eval_results_run_id_position"), ["run_id", "position"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("eval_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_eval_results_run_id_position"))

    op.drop_table("eval_results")
    with op.batch_alter_table("eval_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_eval_runs_status_lease_expires_at"))
        batch_op.drop_index(batch_op.f("ix_eval_runs_run_after"))
        batch_op.drop_index(batch_op.f("ix_eval_runs_organization_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_eval_runs_organization_id"))
        batch_op.drop_index(batch_op.f("ix_eval_runs_dataset_id"))

    op.drop_table("eval_runs")
