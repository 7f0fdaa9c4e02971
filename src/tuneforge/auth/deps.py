from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated

from fastapi import BackgroundTasks, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tuneforge.auth import service
from tuneforge.auth.cache import PrincipalCache, credential_key
from tuneforge.auth.cookies import CSRF_HEADER, csrf_valid, session_token
from tuneforge.auth.service import Principal
from tuneforge.config import Settings
from tuneforge.db.session import SAFE_METHODS, SessionDep, request_unit_of_work
from tuneforge.errors import Forbidden, Unauthorized
from tuneforge.state import SettingsDep, app_state

_bearer = HTTPBearer(auto_error=False, description="A JWT access token or an API key (tf-...)")


async def get_principal_cache(request: Request) -> PrincipalCache:
    return app_state(request).shared(PrincipalCache)


PrincipalCacheDep = Annotated[PrincipalCache, Depends(get_principal_cache)]


async def authenticate(
    cache: PrincipalCache,
    session: Session,
    settings: Settings,
    bearer: str,
    record_key_use: Callable[[str], None] | None = None,
) -> Principal:
    """The bearer's principal: from the recently authenticated ones, else from the database,
    and then an API key's id goes to ``record_key_use``.

    Async, so that a cached credential costs no threadpool hop."""
    key = credential_key(bearer)
    principal = cache.get(key)
    if principal is None:
        principal = await run_in_threadpool(service.authenticate, session, bearer, settings)
        cache.put(key, principal)
        if principal.api_key_id is not None and record_key_use is not None:
            record_key_use(principal.api_key_id)
    return principal


def after_response(request: Request, background: BackgroundTasks) -> Callable[[str], None]:
    """Records an API key's use once the response is sent (``service.record_api_key_use``),
    in one of the request sessions' slots: beyond them the pool would open and close
    overflow connections, each a new PostgreSQL backend."""
    state = app_state(request)

    async def record(api_key_id: str) -> None:
        async with state.session_slots:
            await run_in_threadpool(service.record_api_key_use, state.session_factory, api_key_id)

    return partial(background.add_task, record)


async def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    cache: PrincipalCacheDep,
    background: BackgroundTasks,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The bearer header first; else the dashboard's session cookie, whose unsafe requests
    must carry the page's CSRF token so another site cannot ride on the cookie."""
    if credentials is not None and credentials.scheme.lower() == "bearer":
        record = after_response(request, background)
        return await authenticate(cache, session, settings, credentials.credentials, record)
    cookie = session_token(request)
    if cookie is None:
        raise Unauthorized("Missing bearer token")
    if request.method not in SAFE_METHODS and not csrf_valid(
        request, settings, request.headers.get(CSRF_HEADER)
    ):
        raise Forbidden(f"A cookie-authenticated {request.method} needs the {CSRF_HEADER} header")
    return await authenticate(cache, session, settings, cookie)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_principal_briefly(
    request: Request,
    background: BackgroundTasks,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """``PrincipalDep``'s checks in a unit of work of their own, ended before the endpoint
    runs: for endpoints whose long work (a streamed upload, a generation) must not hold a
    session slot."""
    state = app_state(request)
    async with request_unit_of_work(state, read_only=False) as session:
        return await get_principal(
            request=request,
            session=session,
            settings=state.settings,
            cache=state.shared(PrincipalCache),
            background=background,
            credentials=credentials,
        )


BriefPrincipalDep = Annotated[Principal, Depends(get_principal_briefly)]
