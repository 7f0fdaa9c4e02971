"""One metered model call, and the plumbing streamed calls share.

Every call to a fine-tuned model gets a usage row, failed ones too. A failure's row is
written in a unit of work of its own, since the error being raised rolls back any other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.config import Settings
from tuneforge.db.engine import unit_of_work
from tuneforge.errors import TooManyRequests, TuneForgeError
from tuneforge.inference.engine import InferenceEngine
from tuneforge.inference.generation import Completion, CompletionStream
from tuneforge.inference.schemas import Usage
from tuneforge.inference.targets import ModelTarget
from tuneforge.models.usage import record_usage

logger = logging.getLogger(__name__)
T = TypeVar("T")


class GenerationSlots:
    """At most ``limit`` generations per organization at once in this process, so one
    organization's long replies cannot hold every CPU while others wait."""

    RETRY_AFTER_SECONDS = 2

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._busy: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, organization_id: str) -> Callable[[], None]:
        """A slot, or a 429; the returned function gives it back (once, however often called)."""
        with self._lock:
            busy = self._busy.get(organization_id, 0)
            if busy >= self.limit:
                raise TooManyRequests(
                    f"This organization already runs {busy} generations at once, its limit; "
                    "retry when one has finished",
                    retry_after=self.RETRY_AFTER_SECONDS,
                )
            self._busy[organization_id] = busy + 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                left = self._busy[organization_id] - 1
                if left:
                    self._busy[organization_id] = left
                else:
                    del self._busy[organization_id]

        return release


@dataclass(frozen=True)
class InferenceRuntime:
    """One per app: the engine holding loaded models and what the service writes with."""

    settings: Settings
    engine: InferenceEngine
    session_factory: sessionmaker[Session]
    slots: GenerationSlots


@dataclass(frozen=True)
class Call:
    """One metered model call; only fine-tuned models have usage rows."""

    organization_id: str
    target: ModelTarget
    agent_id: str | None
    started: float = field(default_factory=time.perf_counter)

    def record(self, session: Session, completion: Completion | None) -> None:
        if self.target.fine_tuned_model_id is None:
            return
        record_usage(
            session,
            organization_id=self.organization_id,
            model_id=self.target.fine_tuned_model_id,
            agent_id=self.agent_id,
            prompt_tokens=completion.prompt_tokens if completion else 0,
            completion_tokens=completion.completion_tokens if completion else 0,
            latency_ms=(time.perf_counter() - self.started) * 1000,
            success=completion is not None,
        )


def record_failure(runtime: InferenceRuntime, call: Call) -> None:
    if call.target.fine_tuned_model_id is None:
        return
    try:
        with unit_of_work(runtime.session_factory) as session:
            call.record(session, None)
    except Exception:
        logger.exception("Could not record a failed call to %s", call.target.public_id)


def metered(runtime: InferenceRuntime, call: Call, work: Callable[[], T]) -> T:
    """Run a whole generation in one of the organization's slots; a failure is metered, a
    refusal for a full queue is not (the model never ran)."""
    release = runtime.slots.take(call.organization_id)
    try:
        return work()
    except TooManyRequests:
        raise
    except Exception:
        record_failure(runtime, call)
        raise
    finally:
        release()


def metered_stream(
    runtime: InferenceRuntime, call: Call, start: Callable[[], CompletionStream]
) -> tuple[CompletionStream, Callable[[], None]]:
    """Start a streamed generation in one of the organization's slots; the caller gives
    the slot back (the returned function) once the stream has ended."""
    release = runtime.slots.take(call.organization_id)
    try:
        return start(), release
    except TooManyRequests:
        release()
        raise
    except Exception:
        release()
        record_failure(runtime, call)
        raise


async def deltas(stream: CompletionStream) -> AsyncIterator[str]:
    """The stream's text, waited for in a worker thread so the event loop never blocks.

    A cancelled wait is abandoned at once (the caller then closes the stream), rather than
    held until a model busy with another request produces this one's next token.
    """
    iterator = iter(stream)
    while (
        delta := await anyio.to_thread.run_sync(next, iterator, None, abandon_on_cancel=True)
    ) is not None:
        yield delta


async def record_failure_shielded(runtime: InferenceRuntime, call: Call) -> None:
    """Runs even when the client went away and the response task is being cancelled."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(record_failure, runtime, call)


def error_detail(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, TuneForgeError):
        return exc.error, exc.detail
    logger.exception("Generation failed", exc_info=exc)
    return "generation_failed", "The model failed while generating; see the server log"


def usage_of(completion: Completion) -> Usage:
    return Usage(
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        total_tokens=completion.prompt_tokens + completion.completion_tokens,
    )
