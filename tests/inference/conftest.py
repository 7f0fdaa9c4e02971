from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.api import Account
from tests.fixtures.factories import Factories
from tests.fixtures.tiny_model import TINY_BASE_MODEL
from tuneforge.db.tables.models import FineTunedModel


@pytest.fixture
def fine_tuned(factories: Factories, account: Account, tiny_adapter_dir: Path) -> FineTunedModel:
    """The account's fine-tune of the tiny model: the tiny adapter, from a succeeded job."""
    job = factories.succeeded_job(account.organization_id, base_model=TINY_BASE_MODEL)
    return factories.model(
        account.organization_id,
        job=job,
        name="ft:tiny:support",
        provider_model_id=str(tiny_adapter_dir),
    )
