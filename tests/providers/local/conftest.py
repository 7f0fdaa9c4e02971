from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _train_on_one_thread(one_cpu_thread: None) -> None:
    """Every test here builds, trains or runs a tiny model."""
