"""Accounts: registration, login, the caller's identity and API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.auth import repository, throttle
from tuneforge.auth.schemas import ApiKeyCreate, RegisterRequest
from tuneforge.auth.security import (
    API_KEY_PREFIX,
    TokenClaims,
    decode_access_token,
    email_key,
    generate_api_key,
    hash_api_key,
    hash_password,
    issue_access_token,
    unknown_user_hash,
    verify_password,
)
from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.engine import unit_of_work
from tuneforge.db.scoping import get_owned
from tuneforge.db.tables.auth import ApiKey, Membership, Organization, Role, User
from tuneforge.errors import Conflict, Forbidden, Unauthorized

# Writing last_used_at on every call would make each read a write that row-locks the key.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class CallingUser:
    id: str
    email: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class CallingOrganization:
    id: str
    name: str


@dataclass(frozen=True)
class Principal:
    """Who is calling and on behalf of which organization.

    Plain values, not rows: a principal outlives its request's session in the cache of
    recently authenticated credentials."""

    user: CallingUser
    organization: CallingOrganization
    role: Role
    expires_at: datetime | None = None  # a JWT's expiry; an API key lasts until revoked
    api_key_id: str | None = None  # the key it came from, if it did

    @property
    def by_api_key(self) -> bool:
        return self.api_key_id is not None

    @property
    def organization_id(self) -> str:
        return self.organization.id

    @property
    def user_id(self) -> str:
        return self.user.id

    def require_signed_in_user(self, action: str) -> None:
        """Refuse an API key: a leaked key must not mint its own replacements."""
        if self.by_api_key:
            raise Forbidden(f"{action} needs a signed-in user (a login token), not an API key")

    @classmethod
    def of(
        cls,
        access: repository.Access,
        expires_at: datetime | None = None,
        *,
        api_key_id: str | None = None,
    ) -> Principal:
        user, organization = access.user, access.organization
        return cls(
            user=CallingUser(
                id=user.id, email=user.email, name=user.name, created_at=user.created_at
            ),
            organization=CallingOrganization(id=organization.id, name=organization.name),
            role=access.role,
            expires_at=expires_at,
            api_key_id=api_key_id,
        )


# Says no more than the 409 does: not whose the email is, nor that an account exists.
EMAIL_REFUSED = "This email cannot be registered"


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


def register(
    session: Session, request: RegisterRequest, settings: Settings
) -> tuple[User, Organization, IssuedToken]:
    # Hashed first, so a taken email answers no faster than a new one.
    password_hash = hash_password(request.password)
    if repository.get_user_by_email(session, request.email) is not None:
        raise Conflict(EMAIL_REFUSED, field="email")
    user = User(
        email=request.email,
        email_key=email_key(request.email),
        name=request.name,
        password_hash=password_hash,
    )
    organization = Organization(name=request.organization_name)
    session.add_all([user, organization])
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent registration of the same email won the race
        raise Conflict(EMAIL_REFUSED, field="email") from exc
    session.add(Membership(user_id=user.id, organization_id=organization.id, role=Role.OWNER))
    session.flush()
    return user, organization, _issue(user, organization.id, settings)


def login(
    session_factory: sessionmaker[Session],
    settings: Settings,
    email: str,
    password: str,
    address: str | None,
) -> IssuedToken:
    """A token for the right email and password, under the sign-in throttle (per account
    and per client address; see ``throttle.py``). A failure is counted in a transaction
    of its own, so the refusal that follows does not roll it back."""
    keys = throttle.keys_for(email_key(email), address, settings)
    with unit_of_work(session_factory) as session:
        throttle.refuse_if_waiting(session, keys)
        token, problem = _check_password(session, email, password, settings)
        if token is None:
            throttle.record_failure(session, keys, settings)
        else:
            throttle.clear(session, keys[0])
    if token is None:
        raise Unauthorized(problem)
    return token


def _check_password(
    session: Session, email: str, password: str, settings: Settings
) -> tuple[IssuedToken | None, str]:
    user = repository.get_user_by_email(session, email)
    if user is None:
        verify_password(unknown_user_hash(), password)  # as slow as a wrong password
        return None, WRONG_PASSWORD
    if not user.is_active or not verify_password(user.password_hash, password):
        return None, WRONG_PASSWORD
    membership = repository.first_membership(session, user.id)
    if membership is None:
        return None, "This user belongs to no organization"
    return _issue(user, membership.organization_id, settings), ""


WRONG_PASSWORD = "Email or password is incorrect"


def _issue(user: User, organization_id: str, settings: Settings) -> IssuedToken:
    claims = TokenClaims(
        user_id=user.id, organization_id=organization_id, version=user.token_version
    )
    token = issue_access_token(claims, settings.signing_key(), settings.jwt_expiry_seconds)
    return IssuedToken(access_token=token, expires_in=settings.jwt_expiry_seconds)


def authenticate(session: Session, bearer: str, settings: Settings) -> Principal:
    """Resolve a bearer credential: an API key (``tf-...``) or a JWT access token.

    One query either way, and no write: an API key's use is recorded apart
    (``record_api_key_use``), so that a read stays a read."""
    expires_at = api_key_id = None
    if bearer.startswith(API_KEY_PREFIX):
        found = repository.get_api_key_access(session, hash_api_key(bearer))
        if found is None:
            raise Unauthorized("API key is invalid or revoked")
        api_key, access = found
        api_key_id = api_key.id
    else:
        claims = decode_access_token(bearer, settings.signing_key())
        access = repository.get_access(session, claims.user_id, claims.organization_id)
        if access is not None and access.user.token_version != claims.version:
            raise Unauthorized("This session was signed out; sign in again")
        expires_at = claims.expires_at
    if access is None:
        raise Unauthorized("Credentials no longer grant access")
    return Principal.of(access, expires_at, api_key_id=api_key_id)


def record_api_key_use(session_factory: sessionmaker[Session], api_key_id: str) -> None:
    """Set the key's ``last_used_at``, unless a process did within ``LAST_USED_RESOLUTION``:
    in a transaction of its own, run after the response, so a request never waits for the
    write, its commit or the key's row lock."""
    now = utcnow()
    with unit_of_work(session_factory) as session:
        repository.touch_api_key(session, api_key_id, now, now - LAST_USED_RESOLUTION)


def sign_out_everywhere(session: Session, user_id: str) -> None:
    """End every session of the user: tokens issued before this no longer authenticate.
    API keys are not sessions and stay valid until revoked."""
    user = session.get(User, user_id, with_for_update=True)
    if user is not None:
        user.token_version += 1
        session.flush()


def create_api_key(
    session: Session, organization_id: str, user_id: str, request: ApiKeyCreate
) -> tuple[ApiKey, str]:
    key = generate_api_key()
    api_key = ApiKey(
        organization_id=organization_id,
        user_id=user_id,
        name=request.name,
        prefix=key[:10],
        key_hash=hash_api_key(key),
    )
    session.add(api_key)
    session.flush()
    return api_key, key


def list_api_keys(session: Session, organization_id: str) -> list[ApiKey]:
    return repository.list_api_keys(session, organization_id)


def revoke_api_key(session: Session, organization_id: str, api_key_id: str) -> ApiKey:
    api_key = get_owned(session, ApiKey, api_key_id, organization_id, label="API key")
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
    return api_key
