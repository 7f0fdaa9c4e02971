"""Streamed, size-capped dataset uploads: the body goes to disk chunk by chunk, never whole into
memory, and a failed upload leaves no file behind.

Starlette's ``request.form()`` would spool the entire file before the endpoint runs, so the
multipart stream is parsed here with ``python_multipart``'s streaming parser instead: an
oversized upload is refused after at most ``limit`` bytes, or at once from its Content-Length.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import event
from sqlalchemy.orm import Session

from tuneforge.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

FILE_FIELD = "file"
HEAD_BYTES = 64 * 1024
MAX_FIELD_BYTES = 64 * 1024
# Room for boundaries, part headers and the small text fields around the file itself.
FORM_OVERHEAD_BYTES = 256 * 1024
TEMP_PREFIX = ".incoming-"
_EXTENDED_FILENAME = re.compile(rb"filename\*\s*=\s*([A-Za-z0-9_-]*)'[^']*'([^;\s]+)", re.I)


@dataclass
class ReceivedUpload:
    """A multipart upload whose file part sits in a temporary file under the uploads dir."""

    temp_path: Path
    filename: str
    size_bytes: int
    sha256: str
    head: bytes
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.temp_path.unlink(missing_ok=True)


def _filename(disposition: bytes, params: dict[bytes, bytes]) -> str:
    """The part's file name as given: ``filename``'s UTF-8 bytes, or RFC 5987's
    ``filename*=UTF-8''…`` (percent-encoded) that some clients send instead."""
    extended = _EXTENDED_FILENAME.search(disposition)
    if extended is not None:
        charset, quoted = extended.group(1).decode("ascii"), extended.group(2).decode("ascii")
        try:
            return unquote(quoted, encoding=charset or "utf-8", errors="replace")
        except LookupError:
            return unquote(quoted, errors="replace")
    return params.get(b"filename", b"").decode("utf-8", "replace")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The upload exceeds the limit of {limit} bytes", field=FILE_FIELD, limit_bytes=limit
    )


def check_content_length(header: str | None, limit: int) -> int | None:
    """The body's declared size; refuses a declared oversize body before reading a byte of it."""
    if header is None:
        return None
    try:
        declared = int(header)
    except ValueError as exc:
        raise InvalidInput("Content-Length is not a number", field="content-length") from exc
    if declared > limit + FORM_OVERHEAD_BYTES:
        raise _too_large(limit)
    return declared


class _MultipartSink:
    """Receives the streaming parser's callbacks: the file part to disk, the fields to strings."""

    def __init__(self, temp_path: Path, limit: int) -> None:
        self.temp_path = temp_path
        self.limit = limit
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self.digest = hashlib.sha256()
        self.head = bytearray()
        self.finished = False
        self._file: BinaryIO | None = None
        self._headers: dict[str, bytes] = {}
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._part_name: str | None = None
        self._part_is_file = False
        self._value = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._part_name = None
        self._part_is_file = False
        self._value = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        self._headers[name] = bytes(self._header_value)
        self._header_field = bytearray()
        self._header_value = bytearray()

    def _on_headers_finished(self) -> None:
        # Raw bytes: browsers and httpx send names in UTF-8, which a str would force
        # through Latin-1.
        raw_disposition = self._headers.get("content-disposition", b"")
        disposition, params = parse_options_header(raw_disposition)
        if disposition != b"form-data" or b"name" not in params:
            raise InvalidInput("A multipart part has no form-data name", field="body")
        self._part_name = params[b"name"].decode("utf-8", "replace")
        if self._part_name != FILE_FIELD:
            return
        if self.filename is not None:
            raise InvalidInput("Send exactly one file", field=FILE_FIELD)
        self.filename = _filename(raw_disposition, params)
        self._part_is_file = True
        self._file = self.temp_path.open("xb")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if not self._part_is_file:
            self._value += chunk
            if len(self._value) > MAX_FIELD_BYTES:
                raise InvalidInput(
                    f"Form field {self._part_name} is longer than {MAX_FIELD_BYTES} bytes",
                    field=self._part_name,
                )
            return
        self.size += len(chunk)
        if self.size > self.limit:
            raise _too_large(self.limit)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]
        self.digest.update(chunk)
        if self._file is not None:
            self._file.write(chunk)

    def _on_part_end(self) -> None:
        if self._part_is_file:
            self.close()
        elif self._part_name is not None:
            self.fields[self._part_name] = self._value.decode("utf-8", "replace")

    def _on_end(self) -> None:
        self.finished = True


def sweep_abandoned_uploads(uploads_dir: Path, older_than_seconds: float) -> int:
    """Delete temp files of uploads a killed server never finished; returns how many.

    Only old ones: another server process on the same data dir may be receiving one now.
    """
    cutoff = time.time() - older_than_seconds
    removed = 0
    for path in uploads_dir.glob(f"{TEMP_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


async def receive_upload(
    content_type: str | None, body: AsyncIterator[bytes], uploads_dir: Path, limit: int
) -> ReceivedUpload:
    """Stream a multipart body into a temp file under ``uploads_dir``, hashing and counting it.

    Raises PayloadTooLarge as soon as the file passes ``limit`` bytes; on any error the
    temporary file is removed before the error propagates.
    """
    mime, params = parse_options_header(content_type or "")
    if mime != b"multipart/form-data" or not params.get(b"boundary"):
        raise UnsupportedMediaType("Send the dataset as multipart/form-data", field="body")
    uploads_dir.mkdir(parents=True, exist_ok=True)
    sink = _MultipartSink(uploads_dir / f"{TEMP_PREFIX}{secrets.token_hex(16)}", limit)
    parser = MultipartParser(params[b"boundary"], sink.callbacks())  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in body:
            received += len(chunk)
            if received > limit + FORM_OVERHEAD_BYTES:
                raise _too_large(limit)
            parser.write(chunk)
        if not sink.finished:
            raise InvalidInput("The multipart body ended before its closing boundary", field="body")
        if sink.filename is None:
            raise InvalidInput("The form has no file part", field=FILE_FIELD)
    except MultipartParseError as exc:
        sink.close()
        sink.temp_path.unlink(missing_ok=True)
        raise InvalidInput(f"Malformed multipart body: {exc}", field="body") from exc
    except BaseException:
        sink.close()
        sink.temp_path.unlink(missing_ok=True)
        raise
    return ReceivedUpload(
        temp_path=sink.temp_path,
        filename=sink.filename,
        size_bytes=sink.size,
        sha256=sink.digest.hexdigest(),
        head=bytes(sink.head),
        fields=sink.fields,
    )


def promote(upload: ReceivedUpload, suffix: str) -> Path:
    """Move the temp file to its permanent random name next to it."""
    final = upload.temp_path.with_name(f"{secrets.token_hex(16)}{suffix}")
    upload.temp_path.replace(final)
    return final


def delete_unless_committed(session: Session, path: Path) -> None:
    """Remove ``path`` if the session's transaction rolls back, so no file outlives its row."""
    committed = False

    def on_commit(_: Session) -> None:
        nonlocal committed
        committed = True

    def on_rollback(_: Session) -> None:
        if not committed:
            path.unlink(missing_ok=True)

    event.listen(session, "after_commit", on_commit, once=True)
    event.listen(session, "after_rollback", on_rollback, once=True)
