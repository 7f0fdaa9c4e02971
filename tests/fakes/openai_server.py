"""A real local HTTP server speaking the slice of OpenAI's API that fine-tuning uses.

Tests drive the real ``openai`` SDK against it, so request encoding, response parsing,
status errors, ``Retry-After`` and client timeouts are all exercised for real.

Use the ``fake_openai`` fixture (a started :class:`FakeOpenAI`, fresh per test)::

    settings = Settings(**fake_openai.settings_overrides)   # key + base URL of the fake
    fake_openai.set_steps_per_phase(validating_files=1, queued=1, running=3)
    fake_openai.fail_next("jobs.retrieve", 429, times=2, retry_after=7)
    fake_openai.fail_next("jobs.create", 400, message="bad model", code="invalid_model")
    fake_openai.delay_next("jobs.create", 2.0)     # longer than the client timeout
    fake_openai.fail_job_with("invalid_training_file", "Line 3 is not valid JSON")
    fake_openai.set_status(job_id, "paused")       # pin a status the SDK does not know
    fake_openai.requests_for("jobs.create")        # recorded requests of one route
    fake_openai.jobs, fake_openai.files            # what the fake holds, as JSON dicts
    fake_openai.file_content(file_id)              # the uploaded bytes

Routes (names used by ``fail_next``/``delay_next``/``requests_for``; ``"*"`` = any):
``files.create``, ``files.list``, ``jobs.create``, ``jobs.list``, ``jobs.retrieve``,
``jobs.cancel``, ``jobs.events``, ``jobs.checkpoints``.

A job advances one step per ``GET /fine_tuning/jobs/{id}``: ``validating_files`` and
``queued`` for the configured number of polls, then ``running`` (each poll appends a
``metrics`` event: ``step``, ``total_steps``, a falling ``train_loss``, token accuracy,
and validation metrics when a validation file was given), then ``succeeded`` with
``fine_tuned_model`` ``ft:<model>:tuneforge:<suffix>:<id>``, ``trained_tokens`` and up to
three checkpoints, or ``failed`` with the error set by ``fail_job_with``. Lists come
newest first with OpenAI's ``after`` cursor. A delayed request is processed first and
answered late, like a real response lost to a client timeout. Requests without the
fake's bearer key get a 401.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.openai_api import ApiError, FakeFineTuningApi, error_body, page

Handler = Callable[[Request, dict[str, Any] | None], dict[str, Any]]


@dataclass(frozen=True)
class RecordedRequest:
    route: str
    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None
    status: int


@dataclass(frozen=True)
class _Fault:
    status: int | None = None
    delay: float = 0.0
    retry_after: float | None = None
    message: str | None = None
    code: str | None = None


class FakeOpenAI:
    """The fake's address, its control methods and its request log."""

    def __init__(self) -> None:
        self.api_key = "sk-fake-" + secrets.token_hex(8)
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.api = FakeFineTuningApi()
        self._lock = threading.Lock()
        self._faults: dict[str, list[_Fault]] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: dict[str, tuple[str, str, Handler]] = {
            "files.create": ("POST", "/v1/files", self._create_file),
            "files.list": ("GET", "/v1/files", self._list_files),
            "jobs.create": ("POST", "/v1/fine_tuning/jobs", self._create_job),
            "jobs.list": ("GET", "/v1/fine_tuning/jobs", self._list_jobs),
            "jobs.retrieve": ("GET", "/v1/fine_tuning/jobs/{job_id}", self._retrieve_job),
            "jobs.cancel": ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel", self._cancel_job),
            "jobs.events": ("GET", "/v1/fine_tuning/jobs/{job_id}/events", self._events),
            "jobs.checkpoints": (
                "GET",
                "/v1/fine_tuning/jobs/{job_id}/checkpoints",
                self._checkpoints,
            ),
        }

    @property
    def settings_overrides(self) -> dict[str, str]:
        """``Settings(**fake.settings_overrides)`` points the openai provider here."""
        return {"openai_api_key": self.api_key, "openai_base_url": self.base_url}

    def fail_next(
        self,
        route: str,
        status: int = 500,
        times: int = 1,
        *,
        retry_after: float | None = None,
        message: str | None = None,
        code: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests of ``route`` with ``status``, unprocessed.

        A 429 carries ``Retry-After`` (``retry_after`` seconds, default 1); other statuses
        carry it only when ``retry_after`` is given.
        """
        if status == 429 and retry_after is None:
            retry_after = 1
        fault = _Fault(status=status, retry_after=retry_after, message=message, code=code)
        self._add_faults(route, [fault] * times)

    def delay_next(self, route: str, seconds: float, times: int = 1) -> None:
        """Process the next ``times`` requests of ``route`` but answer ``seconds`` late."""
        self._add_faults(route, [_Fault(delay=seconds)] * times)

    def fail_job_with(self, code: str, message: str) -> None:
        """Jobs created from now on end ``failed`` with this error instead of succeeding."""
        with self._lock:
            self.api.failure = (code, message)

    def set_steps_per_phase(
        self, *, validating_files: int = 1, queued: int = 1, running: int = 3
    ) -> None:
        """How many polls a job created from now on spends in each phase."""
        if min(validating_files, queued, running) < 0 or validating_files + queued < 1:
            raise ValueError("phases need non-negative counts and at least one initial poll")
        with self._lock:
            self.api.phases = {
                "validating_files": validating_files,
                "queued": queued,
                "running": running,
            }

    def set_status(self, job_id: str, status: str) -> None:
        """Pin a job at ``status`` (any string); polls no longer advance it."""
        with self._lock:
            job = self.api.job(job_id)
            job.data["status"] = status
            job.pinned = True

    def requests_for(self, route: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.route == route]

    @property
    def jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(job.data) for job in self.api.jobs.values()]

    @property
    def files(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(item) for item in self.api.files.values()]

    def file_content(self, file_id: str) -> bytes:
        with self._lock:
            return self.api.file_contents[file_id]

    def _add_faults(self, route: str, faults: list[_Fault]) -> None:
        if route != "*" and route not in self._routes:
            raise ValueError(f"unknown route {route!r}; known: {', '.join(self._routes)}")
        with self._lock:
            self._faults.setdefault(route, []).extend(faults)

    def _take_fault(self, route: str) -> _Fault | None:
        with self._lock:
            for key in (route, "*"):
                if self._faults.get(key):
                    return self._faults[key].pop(0)
        return None

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        app = Starlette(routes=[self._route(name) for name in self._routes])
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def _route(self, name: str) -> Route:
        method, path, _ = self._routes[name]

        async def endpoint(request: Request) -> JSONResponse:
            return await self._dispatch(name, request)

        return Route(path, endpoint, methods=[method])

    async def _dispatch(self, name: str, request: Request) -> JSONResponse:
        body = await _read_body(request)
        authorized = request.headers.get("authorization") == f"Bearer {self.api_key}"
        fault = self._take_fault(name) if authorized else None
        if not authorized:
            error = error_body("Incorrect API key provided", "invalid_api_key")
            response = JSONResponse(error, status_code=401)
        elif fault is not None and fault.status is not None:
            headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after else None
            error = error_body(fault.message or f"Injected failure ({fault.status})", fault.code)
            response = JSONResponse(error, status_code=fault.status, headers=headers)
        else:
            try:
                with self._lock:
                    response = JSONResponse(self._routes[name][2](request, body))
            except ApiError as exc:
                response = JSONResponse(exc.body(), status_code=exc.status)
        self.requests.append(
            RecordedRequest(
                route=name,
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                body=body,
                status=response.status_code,
            )
        )
        if fault is not None and fault.delay:
            await self._sleep_unless_stopping(fault.delay)
        return response

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        """Hold a delayed answer, but never the server's shutdown."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (self._server and self._server.should_exit):
            await asyncio.sleep(0.02)

    def _create_file(self, _: Request, body: dict[str, Any] | None) -> dict[str, Any]:
        fields = body or {}
        upload = fields.get("file")
        if not isinstance(upload, dict):
            raise ApiError(400, "Missing required parameter: 'file'", param="file")
        return self.api.create_file(upload["filename"], upload["content"], fields.get("purpose"))

    def _list_files(self, request: Request, _: dict[str, Any] | None) -> dict[str, Any]:
        query = request.query_params
        files = self.api.list_files(query.get("purpose"), query.get("order", "desc"))
        return page(files, query.get("after"), int(query.get("limit", 10_000)))

    def _create_job(self, _: Request, body: dict[str, Any] | None) -> dict[str, Any]:
        return self.api.create_job(body or {})

    def _list_jobs(self, request: Request, _: dict[str, Any] | None) -> dict[str, Any]:
        query = request.query_params
        metadata = {
            key.removeprefix("metadata[").removesuffix("]"): value
            for key, value in query.items()
            if key.startswith("metadata[") and key.endswith("]")
        }
        return page(self.api.list_jobs(metadata), query.get("after"), int(query.get("limit", 20)))

    def _retrieve_job(self, request: Request, _: dict[str, Any] | None) -> dict[str, Any]:
        return self.api.retrieve_job(request.path_params["job_id"])

    def _cancel_job(self, request: Request, _: dict[str, Any] | None) -> dict[str, Any]:
        return self.api.cancel_job(request.path_params["job_id"])

    def _events(self, request: Request, _: dict[str, Any] | None) -> dict[str, Any]:
        events = self.api.list_events(request.path_params["job_id"])
        query = request.query_params
        return page(events, query.get("after"), int(query.get("limit", 20)))

    def _checkpoints(self, request: Request, _: dict[str, Any] | None) -> dict[str, Any]:
        checkpoints = self.api.list_checkpoints(request.path_params["job_id"])
        query = request.query_params
        return page(checkpoints, query.get("after"), int(query.get("limit", 10)))


async def _read_body(request: Request) -> dict[str, Any] | None:
    """The JSON body, or multipart fields with each upload as ``{filename, content}``."""
    if request.method != "POST":
        return None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        fields: dict[str, Any] = {}
        async with request.form() as form:
            for key, value in form.multi_items():
                if isinstance(value, str):
                    fields[key] = value
                else:
                    fields[key] = {"filename": value.filename, "content": await value.read()}
        return fields
    raw = await request.body()
    return await request.json() if raw else None


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started fake OpenAI API with fresh state; see the module docstring for its API."""
    fake = FakeOpenAI()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
