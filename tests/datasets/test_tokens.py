from __future__ import annotations

import json
from pathlib import Path

import bpe_openai
import pytest

from tuneforge.config import Settings
from tuneforge.datasets.tokens import (
    BpeTokenCounter,
    count_chat_tokens,
    token_counter_for,
)
from tuneforge.errors import InvalidInput
from tuneforge.providers.catalog import (
    DEFAULT_VALIDATION_MODEL,
    BaseModelInfo,
    find_base_model,
    list_base_models,
    training_price_per_million,
)

TEXTS = [
    "",
    "Hello, world!",
    "  leading and trailing spaces  ",
    "line one\n\nline two\r\n\ttabbed",
    "日本語のテキストと emoji 😀👍🏽 and Straße",
    "numbers 1234567890 3.14159 -42",
    "It's we're they've I'll",
    "<|endoftext|> is plain text here",
    "def f(x):\n    return {'a': [1, 2]}\n",
    "word " * 500,
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_counts_equal_bpe_openai_encode(encoding: str) -> None:
    counter = BpeTokenCounter(encoding)
    reference = bpe_openai.get_encoding(encoding)
    for text in TEXTS:
        expected = len(reference.encode(text, disallowed_special=()))
        assert counter.count(text) == expected, text
        assert counter.count(text) == expected, f"cached: {text}"


def test_lone_surrogates_are_counted_like_bpe_openai() -> None:
    counter = BpeTokenCounter("o200k_base")
    reference = bpe_openai.get_encoding("o200k_base")
    assert counter.count("bad \ud800 char") == len(reference.encode("bad \ud800 char"))


def test_chat_accounting_follows_the_cookbook() -> None:
    counter = BpeTokenCounter("o200k_base")
    encode = bpe_openai.get_encoding("o200k_base").encode
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?", "name": "alice"},
        {"role": "assistant", "content": "4"},
    ]
    expected = 3  # reply priming
    for message in messages:
        expected += 3 + sum(len(encode(value)) for value in message.values())
    expected += 1  # the name
    total, assistant = count_chat_tokens(counter, messages, None)
    assert total == expected
    assert assistant == len(encode("4"))


def test_tool_calls_tools_and_weights() -> None:
    counter = BpeTokenCounter("o200k_base")
    count = counter.count
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    messages = [
        {"role": "user", "content": "Find it"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "found"},
        {"role": "assistant", "content": "Here", "weight": 0},
        {"role": "assistant", "content": [{"type": "text", "text": "Done"}], "weight": 1},
    ]
    total, assistant = count_chat_tokens(counter, messages, tools)
    roles = sum(count(message["role"]) for message in messages)
    bodies = (
        count("Find it")
        + count("lookup")
        + count("{}")
        + count("call_1")
        + count("found")
        + count("Here")
        + count("Done")
    )
    tools_json = count(json.dumps(tools, separators=(",", ":")))
    assert total == 3 + 3 * len(messages) + roles + bodies + tools_json
    assert assistant == count("lookup") + count("{}") + count("Done")


def test_counters_are_cached_per_encoding(settings: Settings) -> None:
    gpt4o = token_counter_for(find_base_model("gpt-4o-2024-08-06", settings))
    mini = token_counter_for(find_base_model(DEFAULT_VALIDATION_MODEL, settings))
    legacy = token_counter_for(find_base_model("gpt-3.5-turbo-0125", settings))
    assert gpt4o is mini
    assert (gpt4o.name, legacy.name) == ("o200k_base", "cl100k_base")


def test_missing_local_model_is_invalid_input(settings: Settings) -> None:
    model = find_base_model("smollm2-135m-instruct", settings)
    with pytest.raises(InvalidInput, match="not available on this machine"):
        token_counter_for(model)


def test_local_model_uses_its_own_tokenizer(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model_dir = tmp_path / "tiny-model"
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(
        model_dir
    )
    model = BaseModelInfo("tiny", "local", 128, "local", local_path=model_dir)
    counter = token_counter_for(model)
    assert counter.name == "tiny-model"
    assert counter.count("hello there world") == 3
    assert token_counter_for(model) is counter


def test_catalog_lists_openai_and_local_models(settings: Settings) -> None:
    models = {model.name: model for model in list_base_models(settings)}
    assert DEFAULT_VALIDATION_MODEL in models
    assert models["gpt-3.5-turbo-0125"].context_length == 16_385
    assert models["gpt-4.1-nano-2025-04-14"].tokenizer == "o200k_base"
    local = models["smollm2-135m-instruct"]
    assert (local.provider, local.tokenizer, local.context_length) == ("local", "local", 8_192)
    assert local.local_path == settings.model_store_dir / "smollm2-135m-instruct"


def test_unknown_model_names_the_field_and_the_known_models(settings: Settings) -> None:
    with pytest.raises(InvalidInput) as caught:
        find_base_model("gpt-9", settings)
    assert caught.value.extra == {"field": "model"}
    assert "gpt-9" in caught.value.detail
    assert DEFAULT_VALIDATION_MODEL in caught.value.detail


def test_training_prices_come_from_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, training_prices_per_million_tokens={"gpt-x": 2.5})
    assert training_price_per_million("gpt-x", settings) == 2.5
    assert training_price_per_million("smollm2-135m-instruct", Settings()) is None
    assert training_price_per_million(DEFAULT_VALIDATION_MODEL, Settings()) == 3.0
