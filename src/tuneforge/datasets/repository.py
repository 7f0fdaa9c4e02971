"""SQL for datasets and their example rows; every org-owned query starts from ``org_scoped``.

Example rows are written in bulk: ``ExampleRows`` encodes a batch where it was checked (often a
worker process), as COPY text for PostgreSQL or parameter tuples for SQLite, so the request's
connection only has to send it (``example_writer``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Integer,
    Row,
    Select,
    TypeDecorator,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from tuneforge.db.scoping import get_owned, org_scoped
from tuneforge.db.tables.datasets import (
    DatasetFormat,
    DatasetStatus,
    ExampleSplit,
    FineTuningDataset,
    TrainingExample,
)
from tuneforge.errors import NotFound

if TYPE_CHECKING:
    from psycopg import Copy

# Columns re-validation reads; selecting columns, not entities, keeps the identity map empty.
_VALIDATION_COLUMNS = (
    TrainingExample.id,
    TrainingExample.line_number,
    TrainingExample.messages,
    TrainingExample.tools,
    TrainingExample.preferred_output,
    TrainingExample.non_preferred_output,
    TrainingExample.raw_line,
    TrainingExample.errors,
    TrainingExample.split,
    TrainingExample.is_valid,
    TrainingExample.token_count,
    TrainingExample.assistant_token_count,
)


def _count(session: Session, stmt: Select[Any]) -> int:
    subquery = stmt.order_by(None).subquery()
    return session.scalar(select(func.count()).select_from(subquery)) or 0


def get_dataset(
    session: Session, organization_id: str, dataset_id: str, *, for_update: bool = False
) -> FineTuningDataset:
    return get_owned(
        session,
        FineTuningDataset,
        dataset_id,
        organization_id,
        label="Dataset",
        for_update=for_update,
    )


def list_datasets(
    session: Session,
    organization_id: str,
    *,
    status: DatasetStatus | None,
    fmt: DatasetFormat | None,
    name_contains: str | None,
    limit: int,
    offset: int,
) -> tuple[list[FineTuningDataset], int]:
    stmt = org_scoped(FineTuningDataset, organization_id)
    if status is not None:
        stmt = stmt.where(FineTuningDataset.status == status)
    if fmt is not None:
        stmt = stmt.where(FineTuningDataset.format == fmt)
    if name_contains:
        stmt = stmt.where(
            func.lower(FineTuningDataset.name).contains(name_contains.lower(), autoescape=True)
        )
    page = (
        stmt.order_by(FineTuningDataset.created_at.desc(), FineTuningDataset.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(page)), _count(session, stmt)


_EXAMPLES = TrainingExample.__table__
_SQLITE = sqlite.dialect()
_COPY_NULL = b"\\N"
_IDS_AT_ONCE = 256
# COPY's text format: backslash escapes, and tab, newline and CR would end a field or a row.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_json(value: Any) -> bytes:
    # orjson escapes every control character, so only backslashes need doubling.
    return orjson.dumps(value).replace(b"\\", b"\\\\")


def _copy_text(value: Any) -> bytes:
    if value is None:
        return _COPY_NULL
    text = str(value)
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.translate(_COPY_ESCAPES)
    return text.encode()


def _copy_int(value: int | None) -> bytes:
    return _COPY_NULL if value is None else b"%d" % value


def _copy_bool(value: bool | None) -> bytes:
    return _COPY_NULL if value is None else b"t" if value else b"f"


def _copy_datetime(value: datetime | None) -> bytes:
    return _COPY_NULL if value is None else value.isoformat().encode()


_COPY_ENCODERS: tuple[tuple[type[TypeEngine[Any]], Callable[[Any], bytes]], ...] = (
    (Boolean, _copy_bool),
    (Integer, _copy_int),
    (DateTime, _copy_datetime),
)


def _sqlite_json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _unchanged(value: Any) -> Any:
    return value


def _encoder(column: Column[Any], dialect: str) -> Callable[[Any], Any]:
    """How ``column``'s values are written, as SQLAlchemy would write them (JSON columns
    store None as JSON ``null``), but JSON through orjson."""
    kind = column.type
    if isinstance(kind, TypeDecorator):
        kind = kind.impl_instance
    if isinstance(kind, JSON):
        return _copy_json if dialect == "postgresql" else _sqlite_json
    if dialect != "postgresql":
        return column.type.dialect_impl(_SQLITE).bind_processor(_SQLITE) or _unchanged
    for sql_type, encode in _COPY_ENCODERS:
        if isinstance(kind, sql_type):
            return encode
    return _copy_text


def _new_ids(count: int) -> list[str]:
    """``count`` uuid4 ids as ``new_id`` makes them, from one urandom call: one call per id
    was half of a row's encoding time."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes(byte & 0x0F | 0x40 for byte in raw[6::16])  # version 4
    raw[8::16] = bytes(byte & 0x3F | 0x80 for byte in raw[8::16])  # RFC 4122 variant
    hexed = raw.hex()
    return [hexed[start : start + 32] for start in range(0, len(hexed), 32)]


