"""Checks on JSON request bodies before any endpoint parses one: a size cap, and no NUL.

Without the cap a conversation with a 120 MB message was read, parsed and stored whole. The
declared ``Content-Length`` is refused at once; a body sent without one (chunked) is read
up to the limit and refused there. File uploads are multipart and keep their own, larger
limit. PostgreSQL cannot store NUL in text or JSON, so a string carrying one is a 422
naming its field here, for every endpoint at once, instead of an error at insert.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.errors import PayloadTooLarge
from tuneforge.openai_errors import openai_error


def _field_with_nul(body: bytes) -> str | None:
    """The path (``body.messages.0.content``) of the first string holding NUL."""
    try:
        document = json.loads(body)
    except ValueError:
        return None  # not JSON: the endpoint's own parsing says so

    def find(value: Any, path: str) -> str | None:
        if isinstance(value, str):
            return path if "\x00" in value else None
        if isinstance(value, dict):
            items: Iterable[tuple[Any, Any]] = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            return None
        for key, item in items:
            if isinstance(key, str) and "\x00" in key:
                return f"{path}.{key!r}"
            if (found := find(item, f"{path}.{key}")) is not None:
                return found
        return None

    return find(document, "body")


async def _refuse_nul(scope: Scope, receive: Receive, send: Send, field: str) -> None:
    message = f"{field}: must not contain a NUL character"
    if scope["path"].startswith("/v1/"):
        param = field.removeprefix("body.")
        response = openai_error(422, "validation_error", message, param)
    else:
        fields = [{"field": field, "message": "must not contain a NUL character"}]
        body = {"error": "validation_error", "detail": message, "fields": fields}
        response = JSONResponse(body, status_code=422)
    await response(scope, receive, send)


class JsonBodyChecks:
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

        body = b"".join(message.get("body", b"") for message in messages)
        if b"\\u0000" in body and (field := _field_with_nul(body)) is not None:
            await _refuse_nul(scope, receive, send, field)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(
            f"The request body exceeds the limit of {self.limit} bytes", limit_bytes=self.limit
        )
        if scope["path"].startswith("/v1/"):
            response = openai_error(
                error.status_code, error.error, error.detail, headers=error.headers
            )
        else:
            body = {"error": error.error, "detail": error.detail, **error.extra}
            response = JSONResponse(body, status_code=error.status_code, headers=error.headers)
        await response(scope, receive, send)
