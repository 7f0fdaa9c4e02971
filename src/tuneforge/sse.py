"""Server-Sent Events, written one way for every stream (job progress, chat replies)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel


def sse_message(
    payload: BaseModel | dict[str, Any] | str, *, event: str | None = None, id: str | None = None
) -> str:
    """One SSE message; ``payload`` is sent as compact JSON unless it is already a string."""
    if isinstance(payload, BaseModel):
        data = payload.model_dump_json()
    elif isinstance(payload, dict):
        data = orjson.dumps(payload).decode()
    else:
        data = payload
    head = f"id: {id}\n" if id is not None else ""
    if event:
        head += f"event: {event}\n"
    return f"{head}data: {data}\n\n"