@dataclass
class ExampleRows:
    """A batch of new ``training_examples`` rows encoded for one bulk write on ``dialect``:
    COPY text (PostgreSQL) or parameter tuples (SQLite). Plain data, so it crosses processes."""

    dialect: str
    columns: tuple[str, ...]
    count: int = 0
    copy_text: bytearray = field(default_factory=bytearray)
    params: list[tuple[Any, ...]] = field(default_factory=list)


class ExampleRowEncoder:
    """Encodes rows into ``rows``: ``shared`` holds the columns every row of the batch has in
    common, each ``add`` the rest, the same columns for every row. Ids are made here."""

    def __init__(self, dialect: str, shared: dict[str, Any]) -> None:
        self.rows = ExampleRows(dialect, (*shared, "id"))
        self._row_encoders: list[tuple[str, Callable[[Any], Any]]] | None = None
        encoded = [_encoder(_EXAMPLES.c[name], dialect)(value) for name, value in shared.items()]
        self._copy_prefix = b"\t".join(encoded) + b"\t" if dialect == "postgresql" else b""
        self._shared_params = tuple(encoded)
        self._ids: list[str] = []

    def add(self, values: dict[str, Any]) -> None:
        rows = self.rows
        if self._row_encoders is None:
            self._row_encoders = [
                (name, _encoder(_EXAMPLES.c[name], rows.dialect)) for name in values
            ]
            rows.columns += tuple(values)
        if len(values) != len(self._row_encoders):
            raise ValueError(f"Example row columns {sorted(values)} differ from the batch's")
        encoded = [encode(values[name]) for name, encode in self._row_encoders]
        if not self._ids:
            self._ids = _new_ids(_IDS_AT_ONCE)
        row_id = self._ids.pop()
        if rows.dialect == "postgresql":
            rows.copy_text += self._copy_prefix + row_id.encode() + b"\t"
            rows.copy_text += b"\t".join(encoded) + b"\n"
        else:
            rows.params.append((*self._shared_params, row_id, *encoded))
        rows.count += 1


def _prefer_fast_compression(session: Session) -> None:
    """For the rest of this transaction, compress large values with lz4 where the server
    can: a bulk write of examples spends most of PostgreSQL's time in pglz otherwise."""
    available = session.scalar(
        text(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        )
    )
    if available:
        session.execute(text("SET LOCAL default_toast_compression = lz4"))


