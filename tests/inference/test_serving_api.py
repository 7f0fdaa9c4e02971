"""The batching engine behind the real HTTP API and the official ``openai`` SDK: one row,
no queue, so a second request is refused until the first one's row has left the batch."""

from __future__ import annotations

import time

import openai
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.db.tables.models import FineTunedModel, ModelUsage

pytestmark = pytest.mark.usefixtures("installed_tiny_model")

MESSAGES = [{"role": "user", "content": "Say something about stars."}]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"inference_max_batch_size": 1, "inference_queue_limit": 0})


def _ask(sdk: openai.OpenAI, model: str) -> openai.types.chat.ChatCompletion:
    return sdk.chat.completions.create(model=model, messages=MESSAGES, max_tokens=2)


def test_a_full_queue_is_a_429_in_openais_shape_until_a_stream_is_closed(
    sdk: openai.OpenAI, fine_tuned: FineTunedModel, db_session: Session
) -> None:
    stream = sdk.chat.completions.create(
        model=fine_tuned.id, messages=MESSAGES, max_tokens=4000, stream=True
    )
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"

    with pytest.raises(openai.RateLimitError) as refused:
        _ask(sdk, fine_tuned.id)
    response = refused.value.response
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["type"] == "invalid_request_error"
    assert "waiting for this model" in error["message"]

    stream.close()  # the client goes away: its row leaves the batch at the next step
    deadline = time.monotonic() + 60
    while True:
        try:
            reply = _ask(sdk, fine_tuned.id)
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "the closed stream kept its place"
            time.sleep(0.1)
    assert reply.usage is not None and reply.usage.completion_tokens == 2
    db_session.rollback()
    outcomes = sorted(row.success for row in db_session.scalars(select(ModelUsage)))
    assert outcomes == [False, True]  # the closed stream and the reply; no row for a 429
