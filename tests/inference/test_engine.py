"""The local inference engine on a tiny random model: decoding, stops, streaming, caching."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from tuneforge.errors import TooManyRequests
from tuneforge.inference.batching import BatchLimits
from tuneforge.inference.engine import (
    InferenceEngine,
    LoadedBase,
    ModelSource,
    ModelUnavailable,
    load_base,
)
from tuneforge.inference.generation import SamplingParams

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me about the ocean."},
]
GREEDY = SamplingParams(max_tokens=24, temperature=0)


@pytest.fixture
def base(tiny_chat_models: Path) -> ModelSource:
    return ModelSource("tiny", tiny_chat_models / "base")


@pytest.fixture
def tuned(tiny_chat_models: Path) -> ModelSource:
    return ModelSource("tiny-ft", tiny_chat_models / "base", tiny_chat_models / "adapter")


@pytest.fixture
def eos_model(tiny_chat_models: Path) -> ModelSource:
    return ModelSource("tiny-eos", tiny_chat_models / "eos-base")


class CountingLoader:
    """Wraps the real loader, counting loads per base model directory."""

    def __init__(self) -> None:
        self.loads: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, source: ModelSource) -> LoadedBase:
        with self._lock:
            self.loads[source.base_path.name] += 1
        return load_base(source)


@pytest.fixture
def loader() -> CountingLoader:
    return CountingLoader()


@pytest.fixture
def engine(loader: CountingLoader) -> InferenceEngine:
    return InferenceEngine(1024**3, loader=loader)


def test_greedy_decoding_is_deterministic(engine: InferenceEngine, base: ModelSource) -> None:
    first = engine.complete(base, MESSAGES, GREEDY)
    second = engine.complete(base, MESSAGES, GREEDY)
    assert first == second
    assert first.text.strip()
    assert first.prompt_tokens > 10
    assert first.completion_tokens == 24
    assert first.finish_reason == "length"


def test_max_tokens_ends_with_length(engine: InferenceEngine, base: ModelSource) -> None:
    completion = engine.complete(base, MESSAGES, SamplingParams(max_tokens=3, temperature=0))
    assert completion.completion_tokens == 3
    assert completion.finish_reason == "length"


def test_end_of_turn_token_ends_with_stop(engine: InferenceEngine, eos_model: ModelSource) -> None:
    completion = engine.complete(eos_model, MESSAGES, GREEDY)
    assert completion.text == ""
    assert completion.completion_tokens == 1
    assert completion.finish_reason == "stop"


def _stop_inside(text: str) -> tuple[str, int]:
    """A two-character piece of ``text`` starting after its first few characters."""
    for start in range(4, len(text) - 2):
        stop = text[start : start + 2]
        if stop.strip() and text.find(stop) >= 4:
            return stop, text.find(stop)
    raise AssertionError(f"no usable stop string in {text!r}")


def test_stop_string_cuts_the_reply(engine: InferenceEngine, base: ModelSource) -> None:
    full = engine.complete(base, MESSAGES, GREEDY).text
    stop, index = _stop_inside(full)
    params = SamplingParams(max_tokens=24, temperature=0, stop=("never-produced", stop))

    completion = engine.complete(base, MESSAGES, params)

    assert completion.text == full[:index]
    assert completion.finish_reason == "stop"
    assert completion.completion_tokens < 24


def test_stream_yields_the_same_text_and_holds_back_stop_strings(
    engine: InferenceEngine, base: ModelSource
) -> None:
    full = engine.complete(base, MESSAGES, GREEDY)
    stream = engine.stream(base, MESSAGES, GREEDY)
    deltas = list(stream)
    assert len(deltas) > 1
    assert "".join(deltas) == full.text
    assert stream.result == full

    stop, index = _stop_inside(full.text)
    stream = engine.stream(
        base, MESSAGES, SamplingParams(max_tokens=24, temperature=0, stop=(stop,))
    )
    assert "".join(stream) == full.text[:index]
    assert stream.result is not None
    assert stream.result.finish_reason == "stop"


def test_closing_a_stream_frees_its_place_in_the_batch(
    loader: CountingLoader, base: ModelSource
) -> None:
    """One row and no queue: while the stream runs another request is refused; once the
    stream is closed its row is gone and the next request runs."""
    engine = InferenceEngine(1024**3, loader=loader, limits=BatchLimits(max_rows=1, queue_limit=0))
    stream = engine.stream(base, MESSAGES, SamplingParams(max_tokens=500, temperature=0))
    deltas = iter(stream)
    next(deltas)
    with pytest.raises(TooManyRequests):
        engine.complete(base, MESSAGES, SamplingParams(max_tokens=2, temperature=0))
    stream.close()
    list(deltas)
    assert stream.result is not None
    assert stream.result.completion_tokens < 500
    assert stream.result.finish_reason == "stop"
    after = engine.complete(base, MESSAGES, SamplingParams(max_tokens=2, temperature=0))
    assert after.completion_tokens == 2


def test_a_full_queue_is_refused_with_a_retry_after(
    loader: CountingLoader, base: ModelSource
) -> None:
    engine = InferenceEngine(1024**3, loader=loader, limits=BatchLimits(max_rows=1, queue_limit=1))
    long = SamplingParams(max_tokens=400, temperature=0)
    running, queued = engine.stream(base, MESSAGES, long), engine.stream(base, MESSAGES, long)
    with pytest.raises(TooManyRequests) as refused:
        engine.stream(base, MESSAGES, long)
    assert refused.value.status_code == 429
    assert refused.value.headers is not None
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    # Evaluations queue past the limit: they are the worker's, not a caller's.
    for stream in (running, queued):
        stream.close()
        list(stream)
    assert len(engine.complete_greedy_batch(base, [MESSAGES] * 3, 2)) == 3


def test_seed_reproduces_a_sampled_reply(engine: InferenceEngine, base: ModelSource) -> None:
    params = SamplingParams(max_tokens=16, temperature=1.5, top_p=0.95, seed=1234)
    assert engine.complete(base, MESSAGES, params) == engine.complete(base, MESSAGES, params)


def test_adapter_is_applied(engine: InferenceEngine, base: ModelSource, tuned: ModelSource) -> None:
    assert (
        engine.complete(tuned, MESSAGES, GREEDY).text
        != engine.complete(base, MESSAGES, GREEDY).text
    )


def test_lru_eviction_of_base_models_under_a_small_budget(
    engine: InferenceEngine,
    loader: CountingLoader,
    base: ModelSource,
    tuned: ModelSource,
    eos_model: ModelSource,
) -> None:
    one = SamplingParams(max_tokens=1, temperature=0)
    engine.complete(base, MESSAGES, one)
    size = engine.cache.get(base).size_bytes
    assert size > 0
    engine.cache.budget_bytes = size + size // 2  # room for one base model

    engine.complete(tuned, MESSAGES, one)  # a fine-tune of the loaded base: no load
    assert loader.loads == {"base": 1}
    engine.complete(eos_model, MESSAGES, one)  # evicts the tiny base
    assert engine.cache.loaded() == [eos_model.cache_key]
    engine.complete(tuned, MESSAGES, one)
    assert engine.cache.loaded() == [tuned.cache_key]
    assert loader.loads == {"base": 2, "eos-base": 1}


def test_a_model_bigger_than_the_budget_is_served_alone(
    loader: CountingLoader, base: ModelSource, eos_model: ModelSource
) -> None:
    engine = InferenceEngine(1, loader=loader)
    one = SamplingParams(max_tokens=1, temperature=0)
    engine.complete(base, MESSAGES, one)
    engine.complete(eos_model, MESSAGES, one)
    assert engine.cache.loaded() == [eos_model.cache_key]


def test_concurrent_requests_share_one_load(
    engine: InferenceEngine, loader: CountingLoader, base: ModelSource, tuned: ModelSource
) -> None:
    start = threading.Barrier(8)
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def ask(n: int) -> None:
        source = base if n % 2 else tuned
        params = SamplingParams(max_tokens=8, temperature=0)
        try:
            start.wait()
            if n % 4 == 0:
                stream = engine.stream(source, MESSAGES, params)
                results[n] = "".join(stream)
            else:
                results[n] = engine.complete(source, MESSAGES, params).text
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors
    assert len({results[n] for n in range(1, 8, 2)}) == 1
    assert len({results[n] for n in range(0, 8, 2)}) == 1
    assert loader.loads == {"base": 1}
    assert engine.cache.get(base).adapters.loaded() == [str(tuned.adapter_path.resolve())]  # type: ignore[union-attr]


def test_missing_files_are_reported(engine: InferenceEngine, tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="base model files are missing"):
        engine.complete(ModelSource("gone", tmp_path / "gone"), MESSAGES, GREEDY)


def test_missing_adapter_is_reported(
    engine: InferenceEngine, base: ModelSource, tmp_path: Path
) -> None:
    source = ModelSource("ft", base.base_path, tmp_path / "no-adapter")
    with pytest.raises(ModelUnavailable, match="adapter files are missing"):
        engine.complete(source, MESSAGES, GREEDY)


def test_concurrent_loads_of_different_models_leave_weight_tying_intact(
    base: ModelSource, eos_model: ModelSource
) -> None:
    """transformers swaps ``PreTrainedModel.tie_weights`` for a no-op while it loads; two
    overlapping loads could leave the no-op in place, and every tied model (SmolLM2) loaded
    afterwards had an uninitialised output head."""
    from transformers import PreTrainedModel

    def load_together(source: ModelSource, start: threading.Barrier) -> None:
        start.wait()
        load_base(source)

    original = PreTrainedModel.tie_weights
    for _ in range(5):
        start = threading.Barrier(2)
        threads = [
            threading.Thread(target=load_together, args=(source, start))
            for source in (base, eos_model)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert PreTrainedModel.tie_weights is original


def test_a_greedy_batch_replies_as_each_conversation_would_alone(
    engine: InferenceEngine, base: ModelSource, eos_model: ModelSource
) -> None:
    """Left padding must not change a reply: evaluations batch what a user asks one by one."""
    conversations = [
        MESSAGES,
        [
            {
                "role": "user",
                "content": "a much longer question, with more words in it than the rest",
            }
        ],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    ]
    batch = engine.complete_greedy_batch(base, conversations, 12)
    alone = [
        engine.complete(base, c, SamplingParams(max_tokens=12, temperature=0))
        for c in conversations
    ]
    assert batch == alone
    assert all(c.finish_reason == "length" and c.completion_tokens == 12 for c in batch)
    stopped = engine.complete_greedy_batch(eos_model, conversations[:2], 12)
    assert [(c.text, c.finish_reason, c.completion_tokens) for c in stopped] == [
        ("", "stop", 1)
    ] * 2
