"""Every dashboard page for its owner, organization scoping, and the actions behind forms."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.fixtures.api import Account
from tests.fixtures.factories import Factories
from tests.fixtures.files import Upload, chat, jsonl, valid_jsonl
from tests.web.conftest import DashboardClient, sign_in
from tuneforge.db.tables.datasets import FineTuningDataset
from tuneforge.db.tables.jobs import FineTuningEvent, FineTuningJob, JobStatus
from tuneforge.db.tables.models import FineTunedModel, ModelStatus

MODEL = "gpt-4o-mini-2024-07-18"


@dataclass
class Objects:
    dataset_id: str
    job_id: str
    model_id: str
    agent_id: str
    conversation_id: str

    def pages(self) -> list[str]:
        return [
            f"/dashboard/fine-tuning/datasets/{self.dataset_id}",
            f"/dashboard/fine-tuning/datasets/{self.dataset_id}/examples?valid=false",
            f"/dashboard/fine-tuning/jobs/new?dataset_id={self.dataset_id}",
            f"/dashboard/fine-tuning/jobs/{self.job_id}",
            f"/dashboard/fine-tuning/jobs/{self.job_id}/summary",
            f"/dashboard/fine-tuning/models/{self.model_id}",
            f"/dashboard/agents/{self.agent_id}",
            f"/dashboard/agents/{self.agent_id}/conversations/{self.conversation_id}",
        ]

    def actions(self) -> list[str]:
        return [
            f"/dashboard/fine-tuning/datasets/{self.dataset_id}/validate",
            f"/dashboard/fine-tuning/datasets/{self.dataset_id}/delete",
            f"/dashboard/fine-tuning/jobs/{self.job_id}/cancel",
            f"/dashboard/fine-tuning/models/{self.model_id}/archive",
            f"/dashboard/fine-tuning/models/{self.model_id}/delete",
            f"/dashboard/fine-tuning/models/{self.model_id}/try",
        ]


def make_objects(client: TestClient, owner: Account, factories: Factories) -> Objects:
    """A validated dataset, a running job on it, a model, an agent with a conversation."""
    uploaded = client.post(
        "/fine-tuning/datasets",
        headers=owner.headers,
        files={"file": ("train.jsonl", valid_jsonl(20))},
        data={"name": "Support", "validation_fraction": "0.2"},
    )
    assert uploaded.status_code == 201, uploaded.text
    dataset = factories.session.get(FineTuningDataset, uploaded.json()["id"])
    job = factories.job(owner.organization_id, dataset=dataset, status=JobStatus.RUNNING)
    model = factories.model(owner.organization_id)
    agent = factories.agent(owner.organization_id)
    conversation = client.post(
        f"/agents/{agent.id}/conversations",
        headers=owner.headers,
        json={"title": "Refund", "rating": 5, "tags": ["billing"], **chat("Refund?", "Sure.")},
    )
    assert conversation.status_code == 201, conversation.text
    return Objects(dataset.id, job.id, model.id, agent.id, conversation.json()["id"])


@pytest.fixture
def mine(client: TestClient, account: Account, factories: Factories) -> Objects:
    return make_objects(client, account, factories)


@pytest.fixture
def theirs(client: TestClient, other_account: Account, factories: Factories) -> Objects:
    return make_objects(client, other_account, factories)


def test_every_page_renders_for_its_owner(web: DashboardClient, mine: Objects) -> None:
    lists = [
        "/dashboard/fine-tuning",
        "/dashboard/fine-tuning/datasets",
        "/dashboard/fine-tuning/datasets?status=valid",
        "/dashboard/fine-tuning/datasets/new",
        "/dashboard/fine-tuning/jobs",
        "/dashboard/fine-tuning/jobs?status=running&provider=local",
        "/dashboard/fine-tuning/jobs/rows",
        "/dashboard/fine-tuning/jobs/new",
        "/dashboard/fine-tuning/models",
        "/dashboard/agents",
    ]
    for path in lists + mine.pages():
        response = web.get(path)
        assert response.status_code == 200, f"{path}: {response.text[:500]}"
        assert "text/html" in response.headers["content-type"]


def test_another_organizations_urls_are_not_found_pages(
    web: DashboardClient, mine: Objects, theirs: Objects
) -> None:
    for path in theirs.pages():
        response = web.get(path)
        assert response.status_code == 404, path
        assert '<h1 id="error-title">Not found</h1>' in response.text, path
        assert "Refund" not in response.text and "Support" not in response.text
    for path in theirs.actions():
        assert web.post(path).status_code == 404, path


def test_unknown_dashboard_paths_render_an_html_not_found_page(web: DashboardClient) -> None:
    response = web.get("/dashboard/fine-tuning/nothing-here")
    assert response.status_code == 404
    assert "There is no page at this address." in response.text
    assert 'aria-current="page"' not in response.text
    assert "Sign out" in response.text


def test_bad_filters_are_readable_errors(web: DashboardClient) -> None:
    response = web.get("/dashboard/fine-tuning/jobs?status=sleeping")
    assert response.status_code == 422
    assert "is not one of" in response.text


def test_dataset_report_shows_errors_with_their_line_numbers(
    web: DashboardClient, upload: Upload
) -> None:
    response = upload(jsonl(chat("Hi", "Hello"), "{broken", chat("Bye", "Goodbye")))
    page = web.get(f"/dashboard/fine-tuning/datasets/{response.json()['id']}")
    assert page.status_code == 200
    assert "Line 2" in page.text and "invalid_json" in page.text
    assert "Token distribution" in page.text and "Training estimate" in page.text


def test_validate_and_delete_a_dataset(
    web: DashboardClient, mine: Objects, db_session: Session
) -> None:
    base = f"/dashboard/fine-tuning/datasets/{mine.dataset_id}"
    validated = web.htmx(f"{base}/validate", {"model": MODEL})
    assert validated.headers["HX-Redirect"] == base
    deleted = web.post(f"{base}/delete")
    assert deleted.status_code == 303 and deleted.headers["location"].endswith("/datasets")
    assert db_session.get(FineTuningDataset, mine.dataset_id).deleted_at is not None
    assert web.get(base).status_code == 404


def test_examples_page_through_and_filter(web: DashboardClient, upload: Upload) -> None:
    dataset_id = upload(valid_jsonl(25)).json()["id"]
    base = f"/dashboard/fine-tuning/datasets/{dataset_id}/examples"
    second = web.get(f"{base}?offset=10&valid=&split=")
    assert "Line 11" in second.text and "Line 10<" not in second.text
    assert "No examples match." in web.get(f"{base}?valid=false").text


def test_import_preview_counts_matching_conversations(web: DashboardClient, mine: Objects) -> None:
    data = {"agent_ids": mine.agent_id, "min_rating": "4", "tags": "billing, other"}
    preview = web.htmx("/dashboard/fine-tuning/datasets/import/preview", data)
    assert preview.status_code == 200
    assert "<strong>1</strong> conversation matches" in preview.text
    bad = web.htmx(
        "/dashboard/fine-tuning/datasets/import/preview", {"from": "2025-02-01", "to": "2025-01-01"}
    )
    assert bad.status_code == 422
    assert 'class="alert alert-error"' in bad.text


def test_import_creates_a_dataset_and_lands_on_it(web: DashboardClient, mine: Objects) -> None:
    response = web.htmx(
        "/dashboard/fine-tuning/datasets/import",
        {
            "agent_ids": mine.agent_id,
            "name": "From chats",
            "model": MODEL,
            "assistant_turns": "all",
        },
    )
    assert response.status_code == 200
    page = web.get(response.headers["HX-Redirect"])
    assert "From chats" in page.text
    unnamed = web.htmx("/dashboard/fine-tuning/datasets/import", {"agent_ids": mine.agent_id})
    assert unnamed.status_code == 422 and "give the new dataset a name" in unnamed.text


def test_wizard_shows_field_errors_inline(web: DashboardClient, mine: Objects) -> None:
    form = {
        "dataset_id": mine.dataset_id,
        "model": MODEL,
        "n_epochs": "0",
        "batch_size": "lots",
        "learning_rate_multiplier": "auto",
        "suffix": "Not Valid!",
    }
    response = web.post("/dashboard/fine-tuning/jobs/new/review", form)
    assert response.status_code == 422
    assert 'id="n_epochs-error">Use 1 to 50, or &#34;auto&#34;.' in response.text
    assert 'id="batch_size-error"' in response.text
    assert 'id="suffix-error"' in response.text


def test_wizard_reviews_the_estimate_then_creates_the_job(
    web: DashboardClient, mine: Objects, db_session: Session
) -> None:
    form = {"dataset_id": mine.dataset_id, "model": MODEL, "n_epochs": "2", "name": "v1"}
    review = web.post("/dashboard/fine-tuning/jobs/new/review", form)
    assert review.status_code == 200
    assert 'id="estimated-cost">$' in review.text
    created = web.post("/dashboard/fine-tuning/jobs/new", form)
    assert created.status_code == 303
    job_id = created.headers["location"].rsplit("/", 1)[1]
    job = db_session.get(FineTuningJob, job_id)
    assert job is not None and job.name == "v1" and job.hyperparameters["n_epochs"] == 2


def test_wizard_lists_only_valid_datasets(
    web: DashboardClient, upload: Upload, mine: Objects
) -> None:
    invalid_id = upload(jsonl("{broken")).json()["id"]
    page = web.get("/dashboard/fine-tuning/jobs/new")
    assert mine.dataset_id in page.text and invalid_id not in page.text
    refused = web.get(f"/dashboard/fine-tuning/jobs/new?dataset_id={invalid_id}")
    assert refused.status_code == 422


def test_cancel_a_running_job(web: DashboardClient, mine: Objects, db_session: Session) -> None:
    response = web.htmx(f"/dashboard/fine-tuning/jobs/{mine.job_id}/cancel")
    assert response.headers["HX-Redirect"] == f"/dashboard/fine-tuning/jobs/{mine.job_id}"
    assert db_session.get(FineTuningJob, mine.job_id).status == JobStatus.CANCELLING


def test_deploy_then_archive_is_refused_beside_the_button(
    web: DashboardClient, mine: Objects, db_session: Session
) -> None:
    base = f"/dashboard/fine-tuning/models/{mine.model_id}"
    deployed = web.htmx(f"{base}/deploy", {"agent_id": mine.agent_id, "next": base})
    assert deployed.headers["HX-Redirect"] == base
    page = web.get(base)
    assert "Serving" in page.text and "undeploy it first" in page.text
    refused = web.htmx(f"{base}/archive")
    assert refused.status_code == 409
    assert refused.text.startswith('<p class="alert alert-error" role="alert">')
    web.htmx(f"{base}/undeploy", {"agent_id": mine.agent_id})
    web.htmx(f"{base}/archive")
    assert db_session.get(FineTunedModel, mine.model_id).status == ModelStatus.ARCHIVED
    assert web.post(f"{base}/delete").headers["location"] == "/dashboard/fine-tuning/models"


def test_deploy_needs_an_agent(web: DashboardClient, mine: Objects) -> None:
    response = web.htmx(f"/dashboard/fine-tuning/models/{mine.model_id}/deploy", {"agent_id": ""})
    assert response.status_code == 422
    assert "Choose the agent" in response.text


def test_create_an_agent(web: DashboardClient) -> None:
    missing = web.post("/dashboard/agents", {"name": "", "model": MODEL})
    assert missing.status_code == 422 and 'id="name-error"' in missing.text
    created = web.post("/dashboard/agents", {"name": "Helper", "model": MODEL})
    assert created.status_code == 303
    assert "Helper" in web.get(created.headers["location"]).text


def test_another_users_session_sees_only_its_organization(
    client: TestClient, other_account: Account, mine: Objects
) -> None:
    intruder = sign_in(client, other_account)
    page = intruder.get("/dashboard/fine-tuning/datasets")
    assert mine.dataset_id not in page.text
    assert "No datasets yet." in page.text


def test_the_job_page_says_how_the_run_was_judged(
    web: DashboardClient, mine: Objects, db_session: Session
) -> None:
    reported = [
        ("holdout", {"held_out": 30, "examples": 300, "fraction": 0.1}),
        ("overfitting", {"step": 48, "valid_loss": 0.4, "best_step": 32}),
        ("early_stopped", {"step": 56, "planned_steps": 75, "best_step": 32}),
        ("finished", {"best_step": 32, "best_valid_loss": 0.0261, "trained_tokens": 900}),
    ]
    for event_type, data in reported:
        db_session.add(
            FineTuningEvent(job_id=mine.job_id, event_type=event_type, message="-", data=data)
        )
    db_session.commit()

    page = web.get(f"/dashboard/fine-tuning/jobs/{mine.job_id}").text

    assert "Overfitting at step 48" in page
    assert "30 training examples" in page
    assert "at step 56 of 75" in page
    assert "step 32, the lowest valid loss" in page
