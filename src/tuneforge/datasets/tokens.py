"""Exact token counts for chat examples, offline.

Counts follow OpenAI's cookbook accounting ("How to count tokens with tiktoken"): every
message costs 3 tokens plus its role, content and other text fields, a ``name`` costs one
more, and 3 tokens prime the reply. Tool calls count their function names and arguments;
tool definitions count as their compact JSON (OpenAI renders them its own way, so that part
is an estimate). Image content parts are not counted. OpenAI encodings come from
bpe-openai's Rust tokenizer, which bundles o200k_base and cl100k_base, so nothing is
downloaded; local models use their own Hugging Face tokenizer from the model directory.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import orjson

from tuneforge.errors import InvalidInput
from tuneforge.providers.contract import BaseModelInfo

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

# System prompts and tool definitions repeat across examples; remembering their counts
# skips most of the tokenizer's work on them. Short strings are cheaper to count than to
# keep, and the total held is bounded (at most 4M / 256 entries).
_CACHE_MIN_STRING_CHARS = 256
_CACHE_MAX_STRING_CHARS = 65_536
_CACHE_MAX_TOTAL_CHARS = 4_000_000


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...


class BpeTokenCounter:
    """An OpenAI encoding; ``count`` equals ``len(tiktoken_encoding.encode_ordinary(text))``."""

    def __init__(self, encoding_name: str) -> None:
        self.name = encoding_name
        # The tokenizer (~65 MB) loads at the first count: a process that only merges
        # reports counted by the upload pool's workers never needs it.
        self._count: Callable[[str], int] = self._load_and_count
        self._cache: dict[str, int] = {}
        self._cached_chars = 0

    def _load_and_count(self, text: str) -> int:
        # The binding's count() skips building the token list that Encoding.encode returns.
        self._count = _bpe_bindings().tokenizer_for_encoding(self.name).count
        return self._count(text)

    def count(self, text: str) -> int:
        size = len(text)
        if not _CACHE_MIN_STRING_CHARS <= size <= _CACHE_MAX_STRING_CHARS:
            return self._count_uncached(text)
        tokens = self._cache.get(text)
        if tokens is None:
            tokens = self._count_uncached(text)
            if self._cached_chars + size > _CACHE_MAX_TOTAL_CHARS:
                self._cache.clear()
                self._cached_chars = 0
            self._cache[text] = tokens
            self._cached_chars += size
        return tokens

    def _count_uncached(self, text: str) -> int:
        try:
            return self._count(text)
        except UnicodeEncodeError:
            # Lone surrogates: count them as bpe-openai's Encoding does, as replacement chars.
            return self._count(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))


class HuggingFaceTokenCounter:
    """A local model's own tokenizer, loaded from its directory without touching a hub."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoTokenizer

        self.name = model_dir.name
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)

    def count(self, text: str) -> int:
        encoded = self._tokenizer(text, add_special_tokens=False, verbose=False)
        return len(encoded["input_ids"])


def _bpe_bindings() -> ModuleType:
    """bpe-openai's Rust extension on its own. Importing the package runs its ``__init__``,
    which builds every encoding's rank table in Python for its tiktoken-style wrapper: ~1.8 s
    and ~65 MB in each process that counts (the upload pool's workers too), none of it used."""
    name = "bpe_openai._bindings"
    if name in sys.modules:
        return sys.modules[name]
    package = importlib.util.find_spec("bpe_openai")
    directories = (package.submodule_search_locations or []) if package else []
    for directory in directories:
        for suffix in EXTENSION_SUFFIXES:
            path = Path(directory) / f"_bindings{suffix}"
            if path.is_file():
                loader = ExtensionFileLoader(name, str(path))
                module = importlib.util.module_from_spec(ModuleSpec(name, loader, origin=str(path)))
                loader.exec_module(module)
                sys.modules[name] = module
                return module
    return importlib.import_module(name)  # another layout: the package's own way


@lru_cache(maxsize=4)
def _bpe_counter(encoding_name: str) -> BpeTokenCounter:
    return BpeTokenCounter(encoding_name)


@lru_cache(maxsize=4)
def _local_counter(model_dir: Path) -> HuggingFaceTokenCounter:
    return HuggingFaceTokenCounter(model_dir)


def token_counter_for(model: BaseModelInfo) -> TokenCounter:
    """The counter for a base model, loaded once per encoding or model directory."""
    if not model.has_own_tokenizer:
        return _bpe_counter(model.tokenizer)
    if model.local_path is None or not model.local_path.is_dir():
        raise InvalidInput(
            f"Base model {model.name} is not available on this machine: its directory "
            f"{model.local_path} does not exist. Install it into the model store first.",
            field="model",
        )
    try:
        return _local_counter(model.local_path)
    except (OSError, ValueError) as exc:
        raise InvalidInput(
            f"Base model {model.name} has no usable tokenizer in {model.local_path}: {exc}",
            field="model",
        ) from exc


def _content_tokens(count: Callable[[str], int], content: Any) -> int:
    if type(content) is str:
        return count(content)
    return sum(count(part["text"]) for part in content if part.get("type") == "text")


def _call_tokens(count: Callable[[str], int], function: dict[str, Any]) -> int:
    return count(function["name"]) + count(function["arguments"])


def count_chat_tokens(
    counter: TokenCounter, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> tuple[int, int]:
    """(total tokens, assistant tokens) of an example that passed ``validate_chat_example``.

    Assistant tokens are what the model learns to produce: content, refusals and tool calls
    of assistant messages whose ``weight`` is not 0.
    """
    count = counter.count
    total = REPLY_PRIMING_TOKENS
    assistant = 0
    for message in messages:
        body = 0
        other = TOKENS_PER_MESSAGE
        for key, value in message.items():
            if not value:
                continue
            if key == "content":
                body += _content_tokens(count, value)
            elif key == "role" or key == "tool_call_id":
                other += count(value)
            elif key == "name":
                other += count(value) + TOKENS_PER_NAME
            elif key == "refusal":
                body += count(value)
            elif key == "tool_calls":
                body += sum(_call_tokens(count, call["function"]) for call in value)
            elif key == "function_call":
                body += _call_tokens(count, value)
        total += other + body
        if message["role"] == "assistant" and message.get("weight", 1) != 0:
            assistant += body
    if tools:
        total += count(orjson.dumps(tools).decode())
    return total, assistant


@dataclass(frozen=True, slots=True)
class PreferenceTokens:
    """A preference pair's prompt and reply tokens, counted like a chat example's."""

    prompt: int
    preferred: int
    non_preferred: int

    @property
    def total(self) -> int:
        """What training reads: the prompt once with each reply."""
        return 2 * self.prompt + self.preferred + self.non_preferred

    @property
    def longest(self) -> int:
        """The longer of the two sequences, prompt included: what must fit the context."""
        return self.prompt + max(self.preferred, self.non_preferred)


def count_preference_tokens(counter: TokenCounter, payload: dict[str, Any]) -> PreferenceTokens:
    """Tokens of a pair that passed ``validate_preference_example``; each reply counts as
    the assistant message that would follow the prompt."""
    source = payload["input"]
    prompt, _ = count_chat_tokens(counter, source["messages"], source.get("tools"))
    # A reply counted alone would pay the reply priming again, which the prompt has paid.
    preferred, non_preferred = (
        count_chat_tokens(counter, payload[name], None)[0] - REPLY_PRIMING_TOKENS
        for name in ("preferred_output", "non_preferred_output")
    )
    return PreferenceTokens(prompt, preferred, non_preferred)
