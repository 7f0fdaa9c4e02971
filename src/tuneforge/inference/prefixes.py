"""Prompts already prefilled, kept so that a new request prefills only what is new in its own.

Requests to one model mostly begin alike: the chat template, an agent's system prompt, its
tool definitions, the earlier turns of a conversation. After each prefill the batch keeps
every row's prompt keys and values, per adapter (a fine-tune changes them), dropping the
least recently used past a byte budget. A joining request reuses the longest common prefix
with any kept prompt of its adapter. Positions count from each row's first token, so a
prefix's keys and values do not depend on the batch it was computed in, up to float
rounding. Only the batch's thread uses it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MIN_REUSED_TOKENS = 8  # below this the bookkeeping costs about what it saves


@dataclass(eq=False)
class Prefix:
    """One prompt's keys and values: per layer, (1, heads, tokens, head dim) each."""

    tokens: tuple[int, ...]
    layers: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def size_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for pair in self.layers for t in pair)

    def head(self, layer: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of the first ``tokens`` tokens at ``layer``."""
        keys, values = self.layers[layer]
        return keys[:, :, :tokens], values[:, :, :tokens]


def _common_length(kept: Sequence[int], prompt: Sequence[int]) -> int:
    length = 0
    for a, b in zip(kept, prompt, strict=False):
        if a != b:
            break
        length += 1
    return length


class PrefixCache:
    """Kept prompts by (adapter, tokens), least recently used first, within ``budget_bytes``."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[tuple[str | None, tuple[int, ...]], Prefix] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, adapter: str | None, prompt: Sequence[int]) -> tuple[int, Prefix | None]:
        """How many leading tokens of ``prompt`` a kept prompt covers, and that prompt; at
        least one token is left to prefill, since its logits choose the first new token."""
        best, found = 0, None
        for (owner, tokens), entry in self._entries.items():
            if owner == adapter:
                length = min(_common_length(tokens, prompt), len(prompt) - 1)
                if length > best:
                    best, found = length, entry
        if found is None or best < MIN_REUSED_TOKENS:
            return 0, None
        self._entries.move_to_end((adapter, found.tokens))
        return best, found

    def keep(self, adapter: str | None, prefix: Prefix) -> None:
        """Keep ``prefix``; a kept prompt it extends (the conversation's earlier turn) goes."""
        if self.budget_bytes <= 0 or prefix.size_bytes > self.budget_bytes:
            return
        for tokens in [t for owner, t in self._entries if owner == adapter]:
            if prefix.tokens[: len(tokens)] == tokens:
                self._bytes -= self._entries.pop((adapter, tokens)).size_bytes
        self._entries[(adapter, prefix.tokens)] = prefix
        self._bytes += prefix.size_bytes
        while self._bytes > self.budget_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.size_bytes

    def covers(self, adapter: str | None, prompt: Sequence[int]) -> bool:
        """Whether ``prompt`` is kept already (or a longer prompt it begins)."""
        tokens = tuple(prompt)
        return any(
            owner == adapter and kept[: len(tokens)] == tokens for owner, kept in self._entries
        )
