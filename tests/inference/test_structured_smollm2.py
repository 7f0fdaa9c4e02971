"""Structured outputs on the real built-in SmolLM2, sampled at temperature 1 through the SDK."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest

from tuneforge.config import Settings
from tuneforge.store.base_models import DEFAULT_MODEL, pull_builtin_model

pytestmark = [
    pytest.mark.slow,  # the real model, 50 generations
    pytest.mark.timeout(1200),  # minutes on a busy 2-core machine
    pytest.mark.parametrize("migrated_database_url", ["sqlite"], indirect=True),
]
CONTACT = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "channels": {
            "type": "array",
            "items": {"enum": ["email", "phone", "post"]},
            "minItems": 1,
            "maxItems": 3,
        },
    },
    "required": ["name", "age", "channels"],
    "additionalProperties": False,
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    pull_builtin_model(settings, DEFAULT_MODEL, lambda _: None)
    return settings


def test_a_json_schema_reply_validates_in_50_of_50_samples(sdk: openai.OpenAI) -> None:
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "contact", "schema": CONTACT, "strict": True},
    }
    replies = [
        sdk.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": "Invent a customer and how to reach them."}],
            response_format=response_format,
            temperature=1,
            seed=seed,
            max_tokens=80,
        ).choices[0]
        for seed in range(50)
    ]

    for choice in replies:
        jsonschema.validate(json.loads(choice.message.content or ""), CONTACT)
    assert len({choice.message.content for choice in replies}) > 10  # sampled, not fixed
