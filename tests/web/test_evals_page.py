"""The evaluation pages: the list, a run's scores and its examples side by side, the
regressions filter, cancel, scoping, and the whole of it in Chromium.

The two models are the tiny base model and a tiny model that always ends its turn at once
("silent"). Graded by text similarity, silent loses on every example whose expected reply
shares characters with the base model's printable-ASCII replies (the English ones) and ties
on the others (Japanese), so exactly half the examples are regressions.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Page, expect

from tests.fixtures.api import Account
from tests.fixtures.browser import LiveApp, check_page
from tests.fixtures.files import Upload, chat, jsonl
from tests.fixtures.tiny_model import TINY_BASE_MODEL
from tests.web.conftest import DashboardClient, sign_in
from tuneforge.config import Settings
from tuneforge.inference.engine import InferenceEngine
from tuneforge.store.base_models import MARKER_FILE, register_local_model
from tuneforge.worker.loop import Worker

SILENT = "tiny-silent"
ENGLISH = "The quick brown fox jumps over the lazy dog."
JAPANESE = "日本語で答えます"
EXAMPLES = 12
REGRESSIONS = EXAMPLES // 2
BASE = "/dashboard/fine-tuning/evals"


def eval_examples() -> bytes:
    return jsonl(
        chat("Is <b>this</b> bold?", ENGLISH),
        *(chat(f"Question {i}?", JAPANESE if i % 2 else ENGLISH) for i in range(1, EXAMPLES)),
    )


def eval_body(dataset_id: str) -> dict[str, Any]:
    return {
        "dataset_id": dataset_id,
        "split": "all",
        "name": "Base vs silent",
        "max_tokens": 8,
        "models": [
            {"reference": TINY_BASE_MODEL, "label": "base"},
            {"reference": SILENT, "label": "silent"},
        ],
        "graders": [{"type": "similarity"}, {"type": "valid_json"}],
    }


def register_silent_model(settings: Settings, tiny_chat_models: Path) -> None:
    register_local_model(settings, tiny_chat_models / "eos-base", SILENT)


@pytest.fixture
def dataset_id(upload: Upload, installed_tiny_model: Path) -> str:
    response = upload(eval_examples(), model=TINY_BASE_MODEL)
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture
def finished_id(
    client: TestClient,
    app: FastAPI,
    settings: Settings,
    account: Account,
    dataset_id: str,
    tiny_chat_models: Path,
) -> str:
    register_silent_model(settings, tiny_chat_models)
    created = client.post("/evals", json=eval_body(dataset_id), headers=account.headers)
    assert created.status_code == 201, created.text
    worker = Worker(app.state.session_factory, settings, engine=InferenceEngine(1024**3))
    assert worker.run_one_evaluation()
    return created.json()["id"]


@pytest.fixture
def queued_id(client: TestClient, account: Account, dataset_id: str) -> str:
    body = {"dataset_id": dataset_id, "split": "all", "models": [{"reference": TINY_BASE_MODEL}]}
    created = client.post("/evals", json=body, headers=account.headers)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def test_the_list_shows_each_run_with_its_progress(web: DashboardClient, finished_id: str) -> None:
    page = web.get(BASE)
    assert page.status_code == 200
    assert f'href="{BASE}/{finished_id}">Base vs silent</a>' in page.text
    assert "My dataset" in page.text and "12 of 12 examples" in page.text
    assert 'aria-current="page">Evaluations</a>' in page.text
    assert "hx-trigger" not in page.text


def test_the_detail_page_scores_each_model_and_shows_replies_side_by_side(
    web: DashboardClient, finished_id: str
) -> None:
    page = web.get(f"{BASE}/{finished_id}").text
    silent = (
        r'silent<div class="muted small">tiny-silent</div></th>\s*<td class="num">0\.000</td>\s*'
        r'<td class="num">0\.0%</td>\s*<td class="num">0</td>\s*'
        rf'<td class="num">{EXAMPLES - REGRESSIONS}</td>\s*<td class="num">{REGRESSIONS}</td>'
    )
    assert re.search(silent, page), page
    assert re.search(r'base<div class="muted small">[^<]+</div></th>(.|\n)*?baseline</td>', page)
    assert "1\N{EN DASH}10 of 12" in page and "Example 10<" in page and "Example 11<" not in page
    assert ENGLISH in page and JAPANESE in page and "(empty reply)" in page
    assert "text similarity" in page and "valid JSON" in page and "Expecting value" in page
    assert page.count('badge tone-bad">fail</span>') >= EXAMPLES
    assert "Is &lt;b&gt;this&lt;/b&gt; bold?" in page and "<b>this</b>" not in page

    second = web.get(f"{BASE}/{finished_id}?offset=10").text
    assert "Example 11<" in second and "Example 12<" in second and "Example 10<" not in second


def test_regressions_only_keeps_the_examples_a_model_lost(
    web: DashboardClient, finished_id: str
) -> None:
    page = web.get(f"{BASE}/{finished_id}?regressions_only=true").text
    assert f"{REGRESSIONS} regressions" in page
    assert page.count('class="example eval-example"') == REGRESSIONS
    assert page.count('badge tone-bad">regression</span>') == REGRESSIONS
    assert ENGLISH in page and JAPANESE not in page
    assert '<option value="true" selected>' in page


def test_the_status_panel_polls_while_active_and_reloads_the_page_once_done(
    web: DashboardClient, finished_id: str, queued_id: str
) -> None:
    active = web.get(f"{BASE}/{queued_id}/status", headers={"HX-Request": "true"})
    assert "HX-Refresh" not in active.headers
    assert 'hx-trigger="every 2s"' in active.text and "Cancel evaluation" in active.text
    done = web.get(f"{BASE}/{finished_id}/status", headers={"HX-Request": "true"})
    assert done.headers["HX-Refresh"] == "true" and "hx-trigger" not in done.text


def test_cancel_a_queued_run_from_its_page(
    client: TestClient, web: DashboardClient, queued_id: str
) -> None:
    url = f"{BASE}/{queued_id}/cancel"
    assert client.post(url, follow_redirects=False).status_code == 403
    response = web.htmx(url)
    assert response.headers["HX-Redirect"] == f"{BASE}/{queued_id}"
    page = web.get(f"{BASE}/{queued_id}").text
    assert 'badge tone-warn">cancelled</span>' in page and "has no scores" in page
    assert "Cancel evaluation" not in page
    assert web.htmx(url).status_code == 409


def test_another_organization_sees_no_page_and_cannot_cancel(
    client: TestClient, other_account: Account, queued_id: str
) -> None:
    intruder = sign_in(client, other_account)
    for path in (f"{BASE}/{queued_id}", f"{BASE}/{queued_id}/status"):
        assert intruder.get(path).status_code == 404, path
    assert intruder.post(f"{BASE}/{queued_id}/cancel").status_code == 404
    assert "No evaluations yet." in intruder.get(BASE).text


def test_bad_query_parameters_are_readable_errors(web: DashboardClient, queued_id: str) -> None:
    for query in ("offset=-1", "offset=lots", "regressions_only=maybe"):
        response = web.get(f"{BASE}/{queued_id}?{query}")
        assert response.status_code == 422, query
        assert "Some input needs fixing" in response.text


@pytest.mark.slow  # a real browser
def test_an_evaluation_in_the_browser(
    page: Page, live_app: LiveApp, tiny_chat_models: Path
) -> None:
    url = live_app.url
    target = live_app.settings.model_store_dir / TINY_BASE_MODEL
    shutil.copytree(tiny_chat_models / "base", target)
    (target / MARKER_FILE).write_text(json.dumps({"name": TINY_BASE_MODEL, "source": "test"}))
    register_silent_model(live_app.settings, tiny_chat_models)
    owner = {
        "email": "eve@example.com",
        "password": "correct horse battery",
        "name": "Eve",
        "organization_name": "Evaluators",
    }
    token = httpx.post(f"{url}/auth/register", json=owner).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    uploaded = httpx.post(
        f"{url}/fine-tuning/datasets",
        headers=headers,
        files={"file": ("eval.jsonl", eval_examples())},
        data={"name": "Eval set", "model": TINY_BASE_MODEL},
    )
    assert uploaded.status_code == 201, uploaded.text
    created = httpx.post(f"{url}/evals", json=eval_body(uploaded.json()["id"]), headers=headers)
    assert created.status_code == 201, created.text

    page.goto(f"{url}{BASE}")
    page.get_by_label("Email").fill(owner["email"])
    page.get_by_label("Password").fill(owner["password"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{url}{BASE}")
    row = page.get_by_role("row", name=re.compile("Base vs silent"))
    expect(row).to_contain_text("succeeded", timeout=60_000)
    expect(row).to_contain_text("12 of 12 examples")
    check_page(page, "17-evals", phone=True)

    row.get_by_role("link", name="Base vs silent").click()
    scores = page.get_by_role("table", name=re.compile("Scores by model"))
    expect(scores.get_by_role("row", name=re.compile("^base")).get_by_role("cell")).to_have_text(
        [re.compile(r"\d\.\d{3}"), "0.0%", "baseline"]
    )
    expect(scores.get_by_role("row", name=re.compile("^silent")).get_by_role("cell")).to_have_text(
        ["0.000", "0.0%", "0", str(EXAMPLES - REGRESSIONS), str(REGRESSIONS)]
    )
    first = page.locator(".eval-example").filter(
        has=page.get_by_role("heading", name="Example 1", exact=True)
    )
    expect(first.locator(".message.role-user")).to_contain_text("Is <b>this</b> bold?")
    expected = first.get_by_role("region", name="Expected reply")
    silent = first.get_by_role("region", name="silent's reply")
    expect(expected).to_contain_text(ENGLISH)
    expect(first.get_by_role("region", name="base's reply")).to_contain_text("text similarity")
    expect(silent).to_contain_text("(empty reply)")
    expect(silent.get_by_role("listitem")).to_have_text(
        [
            re.compile(r"fail\s*text similarity\s*0\.00"),
            re.compile(r"fail\s*valid JSON\s*0\.00\s*Expecting value"),
        ]
    )
    expect(first).to_contain_text("regression")
    expected_box, silent_box = expected.bounding_box(), silent.bounding_box()
    assert expected_box and silent_box and expected_box["y"] == silent_box["y"], "not side by side"
    check_page(page, "18-eval-detail", phone=True)

    page.get_by_label("Show").select_option("true")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"regressions_only=true"))
    expect(page.get_by_text(f"{REGRESSIONS} regressions")).to_be_visible()
    expect(page.locator(".eval-example")).to_have_count(REGRESSIONS)
    expect(page.locator(".eval-example .badge", has_text="regression")).to_have_count(REGRESSIONS)
    expect(page.get_by_text(JAPANESE)).to_have_count(0)
