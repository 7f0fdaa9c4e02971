"""Issue 11, one row per item: every kind of bad input gets a clear answer, never a 500.

Each row is one HTTP request and what it must get back: the status, the error in the
project's shape (``{"error", "detail", ...}``, or OpenAI's under ``/v1``) and, where it
matters, the field the error names. What takes more than one request (a throttle, a race,
a sign-out, a worker) is a short scenario in the same table. The dedicated test next to
each item's code covers its variations; this table is the one place that covers them all.
"""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.auth.test_auth import api_key_for
from tests.fixtures.api import Account
from tests.fixtures.factories import Factories, Ids
from tests.fixtures.files import valid_jsonl
from tests.fixtures.tiny_model import TINY_BASE_MODEL
from tuneforge.config import Settings, get_settings
from tuneforge.db.base import new_id, utcnow
from tuneforge.db.engine import make_engine, make_session_factory, unit_of_work
from tuneforge.db.tables.jobs import JobStatus
from tuneforge.inference.calls import InferenceRuntime
from tuneforge.providers.local.provider import JOB_DIR_NOT_VISIBLE
from tuneforge.store.cli import models_app
from tuneforge.worker.loop import Worker
from tuneforge.worker.runner import WorkerConfig
from tuneforge.worker.storage import check_shared_data_dir

HUGE = 2**63
EARLY = "0001-01-01T00:00:00+05:00"
PASSWORD = "correct horse battery"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@dataclass
class Ctx:
    """What a row runs against: the app, a signed-in account and one of each object."""

    app: FastAPI
    client: TestClient
    account: Account
    settings: Settings
    ids: Ids
    request: pytest.FixtureRequest


Auth = Callable[[Ctx], dict[str, str]]


def token(ctx: Ctx) -> dict[str, str]:
    return ctx.account.headers


def api_key(ctx: Ctx) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key_for(ctx.client, ctx.account)}"}


def anonymous(ctx: Ctx) -> dict[str, str]:
    return {}


def forged(**claims: Any) -> Auth:
    """A token signed with the app's own key whose claims cannot be used."""

    def headers(ctx: Ctx) -> dict[str, str]:
        payload = {
            "sub": ctx.account.user_id,
            "org": ctx.account.organization_id,
            "exp": int(time.time()) + 60,
            **claims,
        }
        signed = jwt.encode(payload, ctx.settings.signing_key(), algorithm="HS256")
        return {"Authorization": f"Bearer {signed}"}

    return headers


@dataclass(frozen=True)
class Bad:
    """One request and what it must get. ``{agent}``, ``{dataset}``, ``{job}`` and
    ``{model}`` in the path or JSON strings become the ids of the account's objects."""

    method: str
    path: str
    status: int
    json: Any = None
    content: bytes | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    auth: Auth = token
    named: str | None = None  # the field the error names
    returns: dict[str, Any] = field(default_factory=dict)  # part of the body it returns
    headers: dict[str, str] = field(default_factory=dict)
    check: Callable[[httpx.Response], None] | None = None
    needs: tuple[str, ...] = ()  # fixtures the row needs, e.g. an installed model


@dataclass(frozen=True)
class Scenario:
    """Bad input that is more than one request, run as a short story."""

    run: Callable[[Ctx], None]
    needs: tuple[str, ...] = ()


def fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format_map(ids)
    if isinstance(value, list):
        return [fill(item, ids) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, ids) for key, item in value.items()}
    return value


def named_field(response: httpx.Response) -> str | None:
    """The field an error names, in either error shape."""
    body = response.json()
    if isinstance(body["error"], dict):
        return body["error"]["param"]
    fields = body.get("fields") or [{"field": body.get("field")}]
    return fields[0]["field"]


def assert_error_shape(path: str, response: httpx.Response) -> None:
    body = response.json()
    if path.startswith("/v1/"):
        assert set(body["error"]) >= {"message", "type", "code", "param"}, body
    else:
        assert isinstance(body["error"], str) and body["detail"], body


