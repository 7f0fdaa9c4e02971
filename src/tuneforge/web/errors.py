"""Dashboard requests get readable HTML errors; every other path keeps the JSON handlers.

A person following a link must never land on a raw JSON body or a blank page, and an htmx
action must get a short message it can show beside the control that failed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.auth import service as auth_service
from tuneforge.auth.cookies import session_token
from tuneforge.auth.service import Principal
from tuneforge.db.engine import unit_of_work
from tuneforge.errors import TuneForgeError
from tuneforge.state import app_state
from tuneforge.web.deps import SignInRequired, is_htmx, sign_in_url
from tuneforge.web.templating import render

log = logging.getLogger(__name__)
EXPECTED = (TuneForgeError, RequestValidationError, StarletteHTTPException)
Handler = Callable[[Request, Exception], Awaitable[Response] | Response]

TITLES = {
    400: "That request could not be handled",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "That conflicts with the current state",
    413: "That file is too large",
    415: "Unsupported file type",
    422: "Some input needs fixing",
    500: "Something went wrong on our side",
    503: "Temporarily unavailable",
}


def is_dashboard(request: Request) -> bool:
    return request.url.path == "/dashboard" or request.url.path.startswith("/dashboard/")


def _status_and_detail(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, TuneForgeError):
        return exc.status_code, exc.detail
    if isinstance(exc, RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()]
        return 422, "; ".join(parts) or "The request was not valid."
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 404:
            return 404, "There is no page at this address."
        return exc.status_code, str(exc.detail)
    return 500, "The server hit an unexpected error. It has been logged; please try again."


def _signed_in(request: Request) -> Principal | None:
    """Who is browsing, so an error page keeps the navigation; None when unknown."""
    token = session_token(request)
    if token is None:
        return None
    try:
        state = app_state(request)
        with unit_of_work(state.session_factory) as session:
            return auth_service.authenticate(session, token, state.settings)
    except Exception:
        return None


def render_error(request: Request, exc: Exception) -> Response:
    status, detail = _status_and_detail(exc)
    context = {"status": status, "title": TITLES.get(status, "Error"), "detail": detail}
    if is_htmx(request):
        return render(request, "errors/_inline.html", context, status_code=status)
    return render(
        request, "errors/page.html", context, principal=_signed_in(request), status_code=status
    )


def _sign_in_redirect(request: Request, exc: Exception) -> Response:
    url = sign_in_url(exc.next_url if isinstance(exc, SignInRequired) else request.url.path)
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return Response(status_code=303, headers={"Location": url})


def _branch(fallback: Handler | None) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if is_dashboard(request):
            if not isinstance(exc, EXPECTED):
                log.exception("Unhandled error on %s", request.url.path, exc_info=exc)
            return render_error(request, exc)
        if fallback is None:
            return PlainTextResponse("Internal Server Error", status_code=500)
        response = fallback(request, exc)
        return await response if isinstance(response, Awaitable) else response

    return handle


def install_dashboard_error_pages(app: FastAPI) -> None:
    """Wrap the installed handlers: dashboard paths render HTML, others are unchanged."""
    app.add_exception_handler(SignInRequired, _sign_in_redirect)
    for exc_class in (*EXPECTED, Exception):
        app.add_exception_handler(exc_class, _branch(app.exception_handlers.get(exc_class)))
