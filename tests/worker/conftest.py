from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.config import Settings


@pytest.fixture
def worker_settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for a worker the test drives itself: none embedded, no pause between polls."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        embedded_worker=False,
        polling_interval_seconds=0.0,
        worker_lease_seconds=10.0,
    )