def send(ctx: Ctx, bad: Bad) -> None:
    ids = asdict(ctx.ids)
    path = fill(bad.path, ids)
    headers = bad.auth(ctx)
    if bad.content is not None:
        headers = {**headers, "Content-Type": "application/json"}
    response = ctx.client.request(
        bad.method,
        path,
        json=fill(bad.json, ids),
        content=bad.content,
        files=bad.files,
        data={"name": "Named in any script"} if bad.files else None,
        headers=headers,
    )
    assert response.status_code == bad.status, response.text[:2000]
    if bad.status >= 400:
        assert_error_shape(path, response)
    if bad.named is not None:
        assert named_field(response) == bad.named, response.text[:2000]
    if bad.returns:
        assert response.json().items() >= bad.returns.items(), response.text[:2000]
    assert response.headers.items() >= {k.lower(): v for k, v in bad.headers.items()}.items()
    if bad.check is not None:
        bad.check(response)


def upload(name: str) -> Bad:
    return Bad(
        "POST",
        "/fine-tuning/datasets",
        201,
        files={"file": (name, valid_jsonl(2), "application/octet-stream")},
        returns={"original_filename": name},
    )


def local_job(**hyperparameters: Any) -> Bad:
    return Bad(
        "POST",
        "/fine-tuning/jobs",
        422,
        json={
            "dataset_id": "{dataset}",
            "model": TINY_BASE_MODEL,
            "hyperparameters": hyperparameters,
        },
        named=f"hyperparameters.{next(iter(hyperparameters))}",
        needs=("installed_tiny_model",),
    )


def chat_with_seed(seed: int) -> Bad:
    return Bad(
        "POST",
        "/v1/chat/completions",
        422,
        json={
            "model": TINY_BASE_MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "seed": seed,
        },
        named="seed",
    )


def registration(**fields: str) -> Bad:
    body = {"email": "new@example.com", "password": PASSWORD, "name": "N", "organization_name": "N"}
    return Bad(
        "POST",
        "/auth/register",
        422,
        json=body | fields,
        auth=anonymous,
        named=f"body.{next(iter(fields))}",
    )


def openapi_declares_the_error_bodies(response: httpx.Response) -> None:
    schema = response.json()
    assert "HTTPValidationError" not in str(schema)
    for path, body in (
        ("/agents", "ValidationErrorBody"),
        ("/v1/chat/completions", "OpenAIErrorBody"),
    ):
        declared = schema["paths"][path]["post"]["responses"]["422"]
        assert declared["content"]["application/json"]["schema"]["$ref"].endswith(f"/{body}")


# Scenarios.


def concurrent_registrations_make_one_account(ctx: Ctx) -> None:
    live_server: str = ctx.request.getfixturevalue("live_server")
    body = {
        "email": "race@example.com",
        "password": PASSWORD,
        "name": "R",
        "organization_name": "R",
    }
    barrier = threading.Barrier(4)

    def register_once(_: int) -> int:
        barrier.wait()
        return httpx.post(f"{live_server}/auth/register", json=body, timeout=30).status_code

    with ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(register_once, range(4))) == [201, 409, 409, 409]


def register_email(ctx: Ctx, email: str) -> httpx.Response:
    body = {"email": email, "password": PASSWORD, "name": "E", "organization_name": "E"}
    return ctx.client.post("/auth/register", json=body)


def emails_differing_in_case_are_one_account(ctx: Ctx) -> None:
    assert register_email(ctx, "Émile@example.com").status_code == 201
    twin = register_email(ctx, "émile@example.com")
    assert twin.status_code == 409, twin.text
    assert_error_shape("/auth/register", twin)


def a_non_ascii_email_can_sign_in_however_cased(ctx: Ctx) -> None:
    assert register_email(ctx, "Ölaf@example.com").status_code == 201
    for typed in ("Ölaf@example.com", "ölaf@example.com", "ÖLAF@EXAMPLE.COM"):
        signed_in = ctx.client.post("/auth/login", json={"email": typed, "password": PASSWORD})
        assert signed_in.status_code == 200, (typed, signed_in.text)


