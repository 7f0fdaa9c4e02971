"""Users are unique by their case-folded email, the same on SQLite and PostgreSQL

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 09:40:00
"""

from __future__ import annotations

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _key(email: str) -> str:
    """``auth.security.email_key`` as of this revision (migrations do not import app code)."""
    return unicodedata.normalize("NFC", email).casefold()


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_key", sa.String(length=320), nullable=True))
    connection = op.get_bind()
    users = sa.table("users", sa.column("id"), sa.column("email"), sa.column("email_key"))
    seen: dict[str, str] = {}
    for user_id, email in connection.execute(sa.select(users.c.id, users.c.email)).all():
        key = _key(email)
        if key in seen:
            raise RuntimeError(
                f"Users {seen[key]} and {user_id} have the same email apart from case "
                f"({email!r}); merge or rename one, then migrate again"
            )
        seen[key] = user_id
        connection.execute(users.update().where(users.c.id == user_id).values(email_key=key))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("email_key", existing_type=sa.String(length=320), nullable=False)
        batch_op.drop_constraint(batch_op.f("uq_users_email"), type_="unique")
        batch_op.create_unique_constraint(batch_op.f("uq_users_email_key"), ["email_key"])


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_users_email_key"), type_="unique")
        batch_op.create_unique_constraint(batch_op.f("uq_users_email"), ["email"])
        batch_op.drop_column("email_key")
