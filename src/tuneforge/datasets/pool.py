"""A process pool for one large upload, so parsing, checks and token counts use every core.

Workers are forked from multiprocessing's fork server, a small process that imported the
ingest code once and holds no thread, lock or database connection of the server: forking the
server itself could copy a lock another thread holds. Each upload gets its own pool, so the
tokenizers and caches its workers build are freed when it is done; only the fork server stays.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# Results waiting to be taken, per worker: enough to keep every worker busy while the caller
# stores the previous one, few enough that memory does not grow with the upload.
_IN_FLIGHT_PER_WORKER = 2
_IN_USE = threading.Lock()


def usable_cores() -> int:
    """The cores this process may run on (its affinity), not all the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def exclusive() -> Iterator[bool]:
    """Whether this thread may run a pool: one upload at a time per process does, so memory
    holds one pool's workers whatever the number of uploads; the others are checked in their
    own thread meanwhile."""
    acquired = _IN_USE.acquire(blocking=False)
    try:
        yield acquired
    finally:
        if acquired:
            _IN_USE.release()


def ordered_map(
    function: Callable[[Item], Result], items: Iterable[Item], processes: int
) -> Iterator[Result]:
    """``map(function, items)`` on ``processes`` worker processes, results in input order.

    ``function`` must be picklable and live in an importable module. The fork server imports
    it and the main module once (as spawned processes do), so workers start with both. If the
    caller stops early, work not started is cancelled.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", function.__module__])
    pool = ProcessPoolExecutor(processes, mp_context=context)
    pending: deque[Future[Result]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= processes * _IN_FLIGHT_PER_WORKER:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
