"""The kept prompt prefixes: longest match per adapter, a byte budget, earlier turns replaced."""

from __future__ import annotations

import torch

from tuneforge.inference.prefixes import MIN_REUSED_TOKENS, Prefix, PrefixCache


def prefix(tokens: list[int]) -> Prefix:
    """One layer of float32 keys and values: 2 heads of 4, so 64 bytes a token."""
    kv = torch.zeros(1, 2, len(tokens), 4)
    return Prefix(tuple(tokens), [(kv, kv.clone())])


SYSTEM = list(range(100, 120))


def test_the_longest_kept_prefix_of_the_same_adapter_is_reused() -> None:
    cache = PrefixCache(budget_bytes=1 << 20)
    cache.keep(None, prefix([*SYSTEM, 1, 2, 3]))
    cache.keep(None, prefix([*SYSTEM, 1, 2, 9, 9]))
    cache.keep("tuned", prefix([*SYSTEM, 1, 2, 3, 4, 5]))

    length, found = cache.longest(None, [*SYSTEM, 1, 2, 9, 7])
    assert length == len(SYSTEM) + 3 and found is not None and found.tokens[-1] == 9
    assert cache.longest("other", [*SYSTEM, 1]) == (0, None)
    # The whole prompt is kept: its last token is still fed, for the first new token's logits.
    assert cache.longest(None, [*SYSTEM, 1, 2, 3])[0] == len(SYSTEM) + 2
    assert cache.longest(None, [*SYSTEM[: MIN_REUSED_TOKENS - 1], 0, 0]) == (0, None)


def test_a_longer_turn_replaces_the_one_it_extends_and_the_budget_drops_the_oldest() -> None:
    cache = PrefixCache(budget_bytes=64 * 60)  # 60 tokens
    cache.keep(None, prefix([*SYSTEM, 1]))
    cache.keep(None, prefix([*SYSTEM, 1, 2, 3]))  # the conversation's next turn
    assert len(cache) == 1 and cache.covers(None, [*SYSTEM, 1])

    cache.keep(None, prefix([*SYSTEM, 5]))
    cache.longest(None, [*SYSTEM, 1, 2, 3, 4])  # used: now the most recent
    cache.keep(None, prefix([*SYSTEM, 7]))  # 23 + 21 + 21 tokens > 60: the oldest goes
    assert not cache.covers(None, [*SYSTEM, 5])
    assert cache.covers(None, [*SYSTEM, 1, 2, 3]) and cache.covers(None, [*SYSTEM, 7])

    off = PrefixCache(budget_bytes=0)
    off.keep(None, prefix(SYSTEM))
    assert len(off) == 0
