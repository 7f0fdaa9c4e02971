from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tuneforge.app import create_app
from tuneforge.config import Settings
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
