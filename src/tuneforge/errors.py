"""The error hierarchy every layer raises; ``app.py`` renders it as JSON in one handler.

Nothing here imports FastAPI, so the training child and the worker can raise these too.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel


class TuneForgeError(Exception):
    status_code = 400
    error = "bad_request"
    headers: dict[str, str] | None = None

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class BadRequest(TuneForgeError):
    """A well-formed request the server cannot carry out as asked (e.g. a schema that does
    not compile)."""

    status_code = 400
    error = "bad_request"


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


class TooManyRequests(TuneForgeError):
    """Come back later: ``Retry-After`` says when."""

    status_code = 429
    error = "rate_limited"

    def __init__(self, detail: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers = {"Retry-After": str(retry_after)}


class ServiceUnavailable(TuneForgeError):
    status_code = 503
    error = "service_unavailable"


class ErrorBody(BaseModel):
    """Shape of every error response."""

    error: str
    detail: str


class FieldError(BaseModel):
    field: str
    message: str


class ValidationErrorBody(ErrorBody):
    """A 422: the request's body or parameters did not validate; ``fields`` (or ``field``,
    from a service's own checks) names what to fix."""

    fields: list[FieldError] | None = None
    field: str | None = None


def error_responses(*errors: type[TuneForgeError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the errors an endpoint can raise."""
    return {
        err.status_code: {
            "model": ValidationErrorBody if err.status_code == 422 else ErrorBody,
            "description": err.error.replace("_", " "),
        }
        for err in errors
    }


def http_error_code(status_code: int) -> str:
    """The ``error`` code of a plain HTTP status: its reason phrase in snake case."""
    try:
        return HTTPStatus(status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"
