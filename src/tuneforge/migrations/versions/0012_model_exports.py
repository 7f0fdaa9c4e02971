"""Model exports: queued adapter, merged, GGUF and Ollama files of a fine-tuned model

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tuneforge.db.base

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_exports",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.String(length=32), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.Column(
            "format",
            sa.Enum(
                "adapter",
                "merged",
                "gguf",
                "ollama",
                name="exportformat",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "quantization",
            sa.Enum("f16", "q8_0", name="exportquantization", native_enum=False, length=32),
            nullable=True,
        ),
        sa.Column("agent_id", sa.String(length=32), nullable=True),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "succeeded",
                "failed",
                name="exportstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("stage", sa.String(length=200), nullable=True),
        sa.Column("file_name", sa.String(length=300), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
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
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_model_exports_agent_id_agents"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_model_exports_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["fine_tuned_models.id"],
            name=op.f("fk_model_exports_model_id_fine_tuned_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_model_exports_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_exports")),
    )
    with op.batch_alter_table("model_exports", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_model_exports_model_id_created_at"),
            ["model_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_model_exports_organization_id_created_at"),
            ["organization_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_model_exports_run_after"), ["run_after"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_model_exports_status_lease_expires_at"),
            ["status", "lease_expires_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("model_exports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_exports_status_lease_expires_at"))
        batch_op.drop_index(batch_op.f("ix_model_exports_run_after"))
        batch_op.drop_index(batch_op.f("ix_model_exports_organization_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_model_exports_model_id_created_at"))

    op.drop_table("model_exports")
