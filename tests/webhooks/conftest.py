"""A real local webhook receiver, the ``openai`` SDK against the served app, and helpers to
drive the outbox and the dispatcher."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.api import Account
from tuneforge.config import Settings

WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An ``http.server`` on a free local port. It answers with ``statuses`` in turn (then
    200), and while ``hold`` is set it keeps each request open until ``release``."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    hold: bool = False
    released: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def record(self, request: Received) -> int:
        with self.arrived:
            self.received.append(request)
            self.arrived.notify_all()
            return self.statuses.pop(0) if self.statuses else 200

    def wait_for(self, count: int, timeout: float = WAIT_SECONDS) -> list[Received]:
        with self.arrived:
            got = self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
            assert got, f"the receiver got {len(self.received)} of {count} requests"
            return list(self.received)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = Received(
                self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)
            )
            status = receiver.record(request)
            if receiver.hold:
                receiver.released.wait(WAIT_SECONDS)
            with contextlib.suppress(OSError):  # a sender that timed out has gone
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests read what arrived instead."""

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_port}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.released.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Receivers here listen on loopback, which only an operator's setting allows."""
    return settings.model_copy(
        update={"webhook_allow_private_destinations": True, "webhook_timeout_seconds": 5.0}
    )


@pytest.fixture
def api_key(client: TestClient, account: Account) -> str:
    response = client.post("/auth/api-keys", json={"name": "sdk"}, headers=account.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


@pytest.fixture
def sdk(live_server: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0, timeout=30)


def run_until(step: Callable[[], object], done: Callable[[], bool]) -> None:
    """Call ``step`` until ``done``: a dispatcher's ``run_once`` until the receiver has what
    the test waits for. A deadline, not a timing assertion."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not done():
        assert time.monotonic() < deadline, "gave up waiting"
        step()
        time.sleep(0.01)


Factory = sessionmaker[Session]
