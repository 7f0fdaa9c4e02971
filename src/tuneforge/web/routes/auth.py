"""Sign in, register and sign out: the API's own auth service, with the JWT in a cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from tuneforge.auth import service
from tuneforge.auth.cookies import end_session, start_session
from tuneforge.auth.deps import PrincipalCacheDep
from tuneforge.auth.schemas import LoginRequest, RegisterRequest
from tuneforge.auth.service import IssuedToken
from tuneforge.db.session import SessionDep
from tuneforge.errors import Conflict, TooManyRequests, Unauthorized
from tuneforge.state import SessionFactoryDep, SettingsDep
from tuneforge.web.deps import DASHBOARD, WebPrincipal, field_errors, safe_next
from tuneforge.web.templating import render

router = APIRouter(prefix="/dashboard")


def _signed_in(request: Request, token: IssuedToken, next_url: str) -> Response:
    response = RedirectResponse(safe_next(next_url), status_code=303)
    start_session(request, response, token.access_token, token.expires_in)
    return response


@router.get("/sign-in")
def sign_in_page(request: Request, next: str = DASHBOARD) -> Response:
    return render(request, "auth/sign_in.html", {"next": safe_next(next), "values": {}})


@router.post("/sign-in")
def sign_in(
    request: Request,
    session_factory: SessionFactoryDep,
    settings: SettingsDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = DASHBOARD,
) -> Response:
    values = {"email": email}
    try:
        body = LoginRequest(email=email, password=password)
        address = request.client.host if request.client else None
        token = service.login(session_factory, settings, body.email, body.password, address)
    except TooManyRequests as exc:
        context = {"next": safe_next(next), "values": values, "error": exc.detail}
        return render(request, "auth/sign_in.html", context, status_code=429)
    except (ValidationError, Unauthorized):
        context = {
            "next": safe_next(next),
            "values": values,
            "error": "That email and password do not match an account.",
        }
        return render(request, "auth/sign_in.html", context, status_code=401)
    return _signed_in(request, token, next)


@router.get("/register")
def register_page(request: Request) -> Response:
    return render(request, "auth/register.html", {"values": {}, "errors": {}})


@router.post("/register")
def register(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    organization_name: Annotated[str, Form()] = "",
) -> Response:
    values = {"email": email, "name": name, "organization_name": organization_name}
    try:
        body = RegisterRequest(
            email=email, password=password, name=name, organization_name=organization_name
        )
        _, _, token = service.register(session, body, settings)
    except ValidationError as exc:
        context = {"values": values, "errors": field_errors(exc)}
        return render(request, "auth/register.html", context, status_code=422)
    except Conflict as exc:
        context = {"values": values, "errors": {"email": exc.detail}}
        return render(request, "auth/register.html", context, status_code=409)
    return _signed_in(request, token, DASHBOARD)


@router.post("/sign-out")
def sign_out(
    principal: WebPrincipal,
    session: SessionDep,
    principals: PrincipalCacheDep,
    after_commit: BackgroundTasks,
) -> Response:
    """Ends the session for good, not only in this browser: the token inside the cookie
    stops working too."""
    service.sign_out_everywhere(session, principal.user_id)
    principals.evict_sessions_of(principal.user_id)
    after_commit.add_task(principals.evict_sessions_of, principal.user_id)
    response = RedirectResponse("/dashboard/sign-in", status_code=303, background=after_commit)
    end_session(response)
    return response
