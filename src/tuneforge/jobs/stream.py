"""The live stream of a job: its status, events and metric points as Server-Sent Events.

Each poll is a short transaction of its own in the threadpool, so a stream holds no
transaction and never blocks the event loop; the cursor in every message id lets a client
resume exactly where it stopped.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import anyio
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from tuneforge.db.engine import unit_of_work
from tuneforge.errors import InvalidInput
from tuneforge.jobs import repository
from tuneforge.jobs.schemas import EventOut, JobOut, MetricPoint
from tuneforge.jobs.service import describe_job, get_job
from tuneforge.jobs.states import TERMINAL_STATUSES
from tuneforge.sse import sse_message

STREAM_POLL_SECONDS = 0.5
STREAM_KEEPALIVE_SECONDS = 15.0
STREAM_RETRY_MILLISECONDS = 2_000
STREAM_BATCH = 500
_CURSOR = re.compile(r"^(\d+)-(\d+)$")


@dataclass(frozen=True)
class StreamCursor:
    """How far a client has read: the last event id and the last metric point id.

    Every SSE message carries the whole cursor as its id (``"<event id>-<metric id>"``), so
    whichever message a client saw last, ``Last-Event-ID`` resumes both sequences exactly.
    """

    event_id: int = 0
    metric_id: int = 0

    @classmethod
    def parse(cls, value: str | None) -> StreamCursor:
        if not value:
            return cls()
        match = _CURSOR.match(value.strip())
        if match is None:
            raise InvalidInput(
                "Last-Event-ID must be '<event id>-<metric id>', as the stream sent it",
                field="Last-Event-ID",
            )
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.event_id}-{self.metric_id}"


@dataclass(frozen=True)
class StreamBatch:
    job: JobOut
    events: list[EventOut]
    metrics: list[tuple[int, MetricPoint]]
    complete: bool


def read_stream_batch(
    session_factory: sessionmaker[Session],
    organization_id: str,
    job_id: str,
    cursor: StreamCursor,
) -> StreamBatch:
    """One short transaction: the job first, then what was written after the cursor.

    Reading the job first means that once it shows a terminal status, every event and
    point written before that status is in this batch (unless cut off: ``complete``).
    """
    with unit_of_work(session_factory) as session:
        job = get_job(session, organization_id, job_id)
        view = describe_job(session, organization_id, job)
        events = repository.events_after(session, job.id, cursor.event_id, limit=STREAM_BATCH)
        metrics = repository.metrics_after(session, job.id, cursor.metric_id, limit=STREAM_BATCH)
        return StreamBatch(
            job=view,
            events=[EventOut.from_row(event) for event in events],
            metrics=[(metric.id, MetricPoint.from_row(metric)) for metric in metrics],
            complete=len(events) < STREAM_BATCH and len(metrics) < STREAM_BATCH,
        )


async def stream_job(
    session_factory: sessionmaker[Session],
    organization_id: str,
    job_id: str,
    cursor: StreamCursor,
) -> AsyncIterator[str]:
    """Server-Sent Events: ``event`` and ``metric`` messages as rows appear, ``status`` (the
    whole job) whenever it changes; ends after a terminal status.

    Each poll runs in the threadpool with its own short session, so the stream holds no
    transaction and never blocks the event loop.
    """
    yield f"retry: {STREAM_RETRY_MILLISECONDS}\n\n"
    last_view: dict[str, object] | None = None
    last_sent = time.monotonic()
    while True:
        batch = await run_in_threadpool(
            read_stream_batch, session_factory, organization_id, job_id, cursor
        )
        messages = []
        for event in batch.events:
            cursor = replace(cursor, event_id=event.id)
            messages.append(sse_message(event, event="event", id=str(cursor)))
        for metric_id, point in batch.metrics:
            cursor = replace(cursor, metric_id=metric_id)
            messages.append(sse_message(point, event="metric", id=str(cursor)))
        # Heartbeats touch updated_at only; that alone is no news.
        view = batch.job.model_dump(mode="json", exclude={"updated_at"})
        if view != last_view:
            messages.append(sse_message(batch.job, event="status", id=str(cursor)))
            last_view = view
        if messages:
            yield "".join(messages)
            last_sent = time.monotonic()
        if batch.complete and batch.job.status in TERMINAL_STATUSES:
            return
        if time.monotonic() - last_sent >= STREAM_KEEPALIVE_SECONDS:
            yield ": keepalive\n\n"
            last_sent = time.monotonic()
        if batch.complete:
            await anyio.sleep(STREAM_POLL_SECONDS)
