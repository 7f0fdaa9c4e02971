"""Security headers on every response, and a content security policy for the dashboard.

The dashboard loads only its own files (scripts and styles built into ``static/``), so its
policy allows nothing else; inline styles stay allowed because htmx injects its indicator
style. The policy is the dashboard's alone: the API docs page loads Swagger UI from a CDN.
A pure ASGI middleware, so streamed responses (SSE) pass through untouched.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

EVERY_RESPONSE = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
DASHBOARD_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        dashboard = scope["path"].startswith("/dashboard")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in EVERY_RESPONSE.items():
                    headers.setdefault(name, value)
                if dashboard:
                    headers.setdefault("Content-Security-Policy", DASHBOARD_POLICY)
            await send(message)

        await self.app(scope, receive, send_with_headers)
