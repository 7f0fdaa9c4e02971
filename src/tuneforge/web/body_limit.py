"""A cap on JSON request bodies, checked before any endpoint parses one.

Without it a conversation with a 120 MB message was read, parsed and stored whole. The
declared ``Content-Length`` is refused at once; a body sent without one (chunked) is read
up to the limit and refused there. Bodies under the limit are handed on as received.
File uploads are multipart and keep their own, larger limit.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.errors import PayloadTooLarge


class JsonBodyLimit:
    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app = app
        self.limit = limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope) if scope["type"] == "http" else None
        if headers is None or "json" not in headers.get("content-type", ""):
            await self.app(scope, receive, send)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(
            f"The request body exceeds the limit of {self.limit} bytes", limit_bytes=self.limit
        )
        if scope["path"].startswith("/v1/"):
            body: dict[str, object] = {
                "error": {
                    "message": error.detail,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": error.error,
                }
            }
        else:
            body = {"error": error.error, "detail": error.detail, **error.extra}
        response = JSONResponse(body, status_code=error.status_code, headers=error.headers)
        await response(scope, receive, send)