def repeated_failed_sign_ins_are_throttled(ctx: Ctx) -> None:
    wrong = {"email": ctx.account.email, "password": "not the password"}
    for _ in range(ctx.settings.login_free_failures_per_account):
        assert ctx.client.post("/auth/login", json=wrong).status_code == 401
    right = {"email": ctx.account.email, "password": ctx.account.password}
    refused = ctx.client.post("/auth/login", json=right)
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert_error_shape("/auth/login", refused)


def signing_out_revokes_the_token(ctx: Ctx) -> None:
    assert ctx.client.post("/auth/sign-out", headers=ctx.account.headers).status_code == 204
    stale = ctx.client.get("/auth/me", headers=ctx.account.headers)
    assert stale.status_code == 401, stale.text
    assert_error_shape("/auth/me", stale)


def an_organization_past_its_generations_waits(ctx: Ctx) -> None:
    slots = ctx.app.state.shared(InferenceRuntime).slots
    running = [slots.take(ctx.account.organization_id) for _ in range(slots.limit)]
    ask = {"model": TINY_BASE_MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    refused = ctx.client.post("/v1/chat/completions", json=ask, headers=ctx.account.headers)
    for release in running:
        release()
    assert refused.status_code == 429, refused.text
    assert refused.headers["Retry-After"] == "2"
    assert refused.json()["error"]["code"] == "rate_limited"


def models_add_explains_a_broken_config(ctx: Ctx) -> None:
    monkeypatch: pytest.MonkeyPatch = ctx.request.getfixturevalue("monkeypatch")
    broken = ctx.settings.data_dir.parent / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    monkeypatch.setenv("TUNEFORGE_DATA_DIR", str(ctx.settings.data_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(models_app, ["add", str(broken), "--name", "broken"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback
    assert "is not valid JSON" in " ".join(result.output.split())


def what_the_server_writes_is_private(ctx: Ctx) -> None:
    send(ctx, upload("private.jsonl"))
    made = list(ctx.settings.data_dir.rglob("*"))
    assert any(path.is_file() for path in made)
    modes = {path: stat.S_IMODE(path.stat().st_mode) for path in [ctx.settings.data_dir, *made]}
    assert modes == {path: 0o700 if path.is_dir() else 0o600 for path in modes}


class CountingStop(threading.Event):
    """Stops a worker loop after a few pauses, recording how long each would have been."""

    def __init__(self, pauses: int) -> None:
        super().__init__()
        self.pauses = pauses
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        if len(self.waits) == self.pauses:
            self.set()
        return self.is_set()


def a_worker_without_its_database_backs_off_and_stays(ctx: Ctx) -> None:
    gone = f"sqlite:///{ctx.settings.data_dir / 'no such directory' / 'tuneforge.db'}"
    engine = make_engine(gone)
    config = WorkerConfig(idle_sleep_seconds=0.01)
    worker = Worker(make_session_factory(engine), ctx.settings, "cut-off", config)
    stop = CountingStop(pauses=3)
    worker.run_forever(stop)  # returns only because it was stopped
    engine.dispose()
    assert stop.waits == [0.02, 0.04, 0.08]


def a_local_job_from_another_data_dir_fails_clearly(ctx: Ctx) -> None:
    job_id = new_id()
    with ctx.app.state.session_factory() as session:
        rows = Factories(session)
        dataset = rows.dataset(ctx.account.organization_id)
        # As a worker on another data dir leaves it when it dies mid-training.
        rows.job(
            ctx.account.organization_id,
            dataset=dataset,
            id=job_id,
            provider="local",
            status=JobStatus.RUNNING,
            provider_job_id=job_id,
            provider_file_ids={"training": "/elsewhere/train.jsonl", "validation": None},
            run_after=utcnow(),
        )
    elsewhere = ctx.settings.model_copy(update={"data_dir": ctx.settings.data_dir / "elsewhere"})
    assert Worker(ctx.app.state.session_factory, elsewhere, "elsewhere").run_once()
    job = ctx.client.get(f"/fine-tuning/jobs/{job_id}", headers=ctx.account.headers).json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == JOB_DIR_NOT_VISIBLE
    assert "is not visible from this worker" in job["error"]["message"]
    assert "TUNEFORGE_DATA_DIR" in job["error"]["message"]


def workers_with_different_data_dirs_are_told_at_start(ctx: Ctx) -> None:
    factory = ctx.app.state.session_factory
    elsewhere = ctx.settings.model_copy(update={"data_dir": ctx.settings.data_dir / "elsewhere"})
    with unit_of_work(factory) as session:
        assert check_shared_data_dir(session, ctx.settings) is None
        warning = check_shared_data_dir(session, elsewhere)
    if ctx.app.state.engine.dialect.name == "postgresql":
        assert warning is not None and "TUNEFORGE_DATA_DIR" in warning
    else:
        assert warning is None  # one SQLite file: one machine, nothing to share


NESTED = b"[" * 100_000 + b"]" * 100_000
CASES = [
    pytest.param(upload("数据.jsonl"), id="item-01-utf8-filename-han"),
    pytest.param(upload("Ω.jsonl"), id="item-01-utf8-filename-greek"),
    pytest.param(upload("😀.jsonl"), id="item-01-utf8-filename-emoji"),
    pytest.param(
        Bad("GET", f"/fine-tuning/jobs?offset={HUGE}", 422, named="query.offset"),
        id="item-02-list-offset-2-63",
    ),
    pytest.param(
        Bad("GET", f"/fine-tuning/jobs/{{job}}/events?after={HUGE}", 422, named="query.after"),
        id="item-02-events-after-2-63",
    ),
    pytest.param(
        Bad(
            "GET", f"/fine-tuning/jobs/{{job}}/metrics?min_step={HUGE}", 422, named="query.min_step"
        ),
        id="item-02-metrics-min-step-2-63",
    ),
    pytest.param(
        Bad("GET", "/fine-tuning/models/{model}/usage?from=9999-12-31", 422, named="query.from"),
        id="item-02-usage-from-9999",
    ),
    pytest.param(
        Bad(
            "POST",
            "/agents/{agent}/conversations",
            422,
            json={"messages": [{"role": "user", "content": "hi"}], "started_at": EARLY},
            named="body.started_at",
        ),
        id="item-02-conversation-year-1",
    ),
    pytest.param(
        Bad(
            "POST",
            "/fine-tuning/datasets/import",
            422,
            json={"agent_ids": ["{agent}"], "name": "x", "started_to": EARLY},
            named="body.started_to",
        ),
        id="item-02-import-year-1",
    ),
    pytest.param(chat_with_seed(2**64), id="item-02-v1-seed-2-64"),
    pytest.param(chat_with_seed(-1), id="item-02-v1-seed-negative"),
    pytest.param(
        Scenario(concurrent_registrations_make_one_account), id="item-03-registration-race"
    ),
    pytest.param(Bad("GET", "/auth/me", 401, auth=forged(exp=1e20)), id="item-04-jwt-exp-1e20"),
    pytest.param(
        Bad("GET", "/auth/me", 401, auth=forged(org={"id": "an object"})),
        id="item-04-jwt-org-object",
    ),
    pytest.param(Bad("POST", "/agents", 400, content=NESTED), id="item-05-nested-json"),
    pytest.param(
        Bad("POST", "/v1/chat/completions", 400, content=NESTED), id="item-05-nested-json-v1"
    ),
    pytest.param(Scenario(emails_differing_in_case_are_one_account), id="item-06-email-case-twin"),
    pytest.param(
        Scenario(a_non_ascii_email_can_sign_in_however_cased), id="item-06-email-case-sign-in"
    ),
    pytest.param(Scenario(repeated_failed_sign_ins_are_throttled), id="item-07-login-throttle"),
    pytest.param(
        Bad("POST", "/auth/api-keys", 403, json={"name": "spare"}, auth=api_key),
        id="item-08-api-key-makes-no-api-key",
    ),
    pytest.param(Scenario(signing_out_revokes_the_token), id="item-09-sign-out-revokes"),
    pytest.param(registration(password="aaaaaaaa"), id="item-10-password-one-letter"),
    pytest.param(registration(password=" " * 8), id="item-10-password-spaces"),
    pytest.param(registration(name=" "), id="item-10-blank-name"),
    pytest.param(
        Bad("POST", "/agents", 413, content=b'{"name": "' + b"x" * 4 * 1024**2 + b'"}'),
        id="item-11-body-over-cap",
    ),
    pytest.param(
        Bad(
            "POST",
            "/agents/{agent}/conversations",
            422,
            json={"messages": [{"role": "user", "content": "x" * 200_001}]},
            named="body.messages.0.content",
        ),
        id="item-11-message-over-char-cap",
    ),
    pytest.param(
        Scenario(an_organization_past_its_generations_waits, needs=("installed_tiny_model",)),
        id="item-12-inference-concurrency",
    ),
    pytest.param(local_job(num_processes=64), id="item-13-local-num-processes"),
    pytest.param(local_job(micro_batch_tokens=10**12), id="item-13-local-micro-batch-tokens"),
    pytest.param(local_job(lora_alpha=1e300), id="item-13-local-lora-alpha"),
    pytest.param(
        local_job(target_modules=[f"proj_{i}" for i in range(1000)]),
        id="item-13-local-target-modules",
    ),
    pytest.param(
        Bad("POST", "/agents", 422, json={"name": "Bot", "model": "does-not-exist"}, named="model"),
        id="item-14-agent-unknown-model",
    ),
    pytest.param(
        Bad(
            "POST",
            "/agents",
            422,
            json={"name": "B\x00t", "model": TINY_BASE_MODEL},
            named="body.name",
        ),
        id="item-14-agent-nul-name",
    ),
    pytest.param(
        Bad("GET", "/fine-tuning/datasets?limit=101", 422, named="query.limit"),
        id="item-15-dataset-limit-101",
    ),
    pytest.param(
        Scenario(models_add_explains_a_broken_config), id="item-16-models-add-broken-config"
    ),
    pytest.param(Scenario(what_the_server_writes_is_private), id="item-17-files-0600"),
    pytest.param(
        Bad("GET", "/fine-tuning/datasets?limit=101", 422, headers=SECURITY_HEADERS),
        id="item-18-security-headers-on-errors",
    ),
    pytest.param(
        Bad("GET", "/favicon.ico", 200, auth=anonymous, headers={"content-type": "image/x-icon"}),
        id="item-19-favicon",
    ),
    pytest.param(
        Bad(
            "GET", "/api/openapi.json", 200, auth=anonymous, check=openapi_declares_the_error_bodies
        ),
        id="item-20-openapi-error-bodies",
    ),
    pytest.param(
        Scenario(a_worker_without_its_database_backs_off_and_stays), id="item-21-worker-db-down"
    ),
    pytest.param(
        Scenario(workers_with_different_data_dirs_are_told_at_start), id="item-22-data-dir-check"
    ),
    pytest.param(
        Scenario(a_local_job_from_another_data_dir_fails_clearly), id="item-22-job-dir-elsewhere"
    ),
]


@pytest.fixture
def ctx(
    app: FastAPI,
    client: TestClient,
    account: Account,
    settings: Settings,
    ids: Ids,
    request: pytest.FixtureRequest,
) -> Ctx:
    return Ctx(app, client, account, settings, ids, request)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_a_clear_answer(ctx: Ctx, case: Bad | Scenario) -> None:
    for fixture in case.needs:
        ctx.request.getfixturevalue(fixture)
    if isinstance(case, Scenario):
        case.run(ctx)
    else:
        send(ctx, case)


def test_every_item_of_the_issue_has_a_row() -> None:
    items = {param.id.split("-")[1] for param in CASES}
    assert items == {f"{n:02d}" for n in range(1, 23)}
