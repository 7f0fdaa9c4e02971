"""The whole dashboard journey in Chromium, as a person would click through it.

Register, create an agent, upload a dataset with a bad line and read its error, upload a
good one and validate it, walk the job wizard, watch the loss chart fill live, deploy the
resulting model and see its usage. Each page is saved as a screenshot on the way.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.fixtures.browser import LiveApp, check_page, wait_for_expression
from tests.fixtures.files import chat, jsonl
from tests.fixtures.tiny_model import TINY_BASE_MODEL
from tuneforge.store.base_models import MARKER_FILE

pytestmark = pytest.mark.slow  # a real browser

BASE_MODEL = TINY_BASE_MODEL
LOSS_POINTS = "Chart.getChart('loss-chart').data.datasets.reduce((n, d) => n + d.data.length, 0)"


def _good_examples(count: int) -> bytes:
    return jsonl(
        *(chat(f"How do I reset password {i}?", f"Open settings, step {i}.") for i in range(count))
    )


def _register(page: Page, url: str, email: str, organization: str) -> None:
    page.goto(f"{url}/dashboard/fine-tuning")
    expect(page).to_have_url(re.compile(r"/dashboard/sign-in\?next=/dashboard/fine-tuning$"))
    page.get_by_role("link", name="Create one").click()
    page.get_by_label("Your name").fill("Ada Lovelace")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_label("Organization").fill(organization)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(f"{url}/dashboard/fine-tuning")


def _upload(page: Page, url: str, path: Path, name: str) -> None:
    page.goto(f"{url}/dashboard/fine-tuning/datasets/new")
    page.get_by_label("Dataset file (.jsonl or .csv)").set_input_files(str(path))
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Validate for base model").first.select_option(BASE_MODEL)
    page.get_by_role("button", name="Upload and validate").click()
    expect(page).to_have_url(re.compile(r"/dashboard/fine-tuning/datasets/[0-9a-f]{32}$"))


@pytest.fixture
def local_base_model(live_app: LiveApp, tiny_chat_models: Path) -> Path:
    """The tiny test model installed as the built-in local base model, so the journey
    trains and serves for real on this machine in seconds."""
    target = live_app.settings.model_store_dir / TINY_BASE_MODEL
    shutil.copytree(tiny_chat_models / "base", target)
    (target / MARKER_FILE).write_text(json.dumps({"name": TINY_BASE_MODEL, "source": "test"}))
    return target


@pytest.mark.usefixtures("local_base_model")
def test_full_journey(page: Page, live_app: LiveApp, tmp_path: Path) -> None:
    url = live_app.url
    _register(page, url, "ada@example.com", "Analytical Engines")
    expect(page.get_by_text("No jobs yet.")).to_be_visible()
    check_page(page, "01-overview-empty")

    page.goto(f"{url}/dashboard/agents")
    page.get_by_label("Name").fill("Support bot")
    page.get_by_label("System prompt").fill("You answer questions about our product.")
    page.get_by_role("button", name="Create agent").click()
    expect(page.get_by_role("heading", name="Support bot")).to_be_visible()
    check_page(page, "15-agent")

    bad = tmp_path / "support-bad.jsonl"
    bad.write_bytes(jsonl(chat("Hi", "Hello!"), '{"messages": [oops', chat("Bye", "Goodbye!")))
    page.goto(f"{url}/dashboard/fine-tuning/datasets/new")
    check_page(page, "03-dataset-new", phone=True)
    _upload(page, url, bad, "Support, first try")
    expect(page.get_by_role("heading", name=re.compile("Support, first try"))).to_contain_text(
        "invalid"
    )
    errors = page.get_by_role("table", name=re.compile("Errors by line"))
    expect(errors.get_by_role("row", name=re.compile("Line 2"))).to_contain_text("invalid_json")
    check_page(page, "04-dataset-invalid")

    good = tmp_path / "support.jsonl"
    good.write_bytes(_good_examples(30))
    _upload(page, url, good, "Support replies")
    expect(page.get_by_role("heading", name=re.compile("Support replies"))).to_contain_text("valid")
    with page.expect_navigation():
        page.get_by_role("button", name="Validate again").click()
    expect(page.get_by_text(re.compile("No errors: every example"))).to_be_visible()
    page.get_by_role("button", name="Next").first.click()
    expect(page.get_by_text("Line 11", exact=True)).to_be_visible()
    check_page(page, "05-dataset-report", phone=True)

    page.goto(f"{url}/dashboard/fine-tuning/datasets")
    check_page(page, "02-datasets")

    page.goto(f"{url}/dashboard/fine-tuning/jobs/new")
    page.get_by_label(re.compile("Support replies")).check()
    check_page(page, "06-wizard-dataset")
    page.get_by_role("button", name="Next: model").click()
    page.get_by_label("Model", exact=True).select_option(BASE_MODEL)
    page.get_by_label("N epochs").fill("0")
    page.get_by_role("button", name="Next: review").click()
    expect(page.get_by_text('Use 1 to 50, or "auto".')).to_be_visible()
    page.get_by_label("N epochs").fill("auto")
    page.get_by_label("Job name").fill("Support v1")
    check_page(page, "07-wizard-model")
    page.get_by_role("button", name="Next: review").click()
    expect(page.get_by_role("heading", name="Cost estimate")).to_be_visible()
    check_page(page, "08-wizard-review")
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(re.compile(r"/dashboard/fine-tuning/jobs/[0-9a-f]{32}$"))

    wait_for_expression(page, "window.Chart && Chart.getChart('loss-chart') !== undefined")
    initial_points = page.evaluate(LOSS_POINTS)
    wait_for_expression(page, f"{LOSS_POINTS} > {initial_points}", timeout_ms=60_000)
    expect(page.get_by_text("Open the model")).to_be_visible(timeout=120_000)
    assert page.evaluate(LOSS_POINTS) >= 3
    expect(page.locator("#job-progress-value")).to_have_text("100%")
    check_page(page, "09-job-detail", phone=True)

    page.goto(f"{url}/dashboard/fine-tuning/jobs")
    expect(page.get_by_role("row", name=re.compile("Support v1"))).to_contain_text("succeeded")
    check_page(page, "10-jobs")

    page.goto(f"{url}/dashboard/fine-tuning/models")
    page.get_by_role("link", name=re.compile("^ft:")).click()
    page.get_by_label("Deploy to agent").select_option(label="Support bot")
    page.get_by_role("button", name="Deploy", exact=True).click()
    expect(page.get_by_text("Serving Support bot")).to_be_visible()
    expect(page.get_by_role("button", name="Delete")).to_be_disabled()

    page.get_by_label("Message").fill("How do I reset my password?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#chat-log .role-assistant")).to_be_visible(timeout=60_000)
    page.reload()
    expect(page.locator("#usage-requests")).to_have_text("1")
    check_page(page, "11-model-detail", phone=True)

    page.goto(f"{url}/dashboard/fine-tuning/models")
    check_page(page, "12-models")
    page.goto(f"{url}/dashboard/agents")
    check_page(page, "16-agents", phone=True)
    page.goto(f"{url}/dashboard/fine-tuning")
    expect(page.locator("a.stat[href$='/models']")).to_contain_text("1 deployed")
    check_page(page, "13-overview", phone=True)


def test_another_organizations_urls_show_not_found(page: Page, live_app: LiveApp) -> None:
    url = live_app.url
    owner = httpx.post(
        f"{url}/auth/register",
        json={
            "email": "owner@example.com",
            "password": "correct horse battery",
            "name": "Owner",
            "organization_name": "Owner Org",
        },
    ).json()
    uploaded = httpx.post(
        f"{url}/fine-tuning/datasets",
        headers={"Authorization": f"Bearer {owner['access_token']}"},
        files={"file": ("private.jsonl", _good_examples(3))},
        data={"name": "Private data"},
    )
    assert uploaded.status_code == 201, uploaded.text
    dataset_url = f"{url}/dashboard/fine-tuning/datasets/{uploaded.json()['id']}"

    _register(page, url, "intruder@example.com", "Other Org")
    response = page.goto(dataset_url)
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_text("Private data")).to_have_count(0)
    check_page(page, "14-not-found")
    assert json.loads(page.evaluate("JSON.stringify(document.title)")).startswith("Not found")
