"""Dependencies of the dashboard routes: who is signed in (by cookie) and the CSRF check."""

from __future__ import annotations

import enum
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from tuneforge.auth.cookies import CSRF_FIELD, CSRF_HEADER, csrf_valid, session_token
from tuneforge.auth.deps import PrincipalCacheDep, authenticate
from tuneforge.auth.service import Principal
from tuneforge.db.session import SAFE_METHODS, SessionDep
from tuneforge.errors import Forbidden, InvalidInput, Unauthorized
from tuneforge.state import SettingsDep

M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound=enum.Enum)
DASHBOARD = "/dashboard/fine-tuning"


class SignInRequired(Exception):
    """Raised by page dependencies; rendered as a redirect to the sign-in page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def safe_next(value: str | None) -> str:
    """Only our own dashboard paths, so ``next`` cannot send a user to another site."""
    if value and value.startswith("/dashboard") and "//" not in value and "\\" not in value:
        return value
    return DASHBOARD


def sign_in_url(next_url: str) -> str:
    return f"/dashboard/sign-in?next={quote(safe_next(next_url), safe='/')}"


async def get_web_principal(
    request: Request, session: SessionDep, settings: SettingsDep, cache: PrincipalCacheDep
) -> Principal:
    token = session_token(request)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if token is None:
        raise SignInRequired(here)
    try:
        return await authenticate(cache, session, settings, token)
    except Unauthorized as exc:
        raise SignInRequired(here) from exc


async def require_csrf(request: Request, settings: SettingsDep) -> None:
    """Every unsafe dashboard request carries the page's token, as a header or form field."""
    if request.method in SAFE_METHODS:
        return
    submitted = request.headers.get(CSRF_HEADER)
    if submitted is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        field = (await request.form()).get(CSRF_FIELD)
        submitted = field if isinstance(field, str) else None
    if not csrf_valid(request, settings, submitted):
        raise Forbidden(
            "This form has expired or did not come from TuneForge. Reload the page and try again."
        )


async def read_form(request: Request) -> FormData:
    """The parsed form, so sync routes (run in the threadpool) never block the event loop."""
    return await request.form()


WebPrincipal = Annotated[Principal, Depends(get_web_principal)]
FormDep = Annotated[FormData, Depends(read_form)]


def action_done(request: Request, url: str) -> Response:
    """Where a form action lands: htmx follows ``HX-Redirect``, a plain form gets a 303."""
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return Response(status_code=303, headers={"Location": url})


def field_errors(exc: ValidationError) -> dict[str, str]:
    """The first message per top-level field, worded for a person."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "form"
        message = error["msg"].removeprefix("Value error, ")
        errors.setdefault(name, message[0].upper() + message[1:] if message else message)
    return errors


def parse_form(model: type[M], data: dict[str, Any]) -> M:
    """Validate form data with the API's own schema; a bad field is an ``InvalidInput``
    naming it, which the dashboard shows beside the form."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        detail = "; ".join(f"{name.replace('_', ' ')}: {msg}" for name, msg in errors.items())
        raise InvalidInput(detail, fields=errors) from exc


def choice(enum_cls: type[E], value: str | None) -> E | None:
    """A filter from a query string, where blank (the "any" option) means no filter."""
    if not value:
        return None
    try:
        return enum_cls(value)
    except ValueError as exc:
        allowed = ", ".join(str(member.value) for member in enum_cls)
        raise InvalidInput(f"{value!r} is not one of: {allowed}", field="filter") from exc
