"""The dashboard's cookie session and its CSRF tokens.

The session cookie carries the same JWT the API issues, so one ``authenticate`` serves
both. A browser sends cookies on cross-site requests too, so every unsafe request that is
authenticated by the cookie must also prove it came from our own page: it carries a token
that only our pages know, an HMAC of the session cookie under the server's signing key
(a "signed double submit"). A cross-site page can make the browser send the cookie but
cannot read it, so it cannot compute the token. Before sign-in the token is bound to a
random nonce cookie instead, which covers the sign-in and register forms (login CSRF).

It lives in auth, not web: the API's ``PrincipalDep`` accepts the cookie too, and auth
must not import the dashboard that imports it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request, Response

from tuneforge.config import Settings

SESSION_COOKIE = "tf_session"
NONCE_COOKIE = "tf_csrf_nonce"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
_CONTEXT = b"tuneforge-csrf-v1\x00"


def session_token(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or None


def _binding(request: Request) -> str | None:
    """What a token is tied to: the session when signed in, else the pre-session nonce."""
    return session_token(request) or request.cookies.get(NONCE_COOKIE) or None


def _sign(binding: str, settings: Settings) -> str:
    key = settings.signing_key().encode()
    return hmac.new(key, _CONTEXT + binding.encode(), hashlib.sha256).hexdigest()


def csrf_token(request: Request, settings: Settings) -> str:
    """The token pages embed; creates a nonce (set on the response by ``remember_nonce``)
    when the browser has neither a session nor a nonce yet."""
    binding = _binding(request) or getattr(request.state, "new_csrf_nonce", None)
    if binding is None:
        binding = secrets.token_urlsafe(32)
        request.state.new_csrf_nonce = binding
    return _sign(binding, settings)


def csrf_valid(request: Request, settings: Settings, submitted: str | None) -> bool:
    binding = _binding(request)
    if not binding or not submitted:
        return False
    return hmac.compare_digest(_sign(binding, settings), submitted)


def remember_nonce(request: Request, response: Response) -> None:
    """Set the nonce cookie that ``csrf_token`` created for this request, if any."""
    nonce = getattr(request.state, "new_csrf_nonce", None)
    if nonce is not None:
        response.set_cookie(
            NONCE_COOKIE,
            nonce,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )


def start_session(request: Request, response: Response, token: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")
