"""Streaming readers for uploaded dataset files.

Files are read line by line (JSON Lines in binary with a large buffer, CSV as text), so
memory stays flat whatever the upload size. A line that cannot be turned into an example is
still yielded, with its original text and a parse error, so the report can point at it.

JSON Lines (``.jsonl``, ``.json``): one OpenAI chat example per line,
``{"messages": [...], "tools": [...]}`` (``tools`` optional). Blank lines are skipped.

CSV (``.csv``): the first row is a header; names are case-insensitive, surrounding spaces are
ignored, and columns outside the layout are ignored. The first layout that matches wins:

- ``messages`` (+ optional ``tools``): cells hold JSON arrays of messages / tool definitions.
- ``user``, ``assistant`` (+ optional ``system``): one exchange.
- ``prompt``, ``completion`` (+ optional ``system``): the same, prompt as the user message
  and completion as the assistant's.

An empty ``system`` or ``tools`` cell means none. A row's line number is the physical line
where it starts (the header is line 1), so quoted multi-line cells do not shift later rows.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import orjson

from tuneforge.db.tables.datasets import DatasetFormat
from tuneforge.errors import InvalidInput, UnsupportedMediaType

_EXTENSIONS = {
    ".jsonl": DatasetFormat.JSONL,
    ".json": DatasetFormat.JSONL,
    ".csv": DatasetFormat.CSV,
}
_READ_BUFFER_BYTES = 1 << 20
_CSV_FIELD_LIMIT = 1 << 30
_UTF8_BOM = codecs.BOM_UTF8


@dataclass(slots=True)
class RawExample:
    line_number: int
    payload: dict[str, Any] | None
    raw_line: str | None
    parse_error: str | None
    # Report code for an unparseable line: "invalid_json", "data_type", "invalid_csv_row"
    # or "invalid_encoding"; None when payload is set.
    error_code: str | None = None


def detect_format(filename: str, head: bytes) -> DatasetFormat:
    """The format of an upload from its name and first bytes (64 KiB covers any CSV header).

    Rejects, before anything is stored, what could only yield one error per line.
    """
    suffix = PurePath(filename).suffix.lower()
    fmt = _EXTENSIONS.get(suffix)
    if fmt is None:
        raise UnsupportedMediaType(
            f"Unsupported file type {suffix or '(no extension)'}; upload a .jsonl, .json "
            "or .csv file"
        )
    if b"\x00" in head:
        raise InvalidInput(f"{filename} looks like a binary file; upload UTF-8 text")
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{filename} is not UTF-8 text (invalid byte at offset {exc.start})"
        ) from exc
    text = text.removeprefix("\ufeff")
    if fmt is DatasetFormat.CSV:
        header = next(csv.reader(io.StringIO(text)), None)
        if header is None:
            raise InvalidInput(f"{filename} is empty; a CSV file needs a header row")
        _csv_layout(header)
    else:
        first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if first_line in ("[", "{"):
            raise InvalidInput(
                f"{filename} looks like one pretty-printed JSON document; upload JSON Lines, "
                "one example object per line"
            )
    return fmt


@dataclass(frozen=True, slots=True)
class LineSpan:
    """Whole lines of a file: ``size`` bytes from ``start``, the first being ``first_line``."""

    start: int
    size: int
    first_line: int


def read_examples(path: Path, fmt: DatasetFormat) -> Iterator[RawExample]:
    if fmt is DatasetFormat.JSONL:
        return _read_jsonl(path)
    if fmt is DatasetFormat.CSV:
        return _read_csv(path)
    raise ValueError(f"{fmt} is not a file format")


def jsonl_spans(path: Path, span_bytes: int) -> Iterator[LineSpan]:
    """The file cut into spans of whole lines, about ``span_bytes`` each (a longer line is a
    span of its own), so each can be read and checked apart and the lines still numbered as
    ``read_examples`` numbers them."""
    with path.open("rb", buffering=_READ_BUFFER_BYTES) as file:
        start, first_line = 0, 1
        while block := file.read(span_bytes):
            if not block.endswith(b"\n"):
                block += file.readline()
            yield LineSpan(start, len(block), first_line)
            start += len(block)
            first_line += block.count(b"\n")


def read_jsonl_span(path: Path, span: LineSpan) -> Iterator[RawExample]:
    with path.open("rb") as file:
        file.seek(span.start)
        block = file.read(span.size)
    return _parse_jsonl(io.BytesIO(block), span.first_line)


def _read_jsonl(path: Path) -> Iterator[RawExample]:
    with path.open("rb", buffering=_READ_BUFFER_BYTES) as file:
        yield from _parse_jsonl(file, 1)


def _parse_jsonl(lines: Iterable[bytes], first_line: int) -> Iterator[RawExample]:
    loads = orjson.loads
    for line_number, line in enumerate(lines, first_line):
        if line_number == 1:
            line = line.removeprefix(_UTF8_BOM)
        if not line or line.isspace():
            continue
        try:
            value = loads(line)
        except orjson.JSONDecodeError as exc:
            text = _line_text(line)
            code, message = _json_line_error(line, text, exc)
            yield RawExample(line_number, None, text, message, code)
            continue
        if type(value) is dict:
            yield RawExample(line_number, value, None, None)
        else:
            message = (
                f'Each line must be a JSON object with a "messages" list, not {_json_type(value)}'
            )
            yield RawExample(line_number, None, _line_text(line), message, "data_type")


def _line_text(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\r\n")


def _json_line_error(line: bytes, text: str, exc: orjson.JSONDecodeError) -> tuple[str, str]:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as decode_error:
        return "invalid_encoding", f"Line is not valid UTF-8 (byte {decode_error.start + 1})"
    # orjson counts the trailing newline; an error at the end of data points just past the text.
    column = min(exc.pos, len(text.rstrip())) + 1
    return "invalid_json", f"Invalid JSON: {exc.msg} at column {column}"


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), "a number")


# A layout turns a CSV row into an example payload, or raises ValueError with the reason.
_Layout = Callable[[list[str]], dict[str, Any]]


def _csv_layout(header: list[str]) -> _Layout:
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        columns.setdefault(name.strip().lower(), index)
    system = columns.get("system")
    if "messages" in columns:
        return _json_columns_layout(columns["messages"], columns.get("tools"))
    for user_column, assistant_column in (("user", "assistant"), ("prompt", "completion")):
        if user_column in columns and assistant_column in columns:
            return _exchange_layout(system, columns[user_column], columns[assistant_column])
    raise InvalidInput(
        f"CSV header ({', '.join(header)}) matches no known layout; use columns "
        "'prompt,completion', 'system,user,assistant' (system optional) or 'messages' "
        "(optional 'tools') holding JSON"
    )


def _exchange_layout(system: int | None, user: int, assistant: int) -> _Layout:
    def build(row: list[str]) -> dict[str, Any]:
        messages = []
        if system is not None and row[system]:
            messages.append({"role": "system", "content": row[system]})
        messages.append({"role": "user", "content": row[user]})
        messages.append({"role": "assistant", "content": row[assistant]})
        return {"messages": messages}

    return build


def _json_columns_layout(messages: int, tools: int | None) -> _Layout:
    def build(row: list[str]) -> dict[str, Any]:
        payload = {"messages": _json_cell(row[messages], "messages")}
        if tools is not None and row[tools].strip():
            payload["tools"] = _json_cell(row[tools], "tools")
        return payload

    return build


def _json_cell(cell: str, column: str) -> Any:
    try:
        return orjson.loads(cell)
    except orjson.JSONDecodeError as exc:
        raise ValueError(
            f"Invalid JSON in column '{column}': {exc.msg} at column {exc.colno}"
        ) from exc


def _read_csv(path: Path) -> Iterator[RawExample]:
    # Long conversations in a 'messages' cell exceed the csv module's 128 KiB default.
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as file:
        consumed: list[str] = []

        def lines() -> Iterator[str]:
            for line in file:
                consumed.append(line)
                yield line

        reader = csv.reader(lines(), strict=True)
        header = next(reader, None)
        if header is None:
            return
        layout = _csv_layout(header)
        width = len(header)
        consumed.clear()
        while True:
            line_number = reader.line_num + 1
            try:
                row: list[str] | None = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                row, error = None, f"Invalid CSV: {exc}"
            raw = "".join(consumed)
            consumed.clear()
            if row is not None and not any(row):
                continue
            code = "invalid_csv_row"
            if not raw.isascii() and _has_bad_utf8(raw):
                code, error = "invalid_encoding", "Row is not valid UTF-8"
                raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            elif row is not None and len(row) != width:
                error = f"Row has {len(row)} fields; the header has {width}"
            elif row is not None:
                try:
                    payload = layout(row)
                except ValueError as exc:
                    code, error = "invalid_json", str(exc)
                else:
                    yield RawExample(line_number, payload, None, None)
                    continue
            yield RawExample(line_number, None, raw.rstrip("\r\n"), error, code)


def _has_bad_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
