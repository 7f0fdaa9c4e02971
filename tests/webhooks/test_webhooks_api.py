"""Webhook endpoints through the ``openai`` SDK's ``client.webhooks`` and the native API."""

from __future__ import annotations

import base64
import socket

import openai
import pytest
from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tests.webhooks.conftest import Receiver
from tuneforge.app import create_app
from tuneforge.config import Settings
from tuneforge.webhooks.outbox import EVENT_TYPES

JOB_EVENTS = ["fine_tuning.job.succeeded", "fine_tuning.job.failed"]


def test_create_shows_the_secret_once_and_retrieve_only_a_hint(sdk: openai.OpenAI) -> None:
    created = sdk.webhooks.create(
        name="CI", url="https://hooks.example.com/tf", event_types=["fine_tuning.job.succeeded"]
    )

    assert created.object == "webhook_endpoint"
    assert created.id.startswith("we_")
    assert created.signing_secret.startswith("whsec_")
    assert len(base64.b64decode(created.signing_secret.removeprefix("whsec_"))) == 32
    assert created.signing_secret_hint == f"whsec_…{created.signing_secret[-4:]}"
    fetched = sdk.webhooks.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump(exclude={"signing_secret"})
    raw = sdk.webhooks.with_raw_response.retrieve(created.id).http_response.json()
    assert "signing_secret" not in raw
    assert created.signing_secret not in str(raw)


def test_update_changes_only_what_is_given(sdk: openai.OpenAI) -> None:
    created = sdk.webhooks.create(name="Old", url="https://a.example.com/", event_types=JOB_EVENTS)

    unchanged = sdk.webhooks.update(created.id, name="Old")
    assert unchanged.updated_at == created.updated_at
    updated = sdk.webhooks.update(
        created.id, name="New", url="http://b.example.com/x", event_types=["eval.run.canceled"]
    )

    assert (updated.name, updated.url, updated.event_types) == (
        "New",
        "http://b.example.com/x",
        ["eval.run.canceled"],
    )
    assert updated.created_at == created.created_at
    assert updated.updated_at is not None and updated.updated_at >= created.created_at
    assert sdk.webhooks.retrieve(created.id).name == "New"


def test_list_pages_newest_first_with_a_cursor(sdk: openai.OpenAI) -> None:
    ids = [
        sdk.webhooks.create(name=f"n{i}", url="https://a.example.com/", event_types=JOB_EVENTS).id
        for i in range(3)
    ]

    first = sdk.webhooks.list(limit=2)
    assert [e.id for e in first.data] == ids[::-1][:2]
    assert first.has_more
    second = sdk.webhooks.list(limit=2, after=first.data[-1].id)
    assert [e.id for e in second.data] == [ids[0]]
    assert not second.has_more
    assert [e.id for e in sdk.webhooks.list(limit=2)] == ids[::-1]  # the SDK follows pages


def test_delete_then_it_is_gone(sdk: openai.OpenAI) -> None:
    created = sdk.webhooks.create(name="x", url="https://a.example.com/", event_types=JOB_EVENTS)

    deleted = sdk.webhooks.delete(created.id)

    assert (deleted.id, deleted.deleted, deleted.object) == (
        created.id,
        True,
        "webhook_endpoint.deleted",
    )
    with pytest.raises(openai.NotFoundError):
        sdk.webhooks.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.webhooks.delete(created.id)


def test_rotate_returns_a_new_secret(sdk: openai.OpenAI) -> None:
    created = sdk.webhooks.create(name="x", url="https://a.example.com/", event_types=JOB_EVENTS)

    rotated = sdk.webhooks.rotate_secret(created.id)
    kept = sdk.webhooks.rotate_secret(created.id, keep_old_secret_active_for_24_hours=True)

    secrets = {created.signing_secret, rotated.signing_secret, kept.signing_secret}
    assert len(secrets) == 3
    assert sdk.webhooks.retrieve(created.id).signing_secret_hint == kept.signing_secret_hint


def test_the_test_event_reports_the_receivers_status(
    sdk: openai.OpenAI, receiver: Receiver
) -> None:
    created = sdk.webhooks.create(name="x", url=receiver.url, event_types=JOB_EVENTS)
    receiver.statuses = [204, 500]

    ok = sdk.webhooks.test(created.id, event_type="eval.run.succeeded")
    failing = sdk.webhooks.test(created.id, event_type="fine_tuning.job.failed")

    assert (ok.object, ok.webhook_endpoint_id, ok.event_type) == (
        "webhook_endpoint.test",
        created.id,
        "eval.run.succeeded",
    )
    assert (ok.status_code, ok.success, failing.status_code) == (204, True, 500)
    first, _ = receiver.wait_for(2)
    event = sdk.webhooks.unwrap(first.body, first.headers, secret=created.signing_secret)
    assert event.type == "eval.run.succeeded"
    assert event.id == first.headers["webhook-id"]


def test_a_test_to_an_unreachable_receiver_is_a_400_naming_url(sdk: openai.OpenAI) -> None:
    with socket.socket() as probe:  # a port nobody listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks"
    created = sdk.webhooks.create(name="x", url=url, event_types=JOB_EVENTS)

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.webhooks.test(created.id, event_type="fine_tuning.job.succeeded")

    assert caught.value.param == "url"
    assert "not delivered" in caught.value.message


