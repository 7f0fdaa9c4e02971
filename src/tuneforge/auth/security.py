"""Password hashing, JWT issuing/verification and API key material."""

from __future__ import annotations

import functools
import hashlib
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError

from tuneforge.errors import Unauthorized

API_KEY_PREFIX = "tf-"
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@functools.cache
def unknown_user_hash() -> str:
    """A hash to verify against when no user has the email, so that answering takes as
    long as for a wrong password and does not tell which emails have accounts."""
    return _hasher.hash(secrets.token_urlsafe(16))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        return False


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    organization_id: str
    version: int = 0  # the user's token_version when issued
    expires_at: datetime | None = None


def issue_access_token(claims: TokenClaims, secret: str, expires_in: int) -> str:
    now = datetime.now(UTC)
    payload = {
        "sub": claims.user_id,
        "org": claims.organization_id,
        "ver": claims.version,
        "iat": now,
        "exp": now + timedelta(seconds=expires_in),
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def decode_access_token(token: str, secret: str) -> TokenClaims:
    try:
        payload = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["exp", "sub", "org"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("Access token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("Access token is invalid") from exc
    user_id, organization_id, version = payload["sub"], payload["org"], payload.get("ver", 0)
    if not isinstance(user_id, str) or not isinstance(organization_id, str):
        raise Unauthorized("Access token is invalid")
    if type(version) is not int:
        raise Unauthorized("Access token is invalid")
    try:  # a signed token can still carry an expiry no datetime holds
        expires_at = datetime.fromtimestamp(payload["exp"], UTC)
    except (OverflowError, OSError, ValueError, TypeError) as exc:
        raise Unauthorized("Access token is invalid") from exc
    return TokenClaims(
        user_id=user_id, organization_id=organization_id, version=version, expires_at=expires_at
    )


def email_key(email: str) -> str:
    """One key per address however it is cased or composed: NFC, then Unicode case folding."""
    return unicodedata.normalize("NFC", email).casefold()


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """API keys are high-entropy, so a fast digest is enough and allows an indexed lookup."""
    return hashlib.sha256(key.encode()).hexdigest()
