"""OpenAI's error shape for the ``/v1`` API, which its SDKs read the message from.

Every ``/v1`` route renders its errors here (``OpenAIErrorRoute``), as do the app-wide
body checks for ``/v1`` requests; the OpenAPI document declares the same body.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.errors import TuneForgeError, error_responses, http_error_code


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIErrorBody(BaseModel):
    """Errors of the ``/v1`` API; ``detail`` repeats the message, as in the rest of the API."""

    error: OpenAIErrorDetail
    detail: str


def openai_error_responses(*errors: type[TuneForgeError]) -> dict[int | str, dict[str, Any]]:
    return {
        status: entry | {"model": OpenAIErrorBody}
        for status, entry in error_responses(*errors).items()
    }


def openai_error(
    status_code: int,
    code: str,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """OpenAI's error shape: its SDKs take the message from ``error.message`` only.

    ``detail`` repeats the message so the body still reads like the rest of our API.
    """
    kind = "server_error" if status_code >= 500 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    if status_code == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(
        status_code=status_code, content=body | {"detail": message}, headers=headers
    )


class OpenAIErrorRoute(APIRoute):
    """Renders errors (from dependencies and validation too) in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except TuneForgeError as exc:
                field = exc.extra.get("field")
                return openai_error(exc.status_code, exc.error, exc.detail, field, exc.headers)
            except StarletteHTTPException as exc:
                code = http_error_code(exc.status_code)
                return openai_error(exc.status_code, code, str(exc.detail))
            except RequestValidationError as exc:
                fields = [
                    (".".join(str(part) for part in err["loc"][1:]), err["msg"])
                    for err in exc.errors()
                ]
                message = "; ".join(f"{field}: {msg}" for field, msg in fields)
                return openai_error(422, "validation_error", message, fields[0][0] or None)

        return handle
