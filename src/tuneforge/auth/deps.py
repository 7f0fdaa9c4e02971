from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tuneforge.auth import service
from tuneforge.auth.service import Principal
from tuneforge.db.session import SessionDep, SettingsDep
from tuneforge.errors import Forbidden, Unauthorized
from tuneforge.web.session import CSRF_HEADER, SAFE_METHODS, csrf_valid, session_token

_bearer = HTTPBearer(auto_error=False, description="A JWT access token or an API key (tf-...)")


def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The bearer header first; else the dashboard's session cookie, whose unsafe requests
    must carry the page's CSRF token so another site cannot ride on the cookie."""
    if credentials is not None and credentials.scheme.lower() == "bearer":
        return service.authenticate(session, credentials.credentials, settings)
    cookie = session_token(request)
    if cookie is None:
        raise Unauthorized("Missing bearer token")
    if request.method not in SAFE_METHODS and not csrf_valid(
        request, settings, request.headers.get(CSRF_HEADER)
    ):
        raise Forbidden(f"A cookie-authenticated {request.method} needs the {CSRF_HEADER} header")
    return service.authenticate(session, cookie, settings)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
