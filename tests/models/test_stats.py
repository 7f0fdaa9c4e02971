from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from tests.fixtures.api import Account
from tests.fixtures.factories import Factories
from tuneforge.db.tables.datasets import DatasetStatus
from tuneforge.db.tables.jobs import JobStatus
from tuneforge.db.tables.models import ModelStatus

STATS = "/fine-tuning/stats"


def test_stats_count_the_organizations_rows(
    client: TestClient, factories: Factories, account: Account, other_account: Account
) -> None:
    org = account.organization_id
    now = datetime.now(UTC)
    dataset = factories.dataset(org)
    factories.dataset(org, status=DatasetStatus.INVALID)
    factories.dataset(org, deleted_at=now)
    factories.job(org, dataset=dataset)
    job_a = factories.succeeded_job(org, dataset=dataset, trained_tokens=1_000)
    job_b = factories.succeeded_job(org, dataset=dataset, trained_tokens=2_000)
    factories.job(org, dataset=dataset, status=JobStatus.FAILED, trained_tokens=50)
    job_c = factories.succeeded_job(org, dataset=dataset, trained_tokens=None)
    job_d = factories.succeeded_job(org, dataset=dataset, trained_tokens=None)
    served = factories.model(org, job=job_a)
    factories.model(org, job=job_b, status=ModelStatus.ARCHIVED)
    gone = factories.model(org, job=job_c, deleted_at=now)
    idle = factories.model(org, job=job_d)
    factories.agent(org, fine_tuned_model_id=served.id, model=served.id)
    factories.agent(org, fine_tuned_model_id=served.id, model=served.id)
    factories.agent(org, fine_tuned_model_id=idle.id, model=idle.id, deleted_at=now)
    factories.agent(org, fine_tuned_model_id=gone.id, model=gone.id)
    factories.usage(org, served.id, created_at=now, prompt_tokens=100, completion_tokens=40)
    factories.usage(org, served.id, created_at=now, prompt_tokens=1, completion_tokens=2)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    factories.usage(org, served.id, created_at=month_start - timedelta(seconds=1))
    theirs = factories.model(other_account.organization_id)
    factories.usage(other_account.organization_id, theirs.id, created_at=now)

    response = client.get(STATS, headers=account.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["datasets"] == {
        "total": 2,
        "by_status": {"uploaded": 0, "validating": 0, "valid": 1, "invalid": 1},
    }
    assert body["jobs"]["total"] == 6
    assert body["jobs"]["by_status"]["succeeded"] == 4
    assert body["jobs"]["by_status"]["pending"] == 1
    assert body["jobs"]["by_status"]["failed"] == 1
    assert body["jobs"]["by_status"]["running"] == 0
    assert body["models"] == {"total": 3, "active": 2, "archived": 1, "deployed": 1}
    assert body["trained_tokens"] == 3_050
    usage = body["usage_this_month"]
    assert datetime.fromisoformat(usage["since"]) == month_start
    assert (usage["requests"], usage["prompt_tokens"], usage["completion_tokens"]) == (2, 101, 42)
    assert usage["total_tokens"] == 143


def test_stats_of_an_empty_organization_are_zero(client: TestClient, account: Account) -> None:
    body = client.get(STATS, headers=account.headers).json()

    assert body["datasets"]["total"] == 0
    assert set(body["jobs"]["by_status"]) == {status.value for status in JobStatus}
    assert body["models"] == {"total": 0, "active": 0, "archived": 0, "deployed": 0}
    assert body["trained_tokens"] == 0
    assert body["usage_this_month"]["requests"] == 0
