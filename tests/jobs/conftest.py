from __future__ import annotations

import pytest

from tuneforge.config import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """OpenAI counts as configured so jobs can be created; nothing here reaches it."""
    return settings.model_copy(update={"openai_api_key": "sk-test"})
