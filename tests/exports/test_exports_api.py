"""The exports API on both databases: queue, a worker writes, download with its SHA-256,
delete; and every refusal a clear 4xx naming what to fix."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.exports.conftest import RunExport, download, exports_url, unpack
from tests.fixtures.api import Account
from tests.fixtures.factories import Factories
from tuneforge.config import Settings
from tuneforge.db.tables.exports import ExportStatus, ModelExport
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.exports.execution import MAX_ATTEMPTS
from tuneforge.worker.loop import Worker

pytestmark = pytest.mark.usefixtures("installed_tiny_model")


def test_an_adapter_export_is_written_by_a_worker_and_downloads_with_its_sha256(
    client: TestClient,
    account: Account,
    fine_tuned: FineTunedModel,
    run_export: RunExport,
    settings: Settings,
    tiny_adapter_dir: Path,
    tmp_path: Path,
) -> None:
    export = run_export(fine_tuned.id, format="adapter")

    assert export["status"] == "succeeded"
    assert (export["progress"], export["stage"], export["error"]) == (1.0, "done", None)
    assert export["file_name"] == "ft-tiny-support-adapter.tar"
    archive = download(client, account, export)
    assert hashlib.sha256(archive).hexdigest() == export["sha256"]
    assert len(archive) == export["size_bytes"]
    folder = unpack(archive, tmp_path / "out")
    assert folder.name == "ft-tiny-support"
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (folder / name).read_bytes() == (tiny_adapter_dir / name).read_bytes()
    listed = client.get(exports_url(fine_tuned.id), headers=account.headers).json()
    assert [item["id"] for item in listed["items"]] == [export["id"]]
    assert listed["total"] == 1


def test_the_download_names_the_file_and_carries_its_digest_twice(
    client: TestClient, account: Account, fine_tuned: FineTunedModel, run_export: RunExport
) -> None:
    export = run_export(fine_tuned.id, format="adapter")

    response = client.get(export["download_url"], headers=account.headers)

    digest = base64.b64encode(bytes.fromhex(export["sha256"])).decode()
    assert response.headers["Repr-Digest"] == f"sha-256=:{digest}:"
    assert response.headers["Content-Length"] == str(export["size_bytes"])
    assert export["file_name"] in response.headers["Content-Disposition"]


def test_a_deleted_export_takes_its_file_with_it(
    client: TestClient,
    account: Account,
    fine_tuned: FineTunedModel,
    run_export: RunExport,
    settings: Settings,
) -> None:
    export = run_export(fine_tuned.id, format="adapter")
    folder = settings.data_dir / "exports" / export["id"]
    assert (folder / export["file_name"]).is_file()

    deleted = client.delete(exports_url(fine_tuned.id, export["id"]), headers=account.headers)

    assert deleted.json() == {"id": export["id"], "deleted": True}
    assert not folder.exists()
    gone = client.get(exports_url(fine_tuned.id, export["id"]), headers=account.headers)
    assert gone.status_code == 404


def test_a_queued_export_is_not_downloadable_and_a_running_one_not_deletable(
    client: TestClient, account: Account, fine_tuned: FineTunedModel, db_session: Session
) -> None:
    created = client.post(
        exports_url(fine_tuned.id), json={"format": "merged"}, headers=account.headers
    ).json()
    assert (created["status"], created["download_url"]) == ("queued", None)

    early = client.get(
        exports_url(fine_tuned.id, created["id"], "download"), headers=account.headers
    )
    assert early.status_code == 409
    assert early.json()["status"] == "queued"

    db_session.get(ModelExport, created["id"]).status = ExportStatus.RUNNING  # type: ignore[union-attr]
    db_session.commit()
    busy = client.delete(exports_url(fine_tuned.id, created["id"]), headers=account.headers)
    assert busy.status_code == 409
    assert "being written" in busy.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "field", "detail"),
    [
        ({"format": "zip"}, 422, "body.format", "adapter"),
        ({"format": "adapter", "quantization": "q8_0"}, 422, "quantization", "gguf and ollama"),
        ({"format": "gguf", "quantization": "q4_0"}, 422, "body.quantization", "f16"),
        ({"format": "gguf", "agent_id": "a" * 33}, 422, "body.agent_id", "at most 32"),
        ({"format": "gguf", "agent_id": "x"}, 422, "agent_id", "only the ollama format"),
        ({"format": "ollama", "agent_id": "x"}, 404, "agent_id", "Agent x not found"),
        ({"format": "adapter", "extra": 1}, 422, "body.extra", "Extra inputs"),
    ],
)
def test_a_bad_request_is_a_4xx_naming_the_field(
    client: TestClient,
    account: Account,
    fine_tuned: FineTunedModel,
    body: dict[str, object],
    status: int,
    field: str,
    detail: str,
) -> None:
    response = client.post(exports_url(fine_tuned.id), json=body, headers=account.headers)

    assert response.status_code == status, response.text
    error = response.json()
    named = error.get("field") or [f["field"] for f in error.get("fields", [])]
    assert field == named or field in named
    assert detail in json.dumps(error)


def test_the_agent_must_be_the_organizations_and_serve_the_model(
    client: TestClient,
    account: Account,
    other_account: Account,
    fine_tuned: FineTunedModel,
    factories: Factories,
) -> None:
    idle = factories.agent(account.organization_id, system_prompt="Be brief.")
    foreign = factories.agent(other_account.organization_id, fine_tuned_model_id=None)
    quoting = factories.agent(
        account.organization_id, system_prompt='Say """hi"""', fine_tuned_model_id=fine_tuned.id
    )

    def post(agent_id: str) -> tuple[int, dict[str, object]]:
        body = {"format": "ollama", "agent_id": agent_id}
        response = client.post(exports_url(fine_tuned.id), json=body, headers=account.headers)
        return response.status_code, response.json()

    assert post(idle.id) == (
        422,
        {
            "error": "invalid_input",
            "detail": f"agent_id: agent {idle.id} is not deployed with model {fine_tuned.id}",
            "field": "agent_id",
        },
    )
    assert post(foreign.id)[0] == 404
    status, error = post(quoting.id)
    assert (status, error["field"]) == (422, "agent_id")
    assert '"""' in str(error["detail"])


