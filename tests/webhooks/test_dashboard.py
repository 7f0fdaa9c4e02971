"""The webhook settings page: list, create (the secret shown once), rotate, test, the
delivery log, delete; under the dashboard's policy, with no inline script."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tests.web.conftest import sign_in
from tests.webhooks.conftest import Receiver

PAGE = "/dashboard/settings/webhooks"
SECRET = re.compile(r'<pre class="raw" id="signing-secret">(whsec_[A-Za-z0-9+/=]+)</pre>')


def test_the_webhooks_page_end_to_end(
    client: TestClient, account: Account, other_account: Account, receiver: Receiver
) -> None:
    web = sign_in(client, account)

    empty = web.get(PAGE)
    assert empty.status_code == 200
    assert "No webhook endpoints yet" in empty.text
    assert "script-src 'self'" in empty.headers["content-security-policy"]
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", empty.text) is None

    refused = web.post(PAGE, {"name": "Bad", "url": "ftp://x", "event_types": []})
    assert refused.status_code == 422
    assert 'id="url-error"' in refused.text and 'id="event_types-error"' in refused.text

    created = web.post(
        PAGE,
        {"name": "CI hook", "url": receiver.url, "event_types": ["fine_tuning.job.succeeded"]},
    )
    assert created.status_code == 201, created.text
    match = SECRET.search(created.text)
    assert match is not None
    secret = match[1]
    link = re.search(rf'href="{PAGE}/(we_[0-9a-f]+)"', created.text)
    assert link is not None
    endpoint_id = link[1]
    listed = web.get(PAGE)
    assert "CI hook" in listed.text and secret not in listed.text

    detail = web.get(f"{PAGE}/{endpoint_id}")
    assert detail.status_code == 200
    assert secret not in detail.text and f"whsec_…{secret[-4:]}" in detail.text
    assert "Nothing sent yet" in detail.text

    tested = web.htmx(f"{PAGE}/{endpoint_id}/test", {"event_type": "eval.run.failed"})
    assert tested.status_code == 200
    assert "answered <strong>200</strong>" in tested.text
    assert receiver.wait_for(1)[0].headers["webhook-id"].startswith("evt_")
    log = web.get(f"{PAGE}/{endpoint_id}").text
    assert "eval.run.failed</code> (test)" in log
    assert "tone-ok" in log

    rotated = web.htmx(f"{PAGE}/{endpoint_id}/rotate", {"keep_old": "1"})
    new_secret = SECRET.search(rotated.text)
    assert new_secret is not None and new_secret[1] != secret
    assert "previous secret stays valid" in rotated.text

    foreign = sign_in(TestClient(client.app), other_account)
    assert foreign.get(f"{PAGE}/{endpoint_id}").status_code == 404
    assert foreign.post(f"{PAGE}/{endpoint_id}/delete").status_code == 404

    deleted = web.htmx(f"{PAGE}/{endpoint_id}/delete")
    assert deleted.headers["HX-Redirect"] == PAGE
    assert web.get(f"{PAGE}/{endpoint_id}").status_code == 404
