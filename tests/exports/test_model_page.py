"""The model page's Export card: queue an export, watch it, download it, delete it."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tests.web.conftest import sign_in
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.worker.loop import Worker

pytestmark = pytest.mark.usefixtures("installed_tiny_model")


def test_an_export_is_queued_watched_downloaded_and_deleted_from_the_model_page(
    client: TestClient, account: Account, fine_tuned: FineTunedModel, exporter: Worker
) -> None:
    web = sign_in(client, account)
    page = f"/dashboard/fine-tuning/models/{fine_tuned.id}"
    assert 'id="model-exports"' in web.get(page).text

    queued = web.htmx(f"{page}/exports", {"format": "adapter", "quantization": ""})
    assert queued.headers["HX-Redirect"] == page
    polled = web.get(f"{page}/exports").text
    assert 'hx-trigger="every 2s"' in polled and "queued" in polled

    assert exporter.run_one_export()

    done = web.get(f"{page}/exports").text
    assert "every 2s" not in done
    [export] = client.get(
        f"/fine-tuning/models/{fine_tuned.id}/exports", headers=account.headers
    ).json()["items"]
    assert f'href="{export["download_url"]}"' in done
    assert export["sha256"][:12] in done
    download = web.get(export["download_url"])
    assert hashlib.sha256(download.content).hexdigest() == export["sha256"]

    deleted = web.htmx(f"{page}/exports/{export['id']}/delete")
    assert deleted.headers["HX-Redirect"] == page
    assert "ft-tiny-support-adapter.tar" not in web.get(page).text


def test_a_refused_export_shows_its_reason_beside_the_form(
    client: TestClient, account: Account, fine_tuned: FineTunedModel
) -> None:
    web = sign_in(client, account)

    refused = web.htmx(
        f"/dashboard/fine-tuning/models/{fine_tuned.id}/exports",
        {"format": "merged", "quantization": "q8_0"},
    )

    assert refused.status_code == 422
    assert "only the gguf and ollama formats take a quantization" in refused.text
