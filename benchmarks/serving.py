"""What the API benchmarks share: a real ``tuneforge serve`` process and its memory.

``served`` migrates a data dir (SQLite in it, or a fresh PostgreSQL database), starts the
``tuneforge`` command as an operator would and waits for the first 200 on ``/health``;
``TreeMemory`` samples the server's memory, workers and helper processes included.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import psycopg

TUNEFORGE = str(Path(sys.executable).with_name("tuneforge"))
JWT_SECRET = "benchmark-signing-key-long-enough-for-hs256-use"
DEFAULT_ADMIN_DSN = os.environ.get(
    "TUNEFORGE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass(frozen=True)
class Served:
    """A running server: where it listens, its process, and how long it took to answer."""

    url: str
    process: subprocess.Popen[bytes]
    seconds_to_health: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def database(kind: str, data_dir: Path, admin_dsn: str = DEFAULT_ADMIN_DSN) -> Iterator[str]:
    """A migrated database of ``kind`` (``sqlite`` in the data dir, or ``postgresql``: a
    fresh database, dropped afterwards); yields its URL."""
    if kind == "sqlite":
        url = f"sqlite:///{data_dir / 'tuneforge.db'}"
        migrate(url, data_dir)
        yield url
        return
    name = f"tuneforge_bench_{os.getpid()}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = admin_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        url = f"{base}/{name}"
        migrate(url, data_dir)
        yield url
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_env(database_url: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TUNEFORGE_DATA_DIR": str(data_dir),
        "TUNEFORGE_DATABASE_URL": database_url,
        "TUNEFORGE_JWT_SECRET": JWT_SECRET,
    }


def migrate(database_url: str, data_dir: Path) -> None:
    subprocess.run(
        [TUNEFORGE, "migrate"],
        env=server_env(database_url, data_dir),
        check=True,
        capture_output=True,
    )


@contextmanager
def served(
    database_url: str,
    data_dir: Path,
    timeout: float = 120.0,
    command: tuple[str, ...] = (TUNEFORGE,),
) -> Iterator[Served]:
    """``tuneforge serve`` (or ``command`` given ``serve --port N``) on a free port, timed
    from spawn to its first 200 on /health."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "serve", "--port", str(port)],
        env=server_env(database_url, data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(timeout=1.0) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"tuneforge serve exited with {process.returncode}")
                if time.perf_counter() - started > timeout:
                    raise TimeoutError(f"/health did not answer within {timeout:g} s")
                try:
                    if client.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.01)
        yield Served(url, process, time.perf_counter() - started)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def register(url: str) -> dict[str, str]:
    """A new user and organization; the headers that authenticate as them."""
    response = httpx.post(
        f"{url}/auth/register",
        json={
            "email": f"bench-{time.time_ns()}@example.com",
            "password": "benchmark password 1",
            "name": "Benchmark",
            "organization_name": "Benchmark",
        },
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


class TreeMemory:
    """The peak memory of a process and all its descendants (fork server and pool workers
    included) while the ``with`` block runs, as RSS (shared pages counted in every process
    that maps them: an upper bound) and PSS (shared pages split between them)."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self._root = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.before_rss = self.peak_rss = self.before_pss = self.peak_pss = 0

    def measure(self) -> tuple[int, int]:
        rss = pss = 0
        for process in [self._root, *self._root.children(recursive=True)]:
            try:
                info = process.memory_full_info()
            except psutil.Error:
                continue
            rss += info.rss
            pss += info.pss
        return rss, pss

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            rss, pss = self.measure()
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)

    def __enter__(self) -> TreeMemory:
        self.before_rss, self.before_pss = self.measure()
        self.peak_rss, self.peak_pss = self.before_rss, self.before_pss
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> tuple[float, float]:
        """(RSS, PSS) growth in MB over the value before the block."""
        return (
            (self.peak_rss - self.before_rss) / 1e6,
            (self.peak_pss - self.before_pss) / 1e6,
        )


def temporary_data_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="tuneforge-bench-")
