"""Exports under test: queue through the API, let a worker write the file, read it back."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tuneforge.config import Settings
from tuneforge.worker.loop import Worker

RunExport = Callable[..., dict[str, Any]]


def exports_url(model_id: str, *rest: str) -> str:
    return "/".join([f"/fine-tuning/models/{model_id}/exports", *rest])


@pytest.fixture
def exporter(app: FastAPI, settings: Settings) -> Worker:
    return Worker(app.state.session_factory, settings)


@pytest.fixture
def run_export(client: TestClient, account: Account, exporter: Worker) -> RunExport:
    """Queue an export of a model, have the worker write it, return the finished export."""

    def run(model_id: str, **body: Any) -> dict[str, Any]:
        created = client.post(exports_url(model_id), json=body, headers=account.headers)
        assert created.status_code == 201, created.text
        assert exporter.run_one_export()
        found = client.get(exports_url(model_id, created.json()["id"]), headers=account.headers)
        assert found.status_code == 200, found.text
        return found.json()

    return run


def download(client: TestClient, account: Account, export: dict[str, Any]) -> bytes:
    response = client.get(export["download_url"], headers=account.headers)
    assert response.status_code == 200, response.text
    assert response.headers["X-Content-SHA256"] == export["sha256"]
    return response.content


def unpack(archive: bytes, into: Path) -> Path:
    """Extract a downloaded archive; its one top-level folder."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tops = {member.name.split("/")[0] for member in tar.getmembers()}
        assert len(tops) == 1, tops
        tar.extractall(into, filter="data")
    return into / tops.pop()
