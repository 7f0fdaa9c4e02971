"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24 16:24:03.142055
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import tuneforge.db.base

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "organizations",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
    )
    op.create_table(
        "users",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "api_keys",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("last_used_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_api_keys_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_api_keys_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_api_keys_user_id"), ["user_id"], unique=False)

    op.create_table(
        "fine_tuning_datasets",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "format",
            sa.Enum(
                "jsonl", "csv", "conversations", name="datasetformat", native_enum=False, length=32
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "uploaded",
                "validating",
                "valid",
                "invalid",
                name="datasetstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("original_filename", sa.String(length=300), nullable=True),
        sa.Column("file_path", sa.String(length=500), nullable=True),
        sa.Column("file_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("target_model", sa.String(length=200), nullable=True),
        sa.Column("total_examples", sa.Integer(), nullable=False),
        sa.Column("valid_examples", sa.Integer(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("validation_fraction", sa.Float(), nullable=False),
        sa.Column("split_seed", sa.Integer(), nullable=False),
        sa.Column("train_examples", sa.Integer(), nullable=False),
        sa.Column("validation_examples", sa.Integer(), nullable=False),
        sa.Column(
            "validation_report",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("validated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("deleted_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_fine_tuning_datasets_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_fine_tuning_datasets_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fine_tuning_datasets")),
    )
    with op.batch_alter_table("fine_tuning_datasets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_datasets_created_by"), ["created_by"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_datasets_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_datasets_organization_id_status_created_at"),
            ["organization_id", "status", "created_at"],
            unique=False,
        )

    op.create_table(
        "memberships",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column(
            "role",
            sa.Enum("owner", "admin", "member", name="role", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_memberships_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_memberships_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memberships")),
        sa.UniqueConstraint("user_id", "organization_id", name=op.f("uq_memberships_user_id")),
    )
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_memberships_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_memberships_user_id"), ["user_id"], unique=False)

    op.create_table(
        "fine_tuning_jobs",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.Column("dataset_id", sa.String(length=32), nullable=False),
        sa.Column("validation_dataset_id", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("base_model", sa.String(length=200), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "validating_files",
                "queued",
                "running",
                "cancelling",
                "succeeded",
                "failed",
                "cancelled",
                name="jobstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "hyperparameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("suffix", sa.String(length=64), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("provider_job_id", sa.String(length=200), nullable=True),
        sa.Column(
            "provider_file_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("fine_tuned_model_name", sa.String(length=300), nullable=True),
        sa.Column("progress_percentage", sa.Float(), nullable=False),
        sa.Column("trained_tokens", sa.BigInteger(), nullable=True),
        sa.Column("estimated_finish", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "latest_metrics",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("started_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("run_after", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_fine_tuning_jobs_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["fine_tuning_datasets.id"],
            name=op.f("fk_fine_tuning_jobs_dataset_id_fine_tuning_datasets"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_fine_tuning_jobs_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["validation_dataset_id"],
            ["fine_tuning_datasets.id"],
            name=op.f("fk_fine_tuning_jobs_validation_dataset_id_fine_tuning_datasets"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fine_tuning_jobs")),
    )
    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_jobs_created_by"), ["created_by"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_jobs_dataset_id"), ["dataset_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_jobs_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_jobs_organization_id_created_at"),
            ["organization_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_jobs_organization_id_provider"),
            ["organization_id", "provider"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_jobs_organization_id_status"),
            ["organization_id", "status"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_jobs_provider_job_id"), ["provider_job_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_jobs_run_after"), ["run_after"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_jobs_status_lease_expires_at"),
            ["status", "lease_expires_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_jobs_validation_dataset_id"),
            ["validation_dataset_id"],
            unique=False,
        )

    op.create_table(
        "fine_tuned_models",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("dataset_id", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("base_model", sa.String(length=200), nullable=False),
        sa.Column("provider_model_id", sa.String(length=300), nullable=False),
        sa.Column(
            "status",
            sa.Enum("active", "archived", name="modelstatus", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column(
            "metrics_summary",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("deleted_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["fine_tuning_datasets.id"],
            name=op.f("fk_fine_tuned_models_dataset_id_fine_tuning_datasets"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["fine_tuning_jobs.id"],
            name=op.f("fk_fine_tuned_models_job_id_fine_tuning_jobs"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_fine_tuned_models_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fine_tuned_models")),
        sa.UniqueConstraint("job_id", name=op.f("uq_fine_tuned_models_job_id")),
    )
    with op.batch_alter_table("fine_tuned_models", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fine_tuned_models_dataset_id"), ["dataset_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuned_models_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuned_models_organization_id_status"),
            ["organization_id", "status"],
            unique=False,
        )

    op.create_table(
        "fine_tuning_checkpoints",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("provider_checkpoint_id", sa.String(length=200), nullable=True),
        sa.Column("model_reference", sa.String(length=500), nullable=True),
        sa.Column(
            "metrics",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["fine_tuning_jobs.id"],
            name=op.f("fk_fine_tuning_checkpoints_job_id_fine_tuning_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fine_tuning_checkpoints")),
    )
    with op.batch_alter_table("fine_tuning_checkpoints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_checkpoints_job_id"), ["job_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_fine_tuning_checkpoints_job_id_step"), ["job_id", "step"], unique=True
        )

    op.create_table(
        "fine_tuning_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("level", sa.String(length=10), nullable=False),
        sa.Column("event_type", sa.String(length=50), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("provider_event_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["fine_tuning_jobs.id"],
            name=op.f("fk_fine_tuning_events_job_id_fine_tuning_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fine_tuning_events")),
    )
    with op.batch_alter_table("fine_tuning_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fine_tuning_events_job_id"), ["job_id"], unique=False)

    op.create_table(
        "job_metrics",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["fine_tuning_jobs.id"],
            name=op.f("fk_job_metrics_job_id_fine_tuning_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_metrics")),
    )
    with op.batch_alter_table("job_metrics", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_metrics_job_id"), ["job_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_job_metrics_job_id_name_step"), ["job_id", "name", "step"], unique=False
        )

    op.create_table(
        "agents",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("fine_tuned_model_id", sa.String(length=32), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("deleted_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["fine_tuned_model_id"],
            ["fine_tuned_models.id"],
            name=op.f("fk_agents_fine_tuned_model_id_fine_tuned_models"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_agents_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
    )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agents_fine_tuned_model_id"), ["fine_tuned_model_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_agents_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "conversations",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("agent_id", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=True),
        sa.Column("started_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("feedback", sa.Text(), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("deleted_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_conversations_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_conversations_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_conversations_agent_id"), ["agent_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_conversations_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_conversations_organization_id_agent_id_started_at"),
            ["organization_id", "agent_id", "started_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_conversations_rating"), ["rating"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_conversations_started_at"), ["started_at"], unique=False
        )

    op.create_table(
        "model_usage",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.String(length=32), nullable=False),
        sa.Column("agent_id", sa.String(length=32), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_model_usage_agent_id_agents"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["fine_tuned_models.id"],
            name=op.f("fk_model_usage_model_id_fine_tuned_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_model_usage_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_usage")),
    )
    with op.batch_alter_table("model_usage", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_usage_agent_id"), ["agent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_model_usage_model_id"), ["model_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_model_usage_model_id_created_at"),
            ["model_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_model_usage_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "conversation_messages",
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column(
            "tool_calls",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("tool_call_id", sa.String(length=100), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_messages_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversation_messages")),
    )
    with op.batch_alter_table("conversation_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conversation_messages_conversation_id"),
            ["conversation_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_conversation_messages_conversation_id_position"),
            ["conversation_id", "position"],
            unique=True,
        )

    op.create_table(
        "conversation_tags",
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("tag", sa.String(length=100), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_tags_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversation_tags")),
    )
    with op.batch_alter_table("conversation_tags", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conversation_tags_conversation_id"), ["conversation_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_conversation_tags_tag_conversation_id"),
            ["tag", "conversation_id"],
            unique=False,
        )

    op.create_table(
        "training_examples",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("dataset_id", sa.String(length=32), nullable=False),
        sa.Column("line_number", sa.Integer(), nullable=False),
        sa.Column(
            "messages",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "tools",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("raw_line", sa.Text(), nullable=True),
        sa.Column("is_valid", sa.Boolean(), nullable=False),
        sa.Column(
            "errors",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("assistant_token_count", sa.Integer(), nullable=False),
        sa.Column(
            "split",
            sa.Enum("train", "validation", name="examplesplit", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("source_conversation_id", sa.String(length=32), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tuneforge.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["fine_tuning_datasets.id"],
            name=op.f("fk_training_examples_dataset_id_fine_tuning_datasets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_training_examples_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_conversation_id"],
            ["conversations.id"],
            name=op.f("fk_training_examples_source_conversation_id_conversations"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_examples")),
    )
    with op.batch_alter_table("training_examples", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_training_examples_dataset_id"), ["dataset_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_training_examples_dataset_id_line_number"),
            ["dataset_id", "line_number"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_training_examples_dataset_id_split"),
            ["dataset_id", "split"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_training_examples_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_training_examples_source_conversation_id"),
            ["source_conversation_id"],
            unique=False,
        )


def downgrade() -> None:

    with op.batch_alter_table("training_examples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_training_examples_source_conversation_id"))
        batch_op.drop_index(batch_op.f("ix_training_examples_organization_id"))
        batch_op.drop_index(batch_op.f("ix_training_examples_dataset_id_split"))
        batch_op.drop_index(batch_op.f("ix_training_examples_dataset_id_line_number"))
        batch_op.drop_index(batch_op.f("ix_training_examples_dataset_id"))

    op.drop_table("training_examples")
    with op.batch_alter_table("conversation_tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversation_tags_tag_conversation_id"))
        batch_op.drop_index(batch_op.f("ix_conversation_tags_conversation_id"))

    op.drop_table("conversation_tags")
    with op.batch_alter_table("conversation_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversation_messages_conversation_id_position"))
        batch_op.drop_index(batch_op.f("ix_conversation_messages_conversation_id"))

    op.drop_table("conversation_messages")
    with op.batch_alter_table("model_usage", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_usage_organization_id"))
        batch_op.drop_index(batch_op.f("ix_model_usage_model_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_model_usage_model_id"))
        batch_op.drop_index(batch_op.f("ix_model_usage_agent_id"))

    op.drop_table("model_usage")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversations_started_at"))
        batch_op.drop_index(batch_op.f("ix_conversations_rating"))
        batch_op.drop_index(batch_op.f("ix_conversations_organization_id_agent_id_started_at"))
        batch_op.drop_index(batch_op.f("ix_conversations_organization_id"))
        batch_op.drop_index(batch_op.f("ix_conversations_agent_id"))

    op.drop_table("conversations")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agents_organization_id"))
        batch_op.drop_index(batch_op.f("ix_agents_fine_tuned_model_id"))

    op.drop_table("agents")
    with op.batch_alter_table("job_metrics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_metrics_job_id_name_step"))
        batch_op.drop_index(batch_op.f("ix_job_metrics_job_id"))

    op.drop_table("job_metrics")
    with op.batch_alter_table("fine_tuning_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fine_tuning_events_job_id"))

    op.drop_table("fine_tuning_events")
    with op.batch_alter_table("fine_tuning_checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fine_tuning_checkpoints_job_id_step"))
        batch_op.drop_index(batch_op.f("ix_fine_tuning_checkpoints_job_id"))

    op.drop_table("fine_tuning_checkpoints")
    with op.batch_alter_table("fine_tuned_models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fine_tuned_models_organization_id_status"))
        batch_op.drop_index(batch_op.f("ix_fine_tuned_models_organization_id"))
        batch_op.drop_index(batch_op.f("ix_fine_tuned_models_dataset_id"))

    op.drop_table("fine_tuned_models")
    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fine_tuning_jobs_validation_dataset_id"))
        batch_op.drop_index(batch_op.f("ix_fine_tuning_jobs_status_lease_expires_at"))
        batch_op.drop_index(batch_op.f("ix_fine_tuning_jobs_run_after"))
        batch_op.drop_index(batch_op.f("ix_fine_tuning_jobs_provider_job_id"))
        batch_op.drop_index(batch_op.f("ix_fine_tuning_jobs_organization_id_status"))
        batch_op.drop_index(batch_op.f("ix_fine_tuning_jobs_organization_id_provider"))
        batch_op.drop_index(batch_op.f("ix_fine_tuning_jobs_organization_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_fine_tuning_jobs_organization_id"))
        batch_op.drop_index(batch_op.f("ix_fine_tuning_jobs_dataset_id"))
        batch_op.drop_index(batch_op.f("ix_fine_tuning_jobs_created_by"))

    op.drop_table("fine_tuning_jobs")
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_memberships_user_id"))
        batch_op.drop_index(batch_op.f("ix_memberships_organization_id"))

    op.drop_table("memberships")
    with op.batch_alter_table("fine_tuning_datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fine_tuning_datasets_organization_id_status_created_at"))
        batch_op.drop_index(batch_op.f("ix_fine_tuning_datasets_organization_id"))
        batch_op.drop_index(batch_op.f("ix_fine_tuning_datasets_created_by"))

    op.drop_table("fine_tuning_datasets")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_user_id"))
        batch_op.drop_index(batch_op.f("ix_api_keys_organization_id"))

    op.drop_table("api_keys")
    op.drop_table("users")
    op.drop_table("organizations")
