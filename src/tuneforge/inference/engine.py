"""Serving local models: one copy of each base model, fine-tunes as adapters on it, and one
batching thread per base.

Base models stay in an LRU cache bounded by an estimate of their weight memory (a load
costs seconds). Each carries its fine-tunes as LoRA adapters, in an LRU of their own
(``adapters.py``), and a scheduler thread that decodes all its requests, of the base and
of every adapter, in one batch (``batching.py``). A request's thread loads what is missing,
renders and checks the prompt, queues it, then waits for the reply or reads its stream.
torch and transformers are imported at the first load, not with this module.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.config import Settings
from tuneforge.inference.adapters import AdapterBank, AdapterCache, LoraAdapter, read_adapter
from tuneforge.inference.batching import BatchLimits, BatchRunner
from tuneforge.inference.decoding import GenerationRequest
from tuneforge.inference.generation import (
    ChatMessages,
    Completion,
    CompletionStream,
    SamplingParams,
    Tools,
    check_prompt_characters,
    end_token_ids,
    prompt_ids,
    room_for_reply,
)
from tuneforge.providers.contract import ModelUnavailable
from tuneforge.store.base_models import MODEL_LOAD_LOCK

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)
LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError)


@dataclass(frozen=True)
class ModelSource:
    """Where a servable model's files are: a base model directory and an optional adapter."""

    label: str
    base_path: Path
    adapter_path: Path | None = None

    @property
    def cache_key(self) -> str:
        """The base model's key: fine-tunes of one base share its entry."""
        return str(self.base_path.resolve())


@dataclass(frozen=True)
class LoadedBase:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    size_bytes: int


@dataclass(eq=False)
class ServedBase:
    """A base model in memory, its attached adapters and the thread batching its requests."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    size_bytes: int
    adapters: AdapterCache
    runner: BatchRunner


def inference_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_base_files(source: ModelSource) -> None:
    base = source.base_path
    if not (base / "config.json").is_file() or not (
        any(base.glob("*.safetensors")) or (base / "pytorch_model.bin").is_file()
    ):
        raise ModelUnavailable(
            f"Model {source.label}: base model files are missing or incomplete in {base}"
        )


def _load_tokenizer(path: Path, label: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not tokenizer.chat_template:
        raise ModelUnavailable(f"Model {label} has no chat template in its tokenizer")
    return tokenizer


def load_base(source: ModelSource) -> LoadedBase:
    """Read a base model's weights and tokenizer from disk, for inference."""
    import torch
    from transformers import AutoModelForCausalLM

    device = inference_device()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        with MODEL_LOAD_LOCK:
            model: Any = AutoModelForCausalLM.from_pretrained(
                source.base_path, dtype=dtype, local_files_only=True
            )
        tokenizer = _load_tokenizer(source.base_path, source.label)
    except LOAD_ERRORS as exc:
        raise ModelUnavailable(f"Model {source.label} could not be loaded: {exc}") from exc
    model.to(device).eval()
    tensors = [*model.parameters(), *model.buffers()]
    size = sum(t.numel() * t.element_size() for t in tensors)
    return LoadedBase(model=model, tokenizer=tokenizer, size_bytes=size)


def _adapter_reader(model: PreTrainedModel) -> Callable[[Path], LoraAdapter]:
    """Reads an adapter for ``model``, with its own tokenizer when training saved one (it may
    carry a new chat template); a tokenizer with more tokens than the base cannot share it."""

    def read(path: Path) -> LoraAdapter:
        tokenizer = None
        if (path / "tokenizer_config.json").is_file():
            tokenizer = _load_tokenizer(path, str(path))
            if len(tokenizer) > model.get_input_embeddings().num_embeddings:
                raise ModelUnavailable(f"Adapter {path} adds tokens its base model does not have")
        return read_adapter(path, model, tokenizer)

    return read


class ModelCache:
    """Base models, least recently used first, evicted when their total exceeds the budget.

    A model bigger than the whole budget is still served, alone. Each base has its own load
    lock so one model loads once however many requests want it, while other models keep
    serving; those locks are kept for the life of the cache (one per distinct model).
    """

    def __init__(self, budget_bytes: int, loader: Callable[[ModelSource], ServedBase]) -> None:
        self.budget_bytes = budget_bytes
        self._loader = loader
        self._models: OrderedDict[str, ServedBase] = OrderedDict()
        self._load_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def loaded(self) -> list[str]:
        """Cache keys, least recently used first."""
        with self._lock:
            return list(self._models)

    def get(self, source: ModelSource) -> ServedBase:
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

    def _lookup(self, key: str) -> ServedBase | None:
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
                # Queued and running requests finish; memory goes when the thread lets go.
                entry = self._models.pop(key)
                entry.runner.close()
                total -= entry.size_bytes
                logger.info("Evicted model %s from the inference cache", key)


