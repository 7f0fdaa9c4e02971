"""The Jinja2 environment, its display filters, and the one way routes render a page."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from tuneforge.auth.cookies import CSRF_FIELD, CSRF_HEADER, csrf_token, remember_nonce
from tuneforge.auth.service import Principal
from tuneforge.state import app_state

WEB_DIR = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=WEB_DIR / "templates")

STATUS_TONES = {
    "valid": "ok",
    "succeeded": "ok",
    "passed": "ok",
    "active": "ok",
    "deployed": "info",
    "running": "info",
    "validating": "info",
    "validating_files": "info",
    "queued": "info",
    "pending": "muted",
    "uploaded": "muted",
    "archived": "muted",
    "cancelling": "warn",
    "cancelled": "warn",
    "invalid": "bad",
    "failed": "bad",
    "regression": "bad",
}


def file_size(value: int | None) -> str:
    size = float(value or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def metric(value: float | None) -> str:
    """Losses read best with 4 decimals; learning rates and other tiny values need exponents."""
    if value is None:
        return "—"
    if value != 0 and abs(value) < 0.001:
        return f"{value:.2e}"
    return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.0f}"


def tail(value: str | None, parts: int = 2) -> str:
    """The last path segments of a long reference; the page keeps the whole in a title."""
    if not value:
        return "—"
    segments = value.replace("\\", "/").split("/")
    return value if len(segments) <= parts else "…/" + "/".join(segments[-parts:])


def when(value: datetime | None) -> str:
    """Absolute UTC time; pages show relative times only where they update live."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def money(value: float | None) -> str:
    if value is None:
        return "not priced"
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.4f}"


def tone(status: Any) -> str:
    return STATUS_TONES.get(str(getattr(status, "value", status)), "muted")


def label(value: Any) -> str:
    return str(getattr(value, "value", value)).replace("_", " ")


def message_text(message: Any) -> str:
    """A stored chat message as readable text, whatever shape the upload gave it."""
    if not isinstance(message, dict):
        return json.dumps(message, ensure_ascii=False)
    content = message.get("content")
    parts: list[str] = []
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):
        parts.extend(
            part.get("text", "[image]") if isinstance(part, dict) else str(part) for part in content
        )
    elif content is not None:
        parts.append(json.dumps(content, ensure_ascii=False))
    for call in message.get("tool_calls") or ():
        function = call.get("function", {}) if isinstance(call, dict) else {}
        parts.append(f"→ calls {function.get('name', '?')}({function.get('arguments', '')})")
    return "\n".join(parts)


def message_role(message: Any) -> str:
    role = message.get("role") if isinstance(message, dict) else None
    return role if isinstance(role, str) else "unknown"


templates.env.filters.update(
    file_size=file_size,
    number=number,
    when=when,
    money=money,
    metric=metric,
    tail=tail,
    tone=tone,
    label=label,
    message_text=message_text,
    message_role=message_role,
)
templates.env.globals.update(CSRF_FIELD=CSRF_FIELD, CSRF_HEADER=CSRF_HEADER)


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    principal: Principal | None = None,
    status_code: int = 200,
    section: str | None = None,
) -> HTMLResponse:
    """A page or fragment with what every template may use: the CSRF token, who is signed
    in and which navigation section is current."""
    values = {
        "principal": principal,
        "csrf_token": csrf_token(request, app_state(request).settings),
        "section": section,
        **(context or {}),
    }
    response = templates.TemplateResponse(request, name, values, status_code=status_code)
    remember_nonce(request, response)
    return response
