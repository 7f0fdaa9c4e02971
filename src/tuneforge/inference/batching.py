"""The scheduler of one base model: a thread that runs every request for it in one batch.

Requests wait in a bounded queue. When the model is idle, the first request waits
``window_seconds`` for others to arrive with it; while a batch runs, waiting requests join
it between two decoding steps (continuous batching), up to ``max_rows`` rows and
``token_limit`` rows times padded width (one long prompt must not pad fifteen short ones
into gigabytes of KV cache: it waits until the batch drains). A full queue refuses new
requests with a 429 whose ``Retry-After`` is when the batch's first row will have ended.
Requests for fine-tunes of the base and for the base itself share the batch
(``adapters.py``). The thread ends when idle for a while, and as soon as it is idle once
its base model has been evicted; a new request starts it again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuneforge.errors import TooManyRequests
from tuneforge.inference.decoding import DecodeBatch, GenerationRequest

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tuneforge.inference.adapters import AdapterBank

logger = logging.getLogger(__name__)
IDLE_SECONDS = 60.0
MAX_RETRY_AFTER_SECONDS = 60


@dataclass(frozen=True)
class BatchLimits:
    max_rows: int = 16
    queue_limit: int = 64
    window_seconds: float = 0.01
    token_limit: int = 32768
    prefix_bytes: int = 64 * 1024**2


class BatchRunner:
    """Queues requests for one model and decodes them together in its own thread."""

    def __init__(self, model: PreTrainedModel, bank: AdapterBank, limits: BatchLimits) -> None:
        self._model = model
        self._bank = bank
        self.limits = limits
        self._waiting: deque[GenerationRequest] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._outstanding = 0  # queued or decoding
        self._soonest_done = 0  # steps until the batch's first row ends, as of the last step
        self._step_seconds = 0.1

    def submit(self, requests: Sequence[GenerationRequest], *, bounded: bool = True) -> None:
        """Queue ``requests`` together; ``bounded`` ones are refused (429) past the queue limit."""
        with self._cond:
            room = self.limits.max_rows + self.limits.queue_limit - self._outstanding
            if bounded and len(requests) > room:
                raise TooManyRequests(
                    f"{len(self._waiting)} requests are already waiting for this model; "
                    "retry shortly",
                    retry_after=self._retry_after(),
                )
            for request in requests:
                request.on_done = self._finished_one
            self._outstanding += len(requests)
            self._waiting.extend(requests)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tuneforge-batch", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        """The model left the cache: serve what is queued, then let the thread end."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _finished_one(self) -> None:
        with self._cond:
            self._outstanding -= 1

    def _retry_after(self) -> int:
        waits = self._soonest_done * self._step_seconds
        return max(1, min(MAX_RETRY_AFTER_SECONDS, math.ceil(waits)))

    def _run(self) -> None:
        import torch

        batch = DecodeBatch(self._model, self._bank, self.limits.prefix_bytes)
        while (joining := self._next_joining(batch)) is not None:
            started = time.perf_counter()
            with self._bank.lock, torch.inference_mode():
                try:
                    if joining:
                        batch.admit(joining)
                    batch.step()
                except Exception as exc:  # a bug, not a model error: fail its rows, go on
                    logger.exception("Batched generation failed")
                    for request in joining:
                        request.fail(exc)
                    batch.fail(exc)
            if len(batch):
                elapsed = time.perf_counter() - started
                self._step_seconds = 0.8 * self._step_seconds + 0.2 * elapsed

    def _next_joining(self, batch: DecodeBatch) -> list[GenerationRequest] | None:
        """The requests to admit before the next step (maybe none); None ends the thread."""
        with self._cond:
            self._soonest_done = batch.soonest_done()
            while not self._waiting and not len(batch):
                if self._closed or (not self._cond.wait(IDLE_SECONDS) and not self._waiting):
                    self._thread = None
                    return None
            if not len(batch) and self._waiting:
                deadline = self._waiting[0].queued_at + self.limits.window_seconds
                while len(self._waiting) < self.limits.max_rows:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            return self._take(batch)

    def _take(self, batch: DecodeBatch) -> list[GenerationRequest]:
        joining: list[GenerationRequest] = []
        while self._waiting and len(batch) + len(joining) < self.limits.max_rows:
            request = self._waiting[0]
            if request.cancel.is_set():
                self._waiting.popleft().finish([], "stop")
                continue
            if len(batch) and not batch.can_join():
                break
            if (len(batch) or joining) and batch.padded_tokens(
                [*joining, request]
            ) > self.limits.token_limit:
                break
            joining.append(self._waiting.popleft())
        return joining
