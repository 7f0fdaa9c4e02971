"""Serving local models: load a base model plus LoRA adapter once, then generate chat replies.

Loaded models stay in an LRU cache bounded by an estimate of their weight memory, because
loading costs seconds and every chat request would otherwise pay it. Each cached model has
one lock: a model object (and its Rust tokenizer) is not safe to drive from two threads,
and on one CPU or GPU running two generations at once buys no throughput anyway.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TextIteratorStreamer,
)

from tuneforge.inference.generation import (
    ChatMessages,
    Completion,
    CompletionStream,
    SamplingParams,
    Tools,
    generate_greedy_batch,
    generate_reply,
)
from tuneforge.providers.contract import ModelUnavailable
from tuneforge.store.base_models import MODEL_LOAD_LOCK

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    """Where a servable model's files are: a base model directory and an optional adapter."""

    label: str
    base_path: Path
    adapter_path: Path | None = None

    @property
    def cache_key(self) -> str:
        adapter = str(self.adapter_path.resolve()) if self.adapter_path else ""
        return f"{self.base_path.resolve()}::{adapter}"


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    size_bytes: int
    lock: threading.Lock = field(default_factory=threading.Lock)


def inference_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_files(source: ModelSource) -> None:
    base = source.base_path
    if not (base / "config.json").is_file() or not (
        any(base.glob("*.safetensors")) or (base / "pytorch_model.bin").is_file()
    ):
        raise ModelUnavailable(
            f"Model {source.label}: base model files are missing or incomplete in {base}"
        )
    adapter = source.adapter_path
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise ModelUnavailable(f"Model {source.label}: LoRA adapter files are missing in {adapter}")


def _tokenizer_dir(source: ModelSource) -> Path:
    """The adapter's own tokenizer when training saved one (it may carry a new template)."""
    adapter = source.adapter_path
    if adapter is not None and (adapter / "tokenizer_config.json").is_file():
        return adapter
    return source.base_path


def load_model(source: ModelSource) -> LoadedModel:
    """Read weights from disk and merge the adapter into them, so generation pays no LoRA cost."""
    _check_files(source)
    device = inference_device()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        with MODEL_LOAD_LOCK:
            model: Any = AutoModelForCausalLM.from_pretrained(
                source.base_path, dtype=dtype, local_files_only=True
            )
            if source.adapter_path is not None:
                model = PeftModel.from_pretrained(model, source.adapter_path).merge_and_unload()
        tokenizer = AutoTokenizer.from_pretrained(_tokenizer_dir(source), local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelUnavailable(f"Model {source.label} could not be loaded: {exc}") from exc
    if not tokenizer.chat_template:
        raise ModelUnavailable(f"Model {source.label} has no chat template in its tokenizer")
    model.to(device).eval()
    tensors = itertools.chain(model.parameters(), model.buffers())
    size = sum(t.numel() * t.element_size() for t in tensors)
    return LoadedModel(model=model, tokenizer=tokenizer, size_bytes=size)


class ModelCache:
    """Loaded models, least recently used first, evicted when their total exceeds the budget.

    A model bigger than the whole budget is still served, alone. Each model key has its own
    load lock so one model loads once however many requests want it, while other models
    keep serving; those locks are kept for the life of the cache (one per distinct model).
    """

    def __init__(
        self, budget_bytes: int, loader: Callable[[ModelSource], LoadedModel] = load_model
    ) -> None:
        self.budget_bytes = budget_bytes
        self._loader = loader
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._load_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def loaded(self) -> list[str]:
        """Cache keys, least recently used first."""
        with self._lock:
            return list(self._models)

    def get(self, source: ModelSource) -> LoadedModel:
        key = source.cache_key
        with self._lock:
            if (entry := self._lookup(key)) is not None:
                return entry
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                if (entry := self._lookup(key)) is not None:
                    return entry
            logger.info("Loading model %s", source.label)
            entry = self._loader(source)
            with self._lock:
                self._models[key] = entry
                self._evict_over_budget(keep=key)
            return entry

    def _lookup(self, key: str) -> LoadedModel | None:
        entry = self._models.get(key)
        if entry is not None:
            self._models.move_to_end(key)
        return entry

    def _evict_over_budget(self, *, keep: str) -> None:
        total = sum(entry.size_bytes for entry in self._models.values())
        for key in list(self._models):
            if total <= self.budget_bytes:
                return
            if key != keep:
                # A generation still holding the model finishes; memory goes when it lets go.
                total -= self._models.pop(key).size_bytes
                logger.info("Evicted model %s from the inference cache", key)


class InferenceEngine:
    """Chat generation for local models, shared by every request of one app."""

    def __init__(
        self, cache_bytes: int, *, loader: Callable[[ModelSource], LoadedModel] = load_model
    ) -> None:
        self.cache = ModelCache(cache_bytes, loader)

    def complete(
        self,
        source: ModelSource,
        messages: ChatMessages,
        params: SamplingParams,
        tools: Tools = None,
    ) -> Completion:
        entry = self.cache.get(source)
        with entry.lock:
            return generate_reply(
                entry.model,
                entry.tokenizer,
                messages,
                params,
                cancel=threading.Event(),
                tools=tools,
            )

    def complete_greedy_batch(
        self,
        source: ModelSource,
        conversations: Sequence[ChatMessages],
        max_tokens: int,
        tools: Sequence[Tools] | None = None,
    ) -> list[Completion]:
        """Greedy replies to several conversations in one forward batch (evaluations)."""
        entry = self.cache.get(source)
        with entry.lock:
            return generate_greedy_batch(
                entry.model, entry.tokenizer, conversations, max_tokens, tools
            )

    def stream(
        self,
        source: ModelSource,
        messages: ChatMessages,
        params: SamplingParams,
        tools: Tools = None,
    ) -> CompletionStream:
        """Start generating in a thread; loading errors raise here, before any text."""
        entry = self.cache.get(source)
        streamer = TextIteratorStreamer(entry.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run(cancel: threading.Event) -> Completion:
            with entry.lock:
                return generate_reply(
                    entry.model,
                    entry.tokenizer,
                    messages,
                    params,
                    cancel=cancel,
                    streamer=streamer,
                    tools=tools,
                )

        return CompletionStream(streamer, params.stop).start(run)
