"""LoRA fine-tunes as adapters on one shared base model, applied row by row within a batch.

A fine-tune's LoRA weights are megabytes, its base model hundreds of megabytes, so N
fine-tunes of one base hold one copy of the base and N adapters. peft reads an adapter
(``PeftConfig``, ``load_peft_weights``); each targeted linear layer's forward then also
adds ``x @ A.T @ B.T * scale`` to its output for the rows that use the adapter. peft's own
unmerged layers (``adapter_names=`` for mixed batches) were measured first: they made a
decoding step of SmolLM2 70% slower than the base, this about 9% (docs/decisions.md). Rows
of different adapters share one pair of matmuls per layer: the batch's adapters are stacked
along the rank dimension and a 0/1 mask keeps, for each row, the slice of its own adapter.
Only plain LoRA on linear layers, what the local trainer writes, is served this way;
anything else is refused by name.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.providers.contract import ModelUnavailable

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)
WEIGHT_PREFIX = "base_model.model."
LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")
SPARE_ADAPTERS = 2  # a stacked plan may carry this many adapters no row uses before a rebuild


@dataclass(eq=False)
class LoraAdapter:
    """One fine-tune's weights as the layers use them: per layer ``A`` (r, in), peft's own
    layout, which ``F.linear`` takes without a transpose, and ``B.T * scale`` (r, out);
    ``rank`` is its widest layer."""

    key: str
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]
    rank: int
    size_bytes: int
    tokenizer: PreTrainedTokenizerBase | None = None


def read_adapter(
    path: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None
) -> LoraAdapter:
    """An adapter directory as saved by peft, checked against the base it will be added to."""
    from peft import LoraConfig, PeftConfig
    from peft.utils import load_peft_weights
    from peft.utils.other import get_pattern_key

    config = PeftConfig.from_pretrained(str(path))
    if not isinstance(config, LoraConfig):
        raise ModelUnavailable(f"Adapter {path} is {config.peft_type}; only LoRA is served")
    for feature in ("use_dora", "modules_to_save", "layer_replication", "alora_invocation_tokens"):
        if getattr(config, feature, None):
            raise ModelUnavailable(f"Adapter {path} uses {feature}, which is not served here")
    if config.bias != "none" or getattr(config, "lora_bias", False):
        raise ModelUnavailable(f"Adapter {path} trains biases, which are not served here")
    weights = load_peft_weights(str(path), device="cpu")
    parameter = next(model.parameters())
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in weights:
        name = _layer_name(key, path)
        if name in layers:
            continue
        module = _linear(model, name, path)
        a = weights[f"{WEIGHT_PREFIX}{name}.lora_A.weight"]
        b = weights.get(f"{WEIGHT_PREFIX}{name}.lora_B.weight")
        rank = a.shape[0]
        if b is None or a.shape[1] != module.in_features or b.shape != (module.out_features, rank):
            raise ModelUnavailable(f"Adapter {path} does not fit its base model at {name}")
        alpha = config.alpha_pattern.get(
            get_pattern_key(config.alpha_pattern.keys(), name), config.lora_alpha
        )
        scale = alpha / math.sqrt(rank) if config.use_rslora else alpha / rank
        layers[name] = (
            a.contiguous().to(parameter.device, parameter.dtype),
            (b * scale).t().contiguous().to(parameter.device, parameter.dtype),
        )
    if not layers:
        raise ModelUnavailable(f"Adapter {path} has no LoRA weights")
    size = sum(t.numel() * t.element_size() for pair in layers.values() for t in pair)
    return LoraAdapter(
        key=str(path.resolve()),
        layers=layers,
        rank=max(a.shape[0] for a, _ in layers.values()),
        size_bytes=size,
        tokenizer=tokenizer,
    )


def _layer_name(key: str, path: Path) -> str:
    suffix = next((s for s in LORA_SUFFIXES if key.endswith(s)), None)
    if not key.startswith(WEIGHT_PREFIX) or suffix is None:
        raise ModelUnavailable(f"Adapter {path} has weights other than LoRA's: {key}")
    return key[len(WEIGHT_PREFIX) : -len(suffix)]


def _linear(model: PreTrainedModel, name: str, path: Path) -> Any:
    import torch

    try:
        module = model.get_submodule(name)
    except AttributeError:
        module = None
    if not isinstance(module, torch.nn.Linear):
        raise ModelUnavailable(f"Adapter {path} targets {name}, not a linear layer of its base")
    return module


class _Plan:
    """The layers' weights for a set of adapters, stacked along the rank dimension
    (zero-padded where an adapter skips a layer or has a lower rank). Stacked, an adapter's
    weights become views of the stack, so they are held once."""

    def __init__(self, adapters: Sequence[LoraAdapter]) -> None:
        self.adapters = tuple(adapters)
        self.offsets: dict[str, int] = {}
        width = 0
        for adapter in self.adapters:
            self.offsets[adapter.key] = width
            width += adapter.rank
        self.width = width
        names = dict.fromkeys(name for adapter in self.adapters for name in adapter.layers)
        self._layers = {name: self._stack(name) for name in names}
        if len(self.adapters) > 1:  # the adapters' own tensors were copied into stacks
            _return_freed_memory()

    def layer(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self._layers.get(name)

    def _stack(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        import torch

        parts = [(adapter, adapter.layers.get(name)) for adapter in self.adapters]
        present = [(adapter, pair) for adapter, pair in parts if pair is not None]
        if not present:
            return None
        if len(self.adapters) == 1 and present[0][1][0].shape[0] == self.width:
            return present[0][1]  # one adapter at full rank: its own tensors, no copy
        a_in, b_out = present[0][1][0], present[0][1][1]
        a = a_in.new_zeros(self.width, a_in.shape[1])
        b = b_out.new_zeros(self.width, b_out.shape[1])
        with torch.no_grad():
            for adapter, (a_part, b_part) in present:
                start, rank = self.offsets[adapter.key], a_part.shape[0]
                a[start : start + rank] = a_part
                b[start : start + rank] = b_part
                # The adapter now reads its weights from the stack: one copy in memory,
                # not two (the copy it held is freed, or the older stack once unused).
                adapter.layers[name] = (a[start : start + rank], b[start : start + rank])
        return a, b

    def mask(self, rows: Sequence[str | None], like: torch.Tensor) -> torch.Tensor | None:
        """Per row, 1 over its adapter's slice; None when every row uses the only adapter."""
        if len(self.adapters) == 1 and all(row == self.adapters[0].key for row in rows):
            return None
        mask = like.new_zeros(len(rows), 1, self.width)
        for index, row in enumerate(rows):
            if row is not None:
                start = self.offsets[row]
                mask[index, 0, start : start + self._rank(row)] = 1
        return mask

    def _rank(self, key: str) -> int:
        return next(adapter.rank for adapter in self.adapters if adapter.key == key)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None  # not glibc


