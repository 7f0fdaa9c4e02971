from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from tuneforge.auth.security import email_key
from tuneforge.db.tables.auth import ApiKey, Membership, Organization, Role, User


class Access(NamedTuple):
    """An active user's membership of an organization: what a credential resolves to."""

    user: User
    organization: Organization
    role: Role


def get_user_by_email(session: Session, email: str) -> User | None:
    return session.scalars(select(User).where(User.email_key == email_key(email))).first()


def first_membership(session: Session, user_id: str) -> Membership | None:
    stmt = select(Membership).where(Membership.user_id == user_id).order_by(Membership.created_at)
    return session.scalars(stmt).first()


# Every request authenticates with one of these two queries. They are built once, with bind
# parameters: building a statement costs more CPU than running it from the compiled cache.
_ACCESS = (
    select(User, Organization, Membership.role)
    .join(Membership, Membership.user_id == User.id)
    .join(Organization, Organization.id == Membership.organization_id)
    .where(
        User.id == bindparam("user_id"),
        User.is_active,
        Membership.organization_id == bindparam("organization_id"),
    )
)
# Outer joins, so that an unknown key and one that no longer grants access stay apart.
_API_KEY_ACCESS = (
    select(ApiKey, User, Organization, Membership.role)
    .outerjoin(User, (User.id == ApiKey.user_id) & User.is_active)
    .outerjoin(
        Membership,
        (Membership.user_id == ApiKey.user_id)
        & (Membership.organization_id == ApiKey.organization_id),
    )
    .outerjoin(Organization, Organization.id == ApiKey.organization_id)
    .where(ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None))
)


def get_access(session: Session, user_id: str, organization_id: str) -> Access | None:
    """The active user, the organization and their role in it, in one query."""
    params = {"user_id": user_id, "organization_id": organization_id}
    row = session.execute(_ACCESS, params).first()
    return Access(*row) if row is not None else None


def get_api_key_access(session: Session, key_hash: str) -> tuple[ApiKey, Access | None] | None:
    """A live key and the access it grants (None once its user or membership is gone)."""
    row = session.execute(_API_KEY_ACCESS, {"key_hash": key_hash}).first()
    if row is None:
        return None
    api_key, user, organization, role = row
    if user is None or organization is None or role is None:
        return api_key, None
    return api_key, Access(user, organization, role)


def touch_api_key(session: Session, api_key_id: str, now: datetime, stale_before: datetime) -> None:
    """Record a use of the key, if its last recorded one is older than ``stale_before``: a
    key already touched by another process is not written (nor row-locked) again."""
    session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == api_key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < stale_before),
        )
        .values(last_used_at=now)
    )


def list_api_keys(session: Session, organization_id: str) -> list[ApiKey]:
    stmt = (
        select(ApiKey)
        .where(ApiKey.organization_id == organization_id)
        .order_by(ApiKey.created_at.desc())
    )
    return list(session.scalars(stmt))
