"""The error hierarchy and the one handler that renders it as JSON."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class TuneForgeError(Exception):
    status_code = 400
    error = "bad_request"
    headers: dict[str, str] | None = None

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(TuneForgeError):
    status_code = 422
    error = "invalid_input"


class Unauthorized(TuneForgeError):
    status_code = 401
    error = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(TuneForgeError):
    status_code = 403
    error = "forbidden"


class NotFound(TuneForgeError):
    status_code = 404
    error = "not_found"


class Conflict(TuneForgeError):
    status_code = 409
    error = "conflict"


class PayloadTooLarge(TuneForgeError):
    """Closes the connection: otherwise the server keeps it alive by reading (and discarding)
    the rest of the body, and the client goes on uploading everything it meant to send."""

    status_code = 413
    error = "payload_too_large"
    headers = {"Connection": "close"}


class UnsupportedMediaType(TuneForgeError):
    status_code = 415
    error = "unsupported_media_type"


class ServiceUnavailable(TuneForgeError):
    status_code = 503
    error = "service_unavailable"


class ErrorBody(BaseModel):
    """Shape of every error response."""

    error: str
    detail: str


def error_responses(*errors: type[TuneForgeError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the errors an endpoint can raise."""
    return {
        err.status_code: {"model": ErrorBody, "description": err.error.replace("_", " ")}
        for err in errors
    }


def install_error_handler(app: FastAPI) -> None:
    @app.exception_handler(TuneForgeError)
    async def render_tuneforge_error(_: Request, exc: TuneForgeError) -> JSONResponse:
        body = {"error": exc.error, "detail": exc.detail, **exc.extra}
        return JSONResponse(status_code=exc.status_code, content=body, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def render_request_validation_error(
        _: Request, exc: RequestValidationError
    ) -> JSONResponse:
        fields = [
            {"field": ".".join(str(part) for part in err["loc"]), "message": err["msg"]}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return JSONResponse(
            status_code=422,
            content={"error": "validation_error", "detail": summary, "fields": fields},
        )
