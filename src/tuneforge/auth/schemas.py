from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field

from tuneforge.bounds import Name
from tuneforge.db.tables.auth import Role

MIN_PASSWORD_LENGTH = 8
MIN_DISTINCT_CHARACTERS = 5


def strong_enough(password: str) -> str:
    """A length-and-variety rule (docs/decisions.md): eight characters or more, not blank,
    and at least five different ones, which turns away "aaaaaaaa" and "12121212"."""
    if not password.strip():
        raise ValueError("must not be blank")
    if len(set(password)) < MIN_DISTINCT_CHARACTERS:
        raise ValueError(f"needs at least {MIN_DISTINCT_CHARACTERS} different characters")
    return password


class RegisterRequest(BaseModel):
    email: EmailStr
    password: Annotated[
        str,
        Field(min_length=MIN_PASSWORD_LENGTH, max_length=200),
        AfterValidator(strong_enough),
    ]
    name: Name
    organization_name: Name


class LoginRequest(BaseModel):
    email: EmailStr
    password: str = Field(max_length=200)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class OrganizationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    name: str
    created_at: datetime


class MeResponse(BaseModel):
    user: UserOut
    organization: OrganizationOut
    role: Role


class RegisterResponse(TokenResponse):
    user: UserOut
    organization: OrganizationOut


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The full key. It is shown once and never again.")
