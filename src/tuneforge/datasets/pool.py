"""A process pool for one large upload, so parsing, checks and token counts use every core.

Workers are forked from multiprocessing's fork server, a small process that imported the
ingest code once and holds no thread, lock or database connection of the server: forking the
server itself could copy a lock another thread holds. Each upload gets its own pool, so the
tokenizers and caches its workers build are freed when it is done; only the fork server stays.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.forkserver
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

logger = logging.getLogger(__name__)

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


def _context(module: str) -> multiprocessing.context.ForkServerContext:
    """The fork server's context, preloading the main module and ``module`` (as spawned
    processes do), so workers start with both imported."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", module])
    return context


def start_fork_server(module: str) -> None:
    """Start the fork server now, without waiting for its imports (~0.8 s of CPU), so that
    they overlap what the caller does next; a later pool of ``module``'s function then forks
    at once. Does nothing while one runs. A failure is left to the pool to report."""
    _context(module)
    try:
        multiprocessing.forkserver.ensure_running()
    except OSError:
        logger.warning("Could not start the fork server ahead of a pool", exc_info=True)


def ordered_map(
    function: Callable[[Item], Result], items: Iterable[Item], processes: int
) -> Iterator[Result]:
    """``map(function, items)`` on ``processes`` worker processes, results in input order.

    ``function`` must be picklable and live in an importable module, which the fork server
    imports once. If the caller stops early, work not started is cancelled.
    """
    pool = ProcessPoolExecutor(processes, mp_context=_context(function.__module__))
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
