"""The ranges numbers and dates from a request must fall in, so that none overflows SQL's
integers, Python's datetime arithmetic or torch on the way in: out of range is a 422
naming the field, never a 500."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import Query
from pydantic import AfterValidator, StringConstraints

MAX_OFFSET = 1_000_000
MAX_STEP = 2**31 - 1  # steps are 32-bit integer columns
MAX_ROW_ID = 2**63 - 1  # event and metric ids are 64-bit
EARLIEST_YEAR, LATEST_YEAR = 1900, 9000  # any offset or day range stays inside datetime's


def in_range_day(value: date) -> date:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"must be between the years {EARLIEST_YEAR} and {LATEST_YEAR}")
    return value


def utc_moment(value: datetime) -> datetime:
    """In range, and in UTC: naive means UTC, aware values are converted (SQLite drops
    offsets, so only UTC sorts right)."""
    in_range_day(value.date())
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip.")]
Day = Annotated[date, AfterValidator(in_range_day)]
UTCDatetime = Annotated[datetime, AfterValidator(utc_moment)]


def no_nul(value: str) -> str:
    """PostgreSQL cannot store NUL in text; refuse it rather than fail on insert."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(no_nul),
]