def _return_freed_memory() -> None:
    """Give the free pages of the heap back to the system, where glibc holds them: once a
    plan is stacked, the adapters' own tensors (78 MB for four r=16 fine-tunes of SmolLM2)
    are free, but glibc keeps them in the arenas of the threads that read them, between live
    blocks; the process would hold both copies. A few milliseconds, once per stacked plan."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class AdapterBank:
    """The adapters attached to one base model, and which rows of the next forward use which.

    Only the batch thread runs forwards and calls ``route``; request threads attach and
    detach adapters under ``lock``, which the batch thread holds for each step (reentrant:
    a request that ends within a step may detach an adapter from the batch thread).
    """

    def __init__(self, model: PreTrainedModel) -> None:
        self._model = model
        self._adapters: dict[str, LoraAdapter] = {}
        self._routed: set[str] = set()
        self._plan: _Plan | None = None
        self._route: tuple[_Plan, torch.Tensor | None] | None = None
        self.lock = threading.RLock()

    def attach(self, adapter: LoraAdapter) -> None:
        with self.lock:
            self._adapters[adapter.key] = adapter
            for name in adapter.layers.keys() - self._routed:
                module = self._model.get_submodule(name)
                module.forward = self._forward(name, module)
                self._routed.add(name)

    def detach(self, adapter: LoraAdapter) -> None:
        """Drop ``adapter``, unless it was reloaded since (then the bank holds another object)."""
        with self.lock:
            if self._adapters.get(adapter.key) is not adapter:
                return
            del self._adapters[adapter.key]
            if self._plan is not None and adapter.key in self._plan.offsets:
                self._plan = None

    def route(self, rows: Sequence[str | None], members: Iterable[str]) -> None:
        """Use, in the next forward, adapter ``rows[i]`` (None: the base alone) for row i.

        The stacked plan covers ``members`` (the whole batch's adapters, so the prefill of
        joining rows reuses the running batch's plan) and is rebuilt only when one is
        missing or too many unused ones ride along.
        """
        needed = [key for key in dict.fromkeys(members) if key is not None]
        if not any(row is not None for row in rows):
            self._route = None
            return
        plan = self._plan
        if (
            plan is None
            or not set(needed) <= plan.offsets.keys()
            or len(plan.adapters) > len(needed) + SPARE_ADAPTERS
        ):
            plan = self._plan = _Plan([self._adapters[key] for key in needed])
        self._route = (plan, plan.mask(rows, next(self._model.parameters())))

    def _forward(self, name: str, module: torch.nn.Linear) -> Callable[[torch.Tensor], Any]:
        """``module``'s forward plus the routed adapters' update. It replaces the module's
        forward rather than hooking it: a forward hook takes PyTorch's slow call path, which
        made a lone row's decoding step 13% slower than the bare base instead of 9.6% (210
        layers in SmolLM2)."""
        from torch.nn.functional import linear

        def forward(inputs: torch.Tensor) -> torch.Tensor:
            output = linear(inputs, module.weight, module.bias)
            route = self._route
            if route is None:
                return output
            plan, mask = route
            weights = plan.layer(name)
            if weights is None:
                return output
            flat = inputs.reshape(-1, inputs.shape[-1])
            low_rank = linear(flat, weights[0])
            if mask is not None:  # (rows, 1, rank) over (rows, positions, rank)
                low_rank = (low_rank.view(*output.shape[:-1], -1) * mask).view(len(flat), -1)
            output.view(-1, output.shape[-1]).addmm_(low_rank, weights[1])  # one op: add + mm
            return output

        return forward


@dataclass(eq=False)
class _Entry:
    adapter: LoraAdapter
    users: int = 0


@dataclass(eq=False)
class AdapterCache:
    """Adapters attached to one base, least recently used first; past ``budget_bytes`` the
    oldest that no request is using are detached. One load per adapter however many
    requests want it."""

    bank: AdapterBank
    budget_bytes: int
    reader: Callable[[Path], LoraAdapter]
    _entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)
    _load_locks: dict[str, threading.Lock] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def acquire(self, path: Path) -> tuple[LoraAdapter, Callable[[], None]]:
        """The adapter, attached and held until the returned function is called (once)."""
        key = str(path.resolve())
        with self._lock:
            entry = self._use(key)
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        if entry is None:
            with load_lock:
                with self._lock:
                    entry = self._use(key)
                if entry is None:
                    adapter = self.reader(path)
                    self.bank.attach(adapter)
                    with self._lock:
                        entry = self._entries[key] = _Entry(adapter, users=1)
                        unused = self._over_budget()
                    self._detach(unused)
        held = entry
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                held.users -= 1
                unused = self._over_budget()
            self._detach(unused)

        return held.adapter, release

    def _use(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.users += 1
            self._entries.move_to_end(key)
        return entry

    def _over_budget(self) -> list[LoraAdapter]:
        """Forget the oldest unused adapters past the budget; the caller detaches them once
        it no longer holds ``_lock`` (the batch thread may hold the bank's lock meanwhile)."""
        total = sum(entry.adapter.size_bytes for entry in self._entries.values())
        unused = []
        for key, entry in list(self._entries.items()):
            if total <= self.budget_bytes:
                break
            if entry.users == 0:
                del self._entries[key]
                total -= entry.adapter.size_bytes
                unused.append(entry.adapter)
        return unused

    def _detach(self, adapters: list[LoraAdapter]) -> None:
        for adapter in adapters:
            self.bank.detach(adapter)
            logger.info("Detached adapter %s from its base model", adapter.key)
