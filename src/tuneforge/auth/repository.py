from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneforge.auth.tables import ApiKey, Membership, Organization, User


def get_user_by_email(session: Session, email: str) -> User | None:
    return session.scalars(select(User).where(func.lower(User.email) == email.lower())).first()


def first_membership(session: Session, user_id: str) -> Membership | None:
    stmt = select(Membership).where(Membership.user_id == user_id).order_by(Membership.created_at)
    return session.scalars(stmt).first()


def get_membership(session: Session, user_id: str, organization_id: str) -> Membership | None:
    stmt = select(Membership).where(
        Membership.user_id == user_id, Membership.organization_id == organization_id
    )
    return session.scalars(stmt).first()


def get_organization(session: Session, organization_id: str) -> Organization | None:
    return session.get(Organization, organization_id)


def get_api_key_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    stmt = select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    return session.scalars(stmt).first()


def list_api_keys(session: Session, organization_id: str) -> list[ApiKey]:
    stmt = (
        select(ApiKey)
        .where(ApiKey.organization_id == organization_id)
        .order_by(ApiKey.created_at.desc())
    )
    return list(session.scalars(stmt))
