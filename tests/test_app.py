from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.fixtures.files import valid_jsonl
from tuneforge.app import ABANDONED_UPLOAD_SECONDS, create_app
from tuneforge.config import Settings
from tuneforge.datasets.storage import TEMP_PREFIX
from tuneforge.db.migrate import upgrade_to_head
from tuneforge.errors import ServiceUnavailable


def test_health_reports_the_database(client: TestClient) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_openapi_documents_every_endpoint(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()

    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), f"{method.upper()} {path} has no summary"
            assert "200" in operation["responses"] or any(
                code.startswith("2") for code in operation["responses"]
            ), f"{method.upper()} {path} documents no success response"
    assert client.get("/api/docs").status_code == 200


def test_no_route_is_hidden_behind_an_earlier_one(tmp_path: Path) -> None:
    """Routers are included in order of traffic, not of path: safe while no path template
    of an earlier route takes the paths of a later one with the same method."""
    paths = create_app(Settings(data_dir=tmp_path)).openapi()["paths"]
    routes = [(path, method) for path, operations in paths.items() for method in operations]
    patterns = {path: re.compile(re.sub(r"{[^}]+}", "[^/]+", path) + "$") for path in paths}
    for path, method in routes:
        sample = re.sub(r"{[^}]+}", "sample", path)
        first = next(p for p, m in routes if m == method and patterns[p].match(sample))
        assert first == path, f"{method.upper()} {path} is taken by {first}"


def test_app_refuses_to_start_on_an_unmigrated_database(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'empty.db'}")

    with (
        pytest.raises(ServiceUnavailable, match="tuneforge migrate"),
        TestClient(create_app(settings)),
    ):
        pass


def test_signing_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).signing_key()
    second = Settings(data_dir=tmp_path).signing_key()

    assert first == second
    assert len(first) >= 32
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o777 == 0o600


def test_startup_deletes_uploads_a_dead_server_left_half_received(
    app: FastAPI, settings: Settings
) -> None:
    uploads = settings.uploads_dir
    uploads.mkdir(parents=True, exist_ok=True)
    abandoned, receiving = uploads / f"{TEMP_PREFIX}old", uploads / f"{TEMP_PREFIX}new"
    stored = uploads / "dataset.jsonl"
    for path in (abandoned, receiving, stored):
        path.write_bytes(b"{}\n")
    long_ago = time.time() - ABANDONED_UPLOAD_SECONDS - 60
    for path in (abandoned, stored):
        os.utime(path, (long_ago, long_ago))

    with TestClient(app):
        pass

    assert not abandoned.exists()
    assert receiving.exists() and stored.exists()


def test_every_response_carries_security_headers_and_the_dashboard_a_policy(
    client: TestClient,
) -> None:
    api = client.get("/health")
    page = client.get("/dashboard/sign-in")
    for response in (api, page):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "same-origin"
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "Content-Security-Policy" not in api.headers


def test_the_favicon_is_an_icon(client: TestClient) -> None:
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/x-icon"
    assert response.content[:4] == b"\x00\x00\x01\x00"


def test_the_data_dir_and_everything_in_it_are_private_to_the_user(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", embedded_worker=False)
    settings.ensure_data_dir()
    upgrade_to_head(settings.resolved_database_url)  # what `tuneforge migrate` does
    with TestClient(create_app(settings)) as client:
        token = client.post(
            "/auth/register",
            json={
                "email": "private@example.com",
                "password": "correct horse battery",
                "name": "P",
                "organization_name": "P",
            },
        ).json()["access_token"]
        uploaded = client.post(
            "/fine-tuning/datasets",
            headers={"Authorization": f"Bearer {token}"},
            files={"file": ("a.jsonl", valid_jsonl(3))},
            data={"name": "a"},
        )
        assert uploaded.status_code == 201, uploaded.text
    data = settings.data_dir
    files = [data / "tuneforge.db", data / "jwt_secret", *settings.uploads_dir.iterdir()]
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE(settings.uploads_dir.stat().st_mode) == 0o700
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in files} == {
        path.name: 0o600 for path in files
    }


def test_the_openapi_document_declares_the_error_shapes_the_api_returns(
    client: TestClient,
) -> None:
    schema = client.get("/api/openapi.json").json()
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components
    assert set(components["ValidationErrorBody"]["properties"]) >= {"error", "detail", "fields"}
    agents = schema["paths"]["/agents"]["post"]["responses"]["422"]
    assert agents["content"]["application/json"]["schema"]["$ref"].endswith("/ValidationErrorBody")
    v1 = schema["paths"]["/v1/chat/completions"]["post"]["responses"]["422"]
    assert v1["content"]["application/json"]["schema"]["$ref"].endswith("/OpenAIErrorBody")
    refs = str(schema)
    assert "HTTPValidationError" not in refs
