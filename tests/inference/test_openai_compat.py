"""The official ``openai`` SDK against a real server running the app: /v1 compatibility."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.fixtures.api import Account, RegisterAccount
from tests.fixtures.factories import Factories
from tests.fixtures.tiny_model import TINY_BASE_MODEL
from tuneforge.db.tables.models import FineTunedModel, ModelStatus, ModelUsage

pytestmark = pytest.mark.usefixtures("installed_tiny_model")

MESSAGES: list[dict[str, str]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say something about stars."},
]


def test_chat_completion_by_id_and_by_name(
    sdk: openai.OpenAI, fine_tuned: FineTunedModel, db_session: Session
) -> None:
    by_id = sdk.chat.completions.create(
        model=fine_tuned.id, messages=MESSAGES, temperature=0, max_tokens=6
    )

    assert by_id.object == "chat.completion"
    assert by_id.id.startswith("chatcmpl-")
    assert by_id.model == fine_tuned.id
    [choice] = by_id.choices
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert by_id.usage is not None
    assert by_id.usage.completion_tokens == 6
    assert by_id.usage.total_tokens == by_id.usage.prompt_tokens + 6

    by_name = sdk.chat.completions.create(
        model="ft:tiny:support", messages=MESSAGES, temperature=0, max_completion_tokens=6
    )
    assert by_name.choices[0].message.content == choice.message.content

    rows = list(db_session.scalars(select(ModelUsage)))
    assert [(r.model_id, r.agent_id, r.success) for r in rows] == [(fine_tuned.id, None, True)] * 2
    assert rows[0].prompt_tokens == by_id.usage.prompt_tokens


def test_streamed_completion_ends_with_a_usage_chunk(
    sdk: openai.OpenAI, fine_tuned: FineTunedModel
) -> None:
    plain = sdk.chat.completions.create(
        model=fine_tuned.id, messages=MESSAGES, temperature=0, max_tokens=8
    )

    chunks = list(
        sdk.chat.completions.create(
            model=fine_tuned.id,
            messages=MESSAGES,
            temperature=0,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    *_, finish, usage = chunks
    assert finish.choices[0].finish_reason == "length"
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.completion_tokens == 8
    assert usage.usage.prompt_tokens == plain.usage.prompt_tokens  # type: ignore[union-attr]


def test_stream_without_include_usage_has_no_usage_chunk(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model=TINY_BASE_MODEL, messages=MESSAGES, temperature=0, max_tokens=4, stream=True
        )
    )
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stop_sequences_cut_the_reply(sdk: openai.OpenAI) -> None:
    full = sdk.chat.completions.create(
        model=TINY_BASE_MODEL, messages=MESSAGES, temperature=0, max_tokens=16
    )
    text = full.choices[0].message.content or ""
    stop = next(text[i : i + 2] for i in range(3, len(text) - 2) if text[i : i + 2].strip())
    expected = text[: text.find(stop)]

    cut = sdk.chat.completions.create(
        model=TINY_BASE_MODEL, messages=MESSAGES, temperature=0, max_tokens=16, stop=[stop]
    )
    streamed = sdk.chat.completions.create(
        model=TINY_BASE_MODEL,
        messages=MESSAGES,
        temperature=0,
        max_tokens=16,
        stop=stop,
        stream=True,
    )

    assert cut.choices[0].message.content == expected
    assert cut.choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected


def test_models_lists_active_local_models_of_the_organization(
    sdk: openai.OpenAI,
    fine_tuned: FineTunedModel,
    factories: Factories,
    account: Account,
    register_account: RegisterAccount,
) -> None:
    archived = factories.model(account.organization_id, status=ModelStatus.ARCHIVED)
    remote = factories.model(account.organization_id, provider="openai")
    foreign = factories.model(register_account().organization_id, provider="local")

    models = sdk.models.list()

    ids = [model.id for model in models.data]
    assert ids == [fine_tuned.name, TINY_BASE_MODEL]  # an ft: name lists as OpenAI lists it
    assert fine_tuned.name.startswith("ft:")
    assert {archived.name, remote.name, foreign.name}.isdisjoint(ids)
    assert models.data[0].object == "model"
    assert models.data[0].owned_by == account.organization_id


def test_unknown_and_archived_models_are_not_found(
    sdk: openai.OpenAI, factories: Factories, account: Account
) -> None:
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        sdk.chat.completions.create(model="no-such-model", messages=MESSAGES)
    archived = factories.model(account.organization_id, status=ModelStatus.ARCHIVED)
    with pytest.raises(openai.NotFoundError, match="archived"):
        sdk.chat.completions.create(model=archived.id, messages=MESSAGES)


def test_more_than_one_choice_is_rejected(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError, match=r"n: .*only n=1") as raised:
        sdk.chat.completions.create(model=TINY_BASE_MODEL, messages=MESSAGES, n=2)
    assert (raised.value.param, raised.value.code) == ("n", "validation_error")


def test_missing_base_model_files_are_unavailable(
    sdk: openai.OpenAI, installed_tiny_model: Path
) -> None:
    (installed_tiny_model / "model.safetensors").unlink()
    with pytest.raises(openai.InternalServerError, match="missing") as raised:
        sdk.chat.completions.create(model=TINY_BASE_MODEL, messages=MESSAGES)
    assert raised.value.status_code == 503


def test_credentials_are_required(live_server: str, account: Account) -> None:
    no_key = httpx.post(
        f"{live_server}/v1/chat/completions",
        json={"model": TINY_BASE_MODEL, "messages": MESSAGES},
    )
    assert no_key.status_code == 401
    bad_key = openai.OpenAI(base_url=f"{live_server}/v1", api_key="tf-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()
    with_jwt = openai.OpenAI(base_url=f"{live_server}/v1", api_key=account.token, max_retries=0)
    assert TINY_BASE_MODEL in [model.id for model in with_jwt.models.list()]


def test_a_client_leaving_mid_stream_is_metered_as_a_failed_call(
    live_server: str,
    api_key: str,
    sdk: openai.OpenAI,
    fine_tuned: FineTunedModel,
    db_session: Session,
) -> None:
    request = {"model": fine_tuned.id, "messages": MESSAGES, "max_tokens": 4000, "stream": True}
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.stream(
        "POST", f"{live_server}/v1/chat/completions", json=request, headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200
        next(response.iter_lines())

    deadline = time.monotonic() + 30
    while not (rows := list(db_session.scalars(select(ModelUsage)))):
        assert time.monotonic() < deadline, "the abandoned stream was not metered"
        time.sleep(0.1)
        db_session.rollback()
    assert [(row.success, row.completion_tokens) for row in rows] == [(False, 0)]
    # (That its row leaves the batch is test_serving_api's.)
    assert sdk.chat.completions.create(model=fine_tuned.id, messages=MESSAGES, max_tokens=2)