def test_event_types_are_listed(sdk: openai.OpenAI) -> None:
    assert sdk.webhooks.event_types.list().data == list(EVENT_TYPES)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"event_types": ["batch.completed"]}, "event_types.0"),
        ({"event_types": []}, "event_types"),
        ({"url": "ftp://a.example.com/"}, "url"),
        ({"url": "https://a.example.com:99999/"}, "url"),
        ({"url": "https://exa mple.com/"}, "url"),
        ({"url": "https://a.example.com/" + "x" * 2048}, "url"),
        ({"name": "x" * 201}, "name"),
        ({"name": "   "}, "name"),
    ],
)
def test_bad_fields_are_4xx_naming_them(
    sdk: openai.OpenAI, fields: dict[str, object], param: str
) -> None:
    body = {"name": "x", "url": "https://a.example.com/", "event_types": JOB_EVENTS} | fields

    with pytest.raises(openai.UnprocessableEntityError) as caught:
        sdk.webhooks.create(**body)  # type: ignore[arg-type]

    assert caught.value.param == param


def test_private_destinations_are_refused_unless_allowed(
    settings: Settings, account: Account, receiver: Receiver
) -> None:
    """With the operator's setting off (the default), loopback, private and link-local URLs
    are a 422 naming ``url``, on create and on update."""
    strict = settings.model_copy(update={"webhook_allow_private_destinations": False})
    with TestClient(create_app(strict)) as client:
        assert_private_destinations_refused(client, account.headers, receiver.url)


def assert_private_destinations_refused(
    client: TestClient, headers: dict[str, str], receiver_url: str
) -> None:
    body = {"name": "x", "event_types": JOB_EVENTS}
    for url in (
        receiver_url,
        "http://localhost:8080/",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
    ):
        response = client.post("/v1/webhook_endpoints", json=body | {"url": url}, headers=headers)
        assert response.status_code == 422, url
        assert response.json()["error"]["param"] == "url"
    public = client.post(
        "/v1/webhook_endpoints", json=body | {"url": "http://93.184.215.14/"}, headers=headers
    )
    assert public.status_code == 200, public.text
    moved = client.post(
        f"/v1/webhook_endpoints/{public.json()['id']}", json={"url": receiver_url}, headers=headers
    )
    assert moved.status_code == 422
    assert "loopback" in moved.json()["error"]["message"]


def test_the_native_api_and_organization_scoping(
    client: TestClient, account: Account, other_account: Account
) -> None:
    body = {"name": "Mine", "url": "https://a.example.com/", "event_types": JOB_EVENTS}

    created = client.post("/webhooks", json=body, headers=account.headers)

    assert created.status_code == 201, created.text
    endpoint_id = created.json()["id"]
    assert created.json()["signing_secret"].startswith("whsec_")
    page = client.get("/webhooks", headers=account.headers).json()
    assert (page["total"], [e["id"] for e in page["items"]]) == (1, [endpoint_id])
    assert "signing_secret" not in page["items"][0]
    patched = client.patch(
        f"/webhooks/{endpoint_id}", json={"name": "Renamed"}, headers=account.headers
    )
    assert patched.json()["name"] == "Renamed"
    rotated = client.post(f"/webhooks/{endpoint_id}/rotate-secret", headers=account.headers)
    assert rotated.json()["signing_secret"] != created.json()["signing_secret"]
    log = client.get(f"/webhooks/{endpoint_id}/deliveries", headers=account.headers).json()
    assert (log["data"], log["has_more"]) == ([], False)

    foreign = other_account.headers
    assert client.get("/webhooks", headers=foreign).json()["total"] == 0
    for method, path in (
        ("GET", f"/webhooks/{endpoint_id}"),
        ("PATCH", f"/webhooks/{endpoint_id}"),
        ("DELETE", f"/webhooks/{endpoint_id}"),
        ("POST", f"/webhooks/{endpoint_id}/rotate-secret"),
        ("GET", f"/webhooks/{endpoint_id}/deliveries"),
        ("GET", f"/v1/webhook_endpoints/{endpoint_id}"),
        ("POST", f"/v1/webhook_endpoints/{endpoint_id}/rotate_secret"),
    ):
        response = client.request(method, path, json={}, headers=foreign)
        assert response.status_code == 404, (method, path, response.text)
    tested = client.post(
        f"/webhooks/{endpoint_id}/test", json={"event_type": JOB_EVENTS[0]}, headers=foreign
    )
    assert tested.status_code == 404
    after = client.get("/v1/webhook_endpoints", params={"after": endpoint_id}, headers=foreign)
    assert after.status_code == 422
    assert after.json()["error"]["param"] == "after"

    deleted = client.delete(f"/webhooks/{endpoint_id}", headers=account.headers)
    assert deleted.json() == {
        "id": endpoint_id,
        "object": "webhook_endpoint.deleted",
        "deleted": True,
    }
    assert client.get(f"/webhooks/{endpoint_id}", headers=account.headers).status_code == 404
