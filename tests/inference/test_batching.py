"""Batched decoding on the tiny model: rows that join and leave mid-flight reply as they
would alone, adapters share one base, and LoRA is applied as peft applies it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.fixtures.tiny_model import build_tiny_adapter
from tuneforge.inference.adapters import AdapterBank, AdapterCache, read_adapter
from tuneforge.inference.constrained import ConstrainedDecoding, response_format_grammar
from tuneforge.inference.decoding import DecodeBatch, GenerationRequest
from tuneforge.inference.engine import InferenceEngine, LoadedBase, ModelSource, load_base
from tuneforge.inference.generation import SamplingParams, end_token_ids, prompt_ids

PROMPTS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "The ocean?"}],
    [{"role": "user", "content": "a much longer question, with more words in it than the rest"}],
    [{"role": "user", "content": "Tell me about the stars, the moon and the weather today."}],
]


class TokenRecorder:
    """Stands in for a stream's text streamer and keeps the token ids it is given."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        self.ids += value.tolist()

    def end(self) -> None:
        self.ended = True


@pytest.fixture(scope="module")
def adapters(tiny_chat_models: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    second = tmp_path_factory.mktemp("second-adapter") / "adapter"
    return [
        tiny_chat_models / "adapter",
        build_tiny_adapter(tiny_chat_models / "base", second, seed=2),
    ]


@pytest.fixture
def loaded(tiny_chat_models: Path) -> LoadedBase:
    return load_base(ModelSource("tiny", tiny_chat_models / "base"))


def _request(
    loaded: LoadedBase,
    messages: list[dict[str, str]],
    *,
    max_tokens: int = 10,
    adapter: str | None = None,
    params: SamplingParams | None = None,
) -> GenerationRequest:
    params = params or SamplingParams(max_tokens=max_tokens, temperature=0)
    eos = end_token_ids(loaded.model, loaded.tokenizer)
    constraint = None
    if params.grammar is not None:
        constraint = ConstrainedDecoding(
            loaded.tokenizer, params.grammar, prompt_length=0, eos_ids=eos
        )
    return GenerationRequest(
        prompt_ids=prompt_ids(loaded.tokenizer, messages, None),
        max_tokens=params.max_tokens,
        params=params,
        tokenizer=loaded.tokenizer,
        eos_ids=frozenset(eos),
        adapter=adapter,
        constraint=constraint,
        streamer=TokenRecorder(),  # type: ignore[arg-type]
    )


def _ids(request: GenerationRequest) -> list[int]:
    assert request.outcome.done()
    recorder = request.streamer
    assert isinstance(recorder, TokenRecorder) and recorder.ended
    return recorder.ids


def _alone(batch: DecodeBatch, request: GenerationRequest) -> list[int]:
    with torch.inference_mode():
        batch.admit([request])
        while len(batch):
            batch.step()
    return _ids(request)


def test_rows_that_join_and_leave_mid_flight_reply_as_they_would_alone(
    loaded: LoadedBase, adapters: list[Path]
) -> None:
    """Greedy token ids, batched or alone, for prompts of different lengths and different
    adapters: left padding, the attention mask and per-row positions must hide the other
    rows, both when a joiner is shorter than the running rows and when it is longer."""
    bank = AdapterBank(loaded.model)
    keys = []
    for path in adapters:
        adapter = read_adapter(path, loaded.model)
        bank.attach(adapter)
        keys.append(adapter.key)
    plan = [  # (prompt, adapter, token limit)
        (PROMPTS[1], keys[0], 12),
        (PROMPTS[0], None, 5),
        (PROMPTS[2], keys[1], 12),
        (PROMPTS[3], keys[0], 9),
        (PROMPTS[0], keys[1], 12),
    ]
    batch = DecodeBatch(loaded.model, bank)
    alone = [_alone(batch, _request(loaded, p, max_tokens=n, adapter=a)) for p, a, n in plan]
    together = [_request(loaded, p, max_tokens=n, adapter=a) for p, a, n in plan]
    with torch.inference_mode():
        batch.admit(together[:2])  # one short prompt, one long
        batch.step()
        batch.step()
        batch.admit(together[2:3])  # longer than the running rows: they are padded
        batch.step()
        batch.admit(together[3:])  # shorter: the joiners are padded
        batch.step()
        assert len(batch) == 4  # the 5-token row has left: the cache loses a row
        while len(batch):
            batch.step()
    assert [_ids(request) for request in together] == alone
    assert [len(ids) for ids in alone] == [n for _, _, n in plan]
    assert len({tuple(ids) for ids in alone}) == len(alone)


def test_a_shared_prompt_prefix_is_prefilled_once_per_adapter(
    loaded: LoadedBase, adapters: list[Path]
) -> None:
    """Requests that begin with the same system prompt prefill only what follows it, among
    rows of the same adapter only (a fine-tune changes the keys and values), alone or
    joining together, and reply as they would with nothing kept."""
    bank = AdapterBank(loaded.model)
    adapter = read_adapter(adapters[0], loaded.model)
    bank.attach(adapter)
    system = {"role": "system", "content": "You answer questions about the sea, kindly."}
    plan = [  # (question, adapter)
        ("The ocean?", None),
        ("The ocean?", adapter.key),
        ("Why are waves salty?", None),
        ("Tides, and the moon?", adapter.key),
    ]

    def requests() -> list[GenerationRequest]:
        return [
            _request(loaded, [system, {"role": "user", "content": q}], adapter=a) for q, a in plan
        ]

    fresh = DecodeBatch(loaded.model, bank)
    expected = [_alone(fresh, request) for request in requests()]
    fed: list[int] = []
    loaded.model.register_forward_pre_hook(
        lambda _, args, kwargs: fed.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    batch = DecodeBatch(loaded.model, bank, prefix_bytes=2**24)
    alone = requests()
    prefills = []
    for request, replied in zip(alone, expected, strict=True):
        fed.clear()
        assert _alone(batch, request) == replied
        prefills.append(fed[0])
    lengths = [len(request.prompt_ids) for request in alone]
    assert prefills[:2] == lengths[:2]  # nothing kept yet for either adapter
    for later, earlier in ((2, 0), (3, 1)):  # the same adapter's kept prompt, not the other's
        pairs = zip(alone[later].prompt_ids, alone[earlier].prompt_ids, strict=False)
        common = next(n for n, (a, b) in enumerate(pairs) if a != b)
        assert common > 8
        assert prefills[later] == lengths[later] - common

    together = requests()
    with torch.inference_mode():
        batch.admit(together)  # every prompt kept: one token each is fed
        assert fed[-1] == 1
        while len(batch):
            batch.step()
    assert [_ids(request) for request in together] == expected


def test_sampled_and_constrained_rows_keep_their_own_processing(loaded: LoadedBase) -> None:
    """A seeded row samples what it samples alone, and a grammar masks only its own row."""
    bank = AdapterBank(loaded.model)
    batch = DecodeBatch(loaded.model, bank)
    seeded = SamplingParams(max_tokens=10, temperature=1.2, top_p=0.9, seed=7)
    grammar = response_format_grammar({"type": "json_object"})
    constrained = SamplingParams(max_tokens=12, temperature=0, grammar=grammar)

    def requests() -> list[GenerationRequest]:
        return [
            _request(loaded, PROMPTS[0], params=seeded),
            _request(loaded, PROMPTS[1], params=constrained),
            _request(loaded, PROMPTS[2], max_tokens=10),
        ]

    alone = [_alone(batch, request) for request in requests()]
    together = requests()
    with torch.inference_mode():
        batch.admit(together)
        while len(batch):
            batch.step()
    assert [_ids(request) for request in together] == alone
    constrained_text = together[1].outcome.result().text
    assert constrained_text.startswith("{"), constrained_text
    assert not together[2].outcome.result().text.startswith("{")


def test_adapters_are_applied_as_peft_applies_them(
    tiny_chat_models: Path, adapters: list[Path]
) -> None:
    """The routed layers' output against peft's own LoRA layers, for rows of two adapters and the
    base in one batch, and again once the adapters' weights live in a stack that later
    plans are built from (one adapter alone, then both in the other order)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 9, 12, 40, 3, 7, 8, 20]])
    base_dir = tiny_chat_models / "base"
    expected = []
    for path in adapters:
        model = AutoModelForCausalLM.from_pretrained(base_dir)
        with torch.no_grad():
            expected.append(PeftModel.from_pretrained(model, path).eval()(input_ids=ids).logits)
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    bank = AdapterBank(model)
    attached = [read_adapter(path, model) for path in adapters]
    for adapter in attached:
        bank.attach(adapter)
    keys = [adapter.key for adapter in attached]
    by_key = {keys[0]: expected[0][0], keys[1]: expected[1][0], None: plain[0]}

    def check(rows: list[str | None]) -> None:
        bank.route(rows, [key for key in rows if key is not None])
        with torch.no_grad():
            logits = model(input_ids=ids.repeat(len(rows), 1)).logits
        for row, key in enumerate(rows):
            torch.testing.assert_close(logits[row], by_key[key], atol=1e-4, rtol=1e-4)

    check([keys[1], None, keys[0]])
    bank.detach(attached[1])  # the next plans are built from the first's stack
    check([keys[0]])
    bank.attach(read_adapter(adapters[1], model))
    check([keys[0], keys[1]])
    assert not torch.allclose(expected[0], plain, atol=1e-2)


def test_fine_tunes_of_one_base_share_its_weights(
    tiny_chat_models: Path, adapters: list[Path]
) -> None:
    engine = InferenceEngine(1024**3)
    base_dir = tiny_chat_models / "base"
    sources = [ModelSource(f"ft{n}", base_dir, path) for n, path in enumerate(adapters)]
    messages = PROMPTS[1]
    greedy = SamplingParams(max_tokens=6, temperature=0)
    served = engine.cache.get(sources[0])
    weight = served.model.get_submodule("model.layers.0.self_attn.q_proj").weight
    pointer = weight.data_ptr()
    replies = {engine.complete(source, messages, greedy).text for source in sources}

    assert len(replies) == 2
    assert engine.cache.loaded() == [sources[0].cache_key]  # one base for both
    assert engine.cache.get(sources[1]) is served
    assert served.adapters.loaded() == [str(path.resolve()) for path in adapters]
    assert served.model.get_submodule("model.layers.0.self_attn.q_proj").weight is weight
    assert weight.data_ptr() == pointer  # not merged into, not copied


def test_adapters_past_their_budget_are_detached_unless_in_use(
    loaded: LoadedBase, adapters: list[Path]
) -> None:
    bank = AdapterBank(loaded.model)
    reads: list[Path] = []

    def reader(path: Path) -> Any:
        reads.append(path)
        return read_adapter(path, loaded.model)

    size = read_adapter(adapters[0], loaded.model).size_bytes
    cache = AdapterCache(bank, budget_bytes=size + size // 2, reader=reader)
    first, release_first = cache.acquire(adapters[0])
    second, release_second = cache.acquire(adapters[1])
    assert cache.loaded() == [first.key, second.key]  # over budget, but both in use
    release_first()
    assert cache.loaded() == [second.key]  # the oldest, now unused, goes
    release_first()  # once, however often called
    release_second()
    assert cache.loaded() == [second.key]  # within the budget
    again, release_again = cache.acquire(adapters[0])
    assert cache.loaded() == [again.key]
    release_again()
    assert reads == [adapters[0], adapters[1], adapters[0]]


def test_an_adapter_the_engine_cannot_serve_is_refused_by_name(
    loaded: LoadedBase, adapters: list[Path], tmp_path: Path
) -> None:
    from tuneforge.providers.contract import ModelUnavailable

    dora = tmp_path / "dora"
    dora.mkdir()
    config = json.loads((adapters[0] / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    (dora / "adapter_model.safetensors").write_bytes(
        (adapters[0] / "adapter_model.safetensors").read_bytes()
    )
    with pytest.raises(ModelUnavailable, match="use_dora"):
        read_adapter(dora, loaded.model)


def test_importing_the_inference_package_loads_no_torch() -> None:
    """The API process must start in well under 3 s: torch, transformers, peft and
    llguidance load at the first generation, not with these modules."""
    package = Path(__file__).parents[2] / "src" / "tuneforge" / "inference"
    modules = sorted(f"tuneforge.inference.{path.stem}" for path in package.glob("*.py"))
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "heavy = ('torch', 'transformers', 'peft', 'llguidance')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
