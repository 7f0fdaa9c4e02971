from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tuneforge.auth import service
from tuneforge.auth.service import Principal
from tuneforge.db.session import SessionDep, SettingsDep
from tuneforge.errors import Unauthorized

_bearer = HTTPBearer(auto_error=False, description="A JWT access token or an API key (tf-...)")


def get_principal(
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Missing bearer token")
    return service.authenticate(session, credentials.credentials, settings)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