class InferenceEngine:
    """Chat generation for local models, shared by every request of one app."""

    def __init__(
        self,
        cache_bytes: int,
        *,
        adapter_cache_bytes: int = 1024**3,
        limits: BatchLimits | None = None,
        loader: Callable[[ModelSource], LoadedBase] = load_base,
    ) -> None:
        self.adapter_cache_bytes = adapter_cache_bytes
        self.limits = limits or BatchLimits()
        self._load = loader
        self.cache = ModelCache(cache_bytes, self._serve)

    @classmethod
    def from_settings(cls, settings: Settings) -> InferenceEngine:
        limits = BatchLimits(
            max_rows=settings.inference_max_batch_size,
            queue_limit=settings.inference_queue_limit,
            window_seconds=settings.inference_batch_window_ms / 1000,
            token_limit=settings.inference_batch_token_limit,
            prefix_bytes=settings.inference_prefix_cache_bytes,
        )
        return cls(
            settings.inference_cache_bytes,
            adapter_cache_bytes=settings.inference_adapter_cache_bytes,
            limits=limits,
        )

    def complete(
        self,
        source: ModelSource,
        messages: ChatMessages,
        params: SamplingParams,
        tools: Tools = None,
    ) -> Completion:
        (request,) = self._submit(source, [(messages, tools)], params)
        return request.outcome.result()

    def complete_greedy_batch(
        self,
        source: ModelSource,
        conversations: Sequence[ChatMessages],
        max_tokens: int,
        tools: Sequence[Tools] | None = None,
    ) -> list[Completion]:
        """Greedy replies to several conversations (evaluations): queued together, past the
        queue limit, which protects interactive callers from each other, not from the worker."""
        tool_lists = tools or [None] * len(conversations)
        params = SamplingParams(max_tokens=max_tokens, temperature=0)
        items = list(zip(conversations, tool_lists, strict=True))
        requests = self._submit(source, items, params, bounded=False)
        return [request.outcome.result() for request in requests]

    def stream(
        self,
        source: ModelSource,
        messages: ChatMessages,
        params: SamplingParams,
        tools: Tools = None,
    ) -> CompletionStream:
        """Queue a streamed generation; loading errors and a full queue raise here, before
        any text."""
        (request,) = self._submit(source, [(messages, tools)], params, streaming=True)
        assert request.streamer is not None
        return CompletionStream(request.streamer, params.stop, request.cancel, request.outcome)

    def _serve(self, source: ModelSource) -> ServedBase:
        _check_base_files(source)
        loaded = self._load(source)
        bank = AdapterBank(loaded.model)
        return ServedBase(
            model=loaded.model,
            tokenizer=loaded.tokenizer,
            size_bytes=loaded.size_bytes,
            adapters=AdapterCache(bank, self.adapter_cache_bytes, _adapter_reader(loaded.model)),
            runner=BatchRunner(loaded.model, bank, self.limits),
        )

    def _submit(
        self,
        source: ModelSource,
        items: Sequence[tuple[ChatMessages, Tools]],
        params: SamplingParams,
        *,
        streaming: bool = False,
        bounded: bool = True,
    ) -> list[GenerationRequest]:
        base = self.cache.get(source)
        requests: list[GenerationRequest] = []
        releases: list[Callable[[], None]] = []
        try:
            for messages, tools in items:
                adapter = None
                if source.adapter_path is not None:
                    adapter, release = self._attach(base, source.label, source.adapter_path)
                    releases.append(release)
                requests.append(self._request(base, adapter, messages, params, tools, streaming))
            base.runner.submit(requests, bounded=bounded)
        except BaseException:
            for release in releases:
                release()
            raise
        for request, release in zip(requests, releases, strict=False):
            request.outcome.add_done_callback(lambda _, release=release: release())
        return requests

    def _attach(
        self, base: ServedBase, label: str, path: Path
    ) -> tuple[LoraAdapter, Callable[[], None]]:
        if not (path / "adapter_config.json").is_file():
            raise ModelUnavailable(f"Model {label}: LoRA adapter files are missing in {path}")
        try:
            return base.adapters.acquire(path)
        except LOAD_ERRORS as exc:
            raise ModelUnavailable(f"Model {label} could not be loaded: {exc}") from exc

    def _request(
        self,
        base: ServedBase,
        adapter: LoraAdapter | None,
        messages: ChatMessages,
        params: SamplingParams,
        tools: Tools,
        streaming: bool,
    ) -> GenerationRequest:
        """Render and check one prompt in the caller's thread; the batch only decodes."""
        model = base.model
        tokenizer = adapter.tokenizer if adapter and adapter.tokenizer else base.tokenizer
        check_prompt_characters(model, messages, tools)
        ids = prompt_ids(tokenizer, messages, tools)
        eos_ids = end_token_ids(model, tokenizer)
        constraint = streamer = None
        if params.grammar is not None:
            from tuneforge.inference.constrained import ConstrainedDecoding

            constraint = ConstrainedDecoding(
                tokenizer, params.grammar, prompt_length=0, eos_ids=eos_ids
            )
        if streaming:
            from transformers import TextIteratorStreamer

            streamer = TextIteratorStreamer(tokenizer, skip_special_tokens=True)
        return GenerationRequest(
            prompt_ids=ids,
            max_tokens=room_for_reply(model, len(ids), params.max_tokens),
            params=params,
            tokenizer=tokenizer,
            eos_ids=frozenset(eos_ids),
            adapter=adapter.key if adapter else None,
            constraint=constraint,
            streamer=streamer,
        )
