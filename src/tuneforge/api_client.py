"""The HTTP client behind the CLI commands that drive a TuneForge server.

Commands talk to the API rather than the database so they work against any server the
user can reach, with the same authorization and validation as every other client.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

DEFAULT_API_URL = "http://127.0.0.1:8000"
STREAM_RECONNECT_ATTEMPTS = 5
STREAM_RECONNECT_DELAY_SECONDS = 2.0
# The server sends a keepalive comment every 15 s; four missed ones mean a dead connection.
STREAM_READ_TIMEOUT_SECONDS = 60.0
UPLOAD_CHUNK_BYTES = 256 * 1024

ApiUrlOption = Annotated[
    str,
    typer.Option("--api-url", envvar="TUNEFORGE_API_URL", help="Base URL of the TuneForge API."),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="TUNEFORGE_TOKEN", help="Access token or API key (tf-...)."),
]


class ApiError(Exception):
    """The server refused the request, or could not be reached (``status_code`` 0)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.detail} (HTTP {self.status_code})" if self.status_code else self.detail


@dataclass(frozen=True)
class ServerSentEvent:
    id: str | None
    event: str
    data: str


def parse_server_sent_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Messages of a ``text/event-stream``, by the WHATWG rules the dashboard's browser uses."""
    event_id: str | None = None
    event = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event_id, event, "\n".join(data))
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            event_id = value


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)


def _multipart(
    fields: dict[str, str], path: Path, on_chunk: Callable[[int], None]
) -> tuple[str, int, Iterator[bytes]]:
    """A streamed multipart body: (content type, exact length, chunks read as they go)."""
    boundary = secrets.token_hex(16)
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    filename = path.name.replace('"', "%22")
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        with path.open("rb") as file:
            while chunk := file.read(UPLOAD_CHUNK_BYTES):
                on_chunk(len(chunk))
                yield chunk
        yield tail

    length = len(head) + path.stat().st_size + len(tail)
    return f"multipart/form-data; boundary={boundary}", length, chunks()


class ApiClient:
    """JSON requests with the bearer token; any error response raises ``ApiError``."""

    def __init__(
        self, api_url: str, token: str | None, *, timeout: float | httpx.Timeout = 30.0
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.api_url = api_url.rstrip("/")
        self._http = httpx.Client(base_url=self.api_url, headers=headers, timeout=timeout)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(0, f"Cannot reach {self.api_url}: {exc}") from exc
        if response.is_error:
            raise ApiError(response.status_code, _error_detail(response))
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body)

    def upload(
        self, path: str, fields: dict[str, str], file: Path, on_chunk: Callable[[int], None]
    ) -> Any:
        """POST ``fields`` and ``file`` (as the ``file`` field), streamed from disk as a
        multipart form; ``on_chunk`` gets the size of each piece of the file as it is sent.

        The exact length goes out as Content-Length, so a server refuses an oversized file
        before any of it is sent."""
        content_type, length, body = _multipart(fields, file, on_chunk)
        headers = {"Content-Type": content_type, "Content-Length": str(length)}
        return self.request("POST", path, content=body, headers=headers)

    def download(
        self, path: str, target: Path, on_chunk: Callable[[int, int | None], None]
    ) -> httpx.Headers:
        """Stream a file to ``target``; ``on_chunk`` gets each piece's size and the total
        (None when the server does not say). Returns the response's headers."""
        try:
            with self._http.stream("GET", path, timeout=STREAM_READ_TIMEOUT_SECONDS) as response:
                if response.is_error:
                    response.read()
                    raise ApiError(response.status_code, _error_detail(response))
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                with target.open("wb") as file:
                    for chunk in response.iter_bytes(UPLOAD_CHUNK_BYTES):
                        file.write(chunk)
                        on_chunk(len(chunk), total)
                return response.headers
        except httpx.TransportError as exc:
            raise ApiError(0, f"Lost the download from {self.api_url}: {exc}") from exc

    def follow_events(self, path: str) -> Iterator[ServerSentEvent]:
        """An SSE endpoint's messages until the server ends the stream.

        A dropped connection is resumed from the last message id (``Last-Event-ID``), so a
        server restart loses nothing; only repeated failures in a row give up.
        """
        last_id: str | None = None
        failures = 0
        timeout = httpx.Timeout(self._http.timeout.connect, read=STREAM_READ_TIMEOUT_SECONDS)
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                    if response.is_error:
                        response.read()
                        raise ApiError(response.status_code, _error_detail(response))
                    for message in parse_server_sent_events(response.iter_lines()):
                        failures = 0
                        last_id = message.id or last_id
                        yield message
                return
            except httpx.TransportError as exc:
                failures += 1
                if failures > STREAM_RECONNECT_ATTEMPTS:
                    raise ApiError(0, f"Lost the stream from {self.api_url}: {exc}") from exc
                time.sleep(STREAM_RECONNECT_DELAY_SECONDS)


TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
STATUS_STYLES = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "cancelling": "yellow",
    "running": "cyan",
}


@contextmanager
def console_client(api_url: str, token: str | None) -> Iterator[tuple[ApiClient, Console]]:
    """A client and console; an API error becomes one red line and exit status 1."""
    console = Console()
    try:
        with ApiClient(api_url, token) as client:
            yield client, console
    except ApiError as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(1) from exc


def styled_status(status: str) -> str:
    """A job's or evaluation's status, coloured by how it ended."""
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


def short_time(value: str | None) -> str | None:
    """ISO timestamps to the second, UTC, for reading rather than parsing."""
    return value[:19].replace("T", " ") if value else None