class _CopyIn:
    """Batches of rows streamed into one COPY, which the first batch opens."""

    def __init__(self, connection: Any, stack: ExitStack) -> None:
        self._connection = connection
        self._stack = stack
        self._columns: tuple[str, ...] | None = None
        self._copy: Copy | None = None

    def __call__(self, rows: ExampleRows) -> None:
        if not rows.count:
            return
        if self._copy is None:
            cursor = self._stack.enter_context(self._connection.cursor())
            statement = f"COPY {_EXAMPLES.name} ({', '.join(rows.columns)}) FROM STDIN"
            self._copy = self._stack.enter_context(cursor.copy(statement))
            self._columns = rows.columns
        if rows.columns != self._columns:
            raise ValueError(f"Example rows with columns {rows.columns}, not {self._columns}")
        self._copy.write(rows.copy_text)


@contextmanager
def example_writer(session: Session) -> Iterator[Callable[[ExampleRows], None]]:
    """A function that inserts batches of new rows in the session's transaction, no ORM
    objects made. On PostgreSQL every batch goes into one COPY, open until the block ends,
    so the server parses and indexes rows while the next batch is still being checked; on
    SQLite each batch is one executemany."""
    connection: Any = session.connection().connection.driver_connection
    if session.get_bind().dialect.name != "postgresql":

        def insert(rows: ExampleRows) -> None:
            if rows.count:
                placeholders = ", ".join("?" * len(rows.columns))
                connection.executemany(
                    f"INSERT INTO {_EXAMPLES.name} ({', '.join(rows.columns)}) "
                    f"VALUES ({placeholders})",
                    rows.params,
                )

        yield insert
        return
    _prefer_fast_compression(session)
    with ExitStack() as stack:
        yield _CopyIn(connection, stack)


def update_examples(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """One executemany UPDATE by primary key for a batch of example rows."""
    if rows:
        session.execute(update(TrainingExample), list(rows))


def iter_example_batches(
    session: Session, dataset_id: str, batch_size: int
) -> Iterator[Sequence[Row[Any]]]:
    """The dataset's rows in line order, ``batch_size`` at a time by keyset pagination.

    Each batch is a fresh query, so callers may update the rows of a batch before the next.
    """
    after: tuple[int, str] | None = None
    while True:
        stmt = select(*_VALIDATION_COLUMNS).where(TrainingExample.dataset_id == dataset_id)
        if after is not None:
            stmt = stmt.where(tuple_(TrainingExample.line_number, TrainingExample.id) > after)
        stmt = stmt.order_by(TrainingExample.line_number, TrainingExample.id).limit(batch_size)
        batch = session.execute(stmt).all()
        if not batch:
            return
        yield batch
        after = (batch[-1].line_number, batch[-1].id)


def max_line_number(session: Session, dataset_id: str) -> int:
    stmt = select(func.max(TrainingExample.line_number)).where(
        TrainingExample.dataset_id == dataset_id
    )
    return session.scalar(stmt) or 0


def _examples_of(organization_id: str, dataset_id: str) -> Select[Any]:
    return org_scoped(TrainingExample, organization_id).where(
        TrainingExample.dataset_id == dataset_id
    )


def list_examples(
    session: Session,
    organization_id: str,
    dataset_id: str,
    *,
    split: ExampleSplit | None,
    valid: bool | None,
    limit: int,
    offset: int,
) -> tuple[list[TrainingExample], int]:
    stmt = _examples_of(organization_id, dataset_id)
    if split is not None:
        stmt = stmt.where(TrainingExample.split == split)
    if valid is not None:
        stmt = stmt.where(TrainingExample.is_valid.is_(valid))
    page = (
        stmt.order_by(TrainingExample.line_number, TrainingExample.id).limit(limit).offset(offset)
    )
    return list(session.scalars(page)), _count(session, stmt)


def get_example(
    session: Session, organization_id: str, dataset_id: str, example_id: str
) -> TrainingExample:
    """The example, if it belongs to this dataset of this organization; a 404 otherwise."""
    stmt = _examples_of(organization_id, dataset_id).where(TrainingExample.id == example_id)
    example = session.scalars(stmt).first()
    if example is None:
        raise NotFound(f"Example {example_id} not found")
    return example