def test_another_organizations_model_and_export_are_404(
    client: TestClient,
    account: Account,
    other_account: Account,
    fine_tuned: FineTunedModel,
    run_export: RunExport,
) -> None:
    export = run_export(fine_tuned.id, format="adapter")

    for response in (
        client.post(
            exports_url(fine_tuned.id), json={"format": "adapter"}, headers=other_account.headers
        ),
        client.get(exports_url(fine_tuned.id), headers=other_account.headers),
        client.get(exports_url(fine_tuned.id, export["id"]), headers=other_account.headers),
        client.get(export["download_url"], headers=other_account.headers),
        client.delete(exports_url(fine_tuned.id, export["id"]), headers=other_account.headers),
    ):
        assert response.status_code == 404, response.text


def test_an_unmapped_architecture_is_refused_before_any_work(
    client: TestClient, account: Account, fine_tuned: FineTunedModel, installed_tiny_model: Path
) -> None:
    config_file = installed_tiny_model / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps(config | {"model_type": "qwen2"}))

    response = client.post(
        exports_url(fine_tuned.id), json={"format": "gguf"}, headers=account.headers
    )

    assert response.status_code == 422
    assert response.json()["field"] == "format"
    assert "architecture is 'qwen2'" in response.json()["detail"]
    merged = client.post(
        exports_url(fine_tuned.id), json={"format": "merged"}, headers=account.headers
    )
    assert merged.status_code == 201


def test_a_hosted_model_cannot_be_exported(
    client: TestClient, account: Account, factories: Factories
) -> None:
    job = factories.succeeded_job(account.organization_id, provider="openai")
    hosted = factories.model(account.organization_id, job=job)

    response = client.post(
        exports_url(hosted.id), json={"format": "adapter"}, headers=account.headers
    )

    assert response.status_code == 409
    assert "hosted by openai" in response.json()["detail"]


def test_a_failing_export_fails_with_its_reason(
    client: TestClient,
    account: Account,
    fine_tuned: FineTunedModel,
    tiny_adapter_dir: Path,
    run_export: RunExport,
    exporter: Worker,
) -> None:
    created = client.post(
        exports_url(fine_tuned.id), json={"format": "adapter"}, headers=account.headers
    ).json()
    (tiny_adapter_dir / "adapter_config.json").unlink()

    assert exporter.run_one_export()

    failed = client.get(exports_url(fine_tuned.id, created["id"]), headers=account.headers).json()
    assert failed["status"] == "failed"
    assert failed["error"] == f"The adapter files of model {fine_tuned.id} are gone"
    assert not exporter.run_one_export()


def test_an_export_whose_workers_keep_dying_fails_after_a_few_attempts(
    client: TestClient,
    account: Account,
    fine_tuned: FineTunedModel,
    exporter: Worker,
    db_session: Session,
) -> None:
    created = client.post(
        exports_url(fine_tuned.id), json={"format": "adapter"}, headers=account.headers
    ).json()
    row = db_session.get(ModelExport, created["id"])
    assert row is not None
    row.attempts = MAX_ATTEMPTS
    db_session.commit()

    assert exporter.run_one_export()

    failed = client.get(exports_url(fine_tuned.id, created["id"]), headers=account.headers).json()
    assert failed["status"] == "failed"
    assert f"after {MAX_ATTEMPTS} attempts" in failed["error"]
