"""A batch of generations on one base model, advanced one token per step; rows join and leave
between steps (continuous batching).

Rows are left-padded to a shared width, so every row's KV cache ends at the same column and
one forward pass decodes the next token of all of them. Joining rows are prefilled together
(left-padded among themselves), then their cache is padded on the left, or the running
rows' is, and stacked under it; a finished row is cut out and columns left holding only
padding are trimmed. Positions (RoPE) are counted per row from its first real token and the
attention mask hides padding, so a row's tokens do not depend on the rows beside it, up to
float rounding (the tests compare greedy token ids, batched and alone).

Each row keeps its own sampling: greedy, or temperature and top-p drawn with its own
``torch.Generator`` (a ``seed`` reproduces a reply), its stop strings and token limit, and
an optional grammar (``constrained.py``) applied to its row of logits only, so constrained
requests batch with the rest. Only this batch's thread touches the model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuneforge.inference.generation import Completion, FinishReason, SamplingParams, find_stop
from tuneforge.inference.prefixes import Prefix, PrefixCache

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextIteratorStreamer

    from tuneforge.inference.adapters import AdapterBank
    from tuneforge.inference.constrained import ConstrainedDecoding


@dataclass(eq=False)
class GenerationRequest:
    """One reply asked of a base model, prepared in the request's thread; the batch answers
    through ``outcome`` and, for a stream, ``streamer``."""

    prompt_ids: list[int]
    max_tokens: int
    params: SamplingParams
    tokenizer: PreTrainedTokenizerBase
    eos_ids: frozenset[int]
    adapter: str | None = None
    constraint: ConstrainedDecoding | None = None
    streamer: TextIteratorStreamer | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    outcome: Future[Completion] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)
    # Called once, before the outcome is set: whoever sees the answer sees the place freed.
    on_done: Callable[[], None] | None = None

    def finish(self, tokens: list[int], reason: FinishReason) -> None:
        """Answer with ``tokens`` (cut at a stop string); ``reason`` "length" unless it stopped."""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = find_stop(text, self.params.stop)
        self._done()
        self.outcome.set_result(
            Completion(
                text=text if cut is None else text[:cut],
                prompt_tokens=len(self.prompt_ids),
                completion_tokens=len(tokens),
                finish_reason="length" if reason == "length" and cut is None else "stop",
            )
        )

    def fail(self, error: BaseException) -> None:
        if self.outcome.done():
            return
        self._done()
        self.outcome.set_exception(error)

    def _done(self) -> None:
        if self.streamer is not None:
            self.streamer.end()
        if self.on_done is not None:
            self.on_done()


@dataclass(eq=False)
class _Row:
    request: GenerationRequest
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.request.max_tokens - len(self.tokens)


def _generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    import torch

    if params.temperature <= 0:
        return None
    generator = torch.Generator(device=device)
    if params.seed is None:
        generator.seed()
    else:
        generator.manual_seed(params.seed)
    return generator


def _plain_cache(model: PreTrainedModel) -> bool:
    """Whether the model's cache is plain per-layer key/value tensors (full attention)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


def _left_pad(tensor: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
    import torch

    if columns == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = columns
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class DecodeBatch:
    """The rows decoding together on one model and their shared KV cache; one thread drives it.

    ``admit`` prefills joining requests and draws their first token, ``step`` draws one
    more token for every row; both answer the requests that finish.
    """

    def __init__(self, model: PreTrainedModel, bank: AdapterBank, prefix_bytes: int = 0) -> None:
        self._model = model
        self._bank = bank
        self._plain = _plain_cache(model)
        self._prefixes = PrefixCache(prefix_bytes if self._plain else 0)
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None  # (rows, width): 1 for real tokens
        self._next: torch.Tensor | None = None  # (rows, 1): each row's newest token, not cached

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def width(self) -> int:
        return 0 if self._mask is None else int(self._mask.shape[1])

    def soonest_done(self) -> int:
        """Steps until the first row must end (its token limit)."""
        return min((row.remaining for row in self._rows), default=0)

    def padded_tokens(self, joining: Sequence[GenerationRequest]) -> int:
        """Rows times padded width this batch would reach with ``joining`` at worst."""
        prompt = max((len(r.prompt_ids) for r in joining), default=0)
        steps = max([row.remaining for row in self._rows] + [r.max_tokens for r in joining])
        return (len(self._rows) + len(joining)) * (max(self.width, prompt) + steps)

    def can_join(self) -> bool:
        """Rows join a running batch only where the cache is plain per-layer key/value
        tensors (full attention); other caches (sliding windows) wait for an empty batch."""
        return self._plain or self._cache is None

    def admit(self, requests: Sequence[GenerationRequest]) -> None:
        """Prefill ``requests`` and add them; a failure fails them alone."""
        import torch
        from transformers import DynamicCache

        rows = [_Row(r, _generator(r.params, self._model.device)) for r in requests]
        try:
            cache = DynamicCache(config=self._model.config)
            hits = [self._prefixes.longest(r.adapter, r.prompt_ids) for r in requests]
            reused = self._reuse(cache, hits)
            rests = [r.prompt_ids[n:] for r, (n, _) in zip(requests, hits, strict=True)]
            width = max(len(rest) for rest in rests)
            ids = torch.tensor(
                [[0] * (width - len(rest)) + rest for rest in rests], device=self._model.device
            )
            mask = torch.tensor(
                [
                    [0] * (reused - n) + [1] * n + [0] * (width - len(rest)) + [1] * len(rest)
                    for (n, _), rest in zip(hits, rests, strict=True)
                ],
                device=self._model.device,
            )
            fed = mask[:, reused:]
            starts = torch.tensor([[n] for n, _ in hits], device=self._model.device)
            positions = (fed.cumsum(-1) - 1 + starts).masked_fill(fed == 0, 1)
            everyone = [row.request.adapter for row in self._rows + rows]
            logits = self._forward(ids, mask, positions, cache, rows, everyone)
            tokens = self._choose(rows, logits)
        except Exception as exc:
            for request in requests:
                request.fail(exc)
            return
        self._keep_prompts(requests, cache, mask)
        self._merge(cache, mask, tokens)
        self._rows += rows
        self._advance(tokens.view(-1).tolist(), first=len(self._rows) - len(rows))

    def _reuse(self, cache: Any, hits: Sequence[tuple[int, Prefix | None]]) -> int:
        """Put each row's kept prefix into ``cache``, left-padded to the longest; its width."""
        import torch

        reused = max(n for n, _ in hits)
        if not reused:
            return 0
        template = next(prefix for _, prefix in hits if prefix is not None)
        for layer in range(len(template.layers)):
            # A row with no kept prefix takes none of the template's columns: all padding.
            heads = [(prefix or template).head(layer, n) for n, prefix in hits]
            keys = torch.cat([_left_pad(k, reused - k.shape[2], 2) for k, _ in heads])
            values = torch.cat([_left_pad(v, reused - v.shape[2], 2) for _, v in heads])
            cache.update(keys, values, layer)
        return reused

    def _keep_prompts(self, requests: Sequence[GenerationRequest], cache: Any, mask: Any) -> None:
        """Keep each new prompt's keys and values (its real columns) for later requests."""
        if not self._prefixes.budget_bytes:
            return
        for row, request in enumerate(requests):
            if self._prefixes.covers(request.adapter, request.prompt_ids):
                continue
            columns = mask[row].nonzero().view(-1)
            layers = [
                (layer.keys[row : row + 1, :, columns], layer.values[row : row + 1, :, columns])
                for layer in cache.layers
            ]
            self._prefixes.keep(request.adapter, Prefix(tuple(request.prompt_ids), layers))

    def step(self) -> None:
        """One more token for every row; a failure fails the whole batch."""
        import torch

        self._drop_cancelled()
        if not self._rows:
            return
        assert self._mask is not None and self._next is not None
        try:
            mask = torch.cat([self._mask, self._mask.new_ones(len(self._rows), 1)], dim=1)
            positions = mask.sum(-1, keepdim=True) - 1
            adapters = [row.request.adapter for row in self._rows]
            logits = self._forward(self._next, mask, positions, self._cache, self._rows, adapters)
            tokens = self._choose(self._rows, logits)
        except Exception as exc:
            self.fail(exc)
            return
        self._mask, self._next = mask, tokens.view(-1, 1)
        self._advance(tokens.view(-1).tolist(), first=0)

    def fail(self, error: BaseException) -> None:
        for row in self._rows:
            row.request.fail(error)
        self._reset()

    def _reset(self) -> None:
        self._rows, self._cache, self._mask, self._next = [], None, None, None

    def _forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Any,
        rows: Sequence[_Row],
        everyone: Sequence[str | None],
    ) -> torch.Tensor:
        self._bank.route([row.request.adapter for row in rows], everyone)
        output = self._model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return output.logits[:, -1, :].float()

    def _choose(self, rows: Sequence[_Row], logits: torch.Tensor) -> torch.Tensor:
        """Each row's next token: greedy for all at once, then per row what needs more."""
        import torch
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        chosen = logits.argmax(dim=-1)
        for index, row in enumerate(rows):
            params, constraint = row.request.params, row.request.constraint
            if constraint is None and params.temperature <= 0:
                continue
            scores = logits[index : index + 1]
            if constraint is not None:
                done = torch.tensor([row.tokens], dtype=torch.long)
                scores = constraint(done, scores)  # type: ignore[arg-type]
            if row.generator is None:
                chosen[index] = scores.argmax(dim=-1)[0]
                continue
            scores = TemperatureLogitsWarper(params.temperature)(None, scores)  # type: ignore[arg-type]
            if params.top_p < 1:
                scores = TopPLogitsWarper(params.top_p)(None, scores)  # type: ignore[arg-type]
            probs = torch.softmax(scores, dim=-1)
            chosen[index] = torch.multinomial(probs, 1, generator=row.generator)[0, 0]
        return chosen

    def _merge(self, cache: Any, mask: torch.Tensor, tokens: torch.Tensor) -> None:
        """Stack freshly prefilled rows under the running ones, aligned at the right."""
        import torch

        if self._cache is None:
            self._cache, self._mask, self._next = cache, mask, tokens.view(-1, 1)
            return
        assert self._mask is not None and self._next is not None
        width = max(self.width, int(mask.shape[1]))
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            for name in ("keys", "values"):
                running, joining = getattr(old, name), getattr(new, name)
                setattr(
                    old,
                    name,
                    torch.cat(
                        [
                            _left_pad(running, width - running.shape[2], 2),
                            _left_pad(joining, width - joining.shape[2], 2),
                        ]
                    ),
                )
        running_mask = _left_pad(self._mask, width - self.width, 1)
        self._mask = torch.cat([running_mask, _left_pad(mask, width - mask.shape[1], 1)])
        self._next = torch.cat([self._next, tokens.view(-1, 1)])

    def _advance(self, tokens: list[int], *, first: int) -> None:
        """Give rows ``first``.. their new tokens and answer those that are done."""
        import torch

        finished = []
        for row, token in zip(self._rows[first:], tokens, strict=True):
            request = row.request
            row.tokens.append(token)
            if request.streamer is not None:
                request.streamer.put(torch.tensor([token]))
            reason: FinishReason | None = None
            if token in request.eos_ids or request.cancel.is_set() or self._hit_stop(row):
                reason = "stop"
            elif row.remaining <= 0:
                reason = "length"
            if reason is not None:
                request.finish(row.tokens, reason)
                finished.append(row)
        if finished:
            self._remove(finished)

    def _hit_stop(self, row: _Row) -> bool:
        stops = row.request.params.stop
        if not stops:
            return False
        # A token decodes to at least one character, or a byte of one (4 bytes at most).
        window = 4 * max(len(stop) for stop in stops) + 4
        tail = row.request.tokenizer.decode(row.tokens[-window:], skip_special_tokens=True)
        return any(stop in tail for stop in stops)

    def _drop_cancelled(self) -> None:
        cancelled = [row for row in self._rows if row.request.cancel.is_set()]
        for row in cancelled:
            row.request.finish(row.tokens, "stop")
        if cancelled:
            self._remove(cancelled)

    def _remove(self, rows: list[_Row]) -> None:
        import torch

        keep = [index for index, row in enumerate(self._rows) if row not in rows]
        if not keep:
            self._reset()
            return
        assert self._mask is not None and self._next is not None
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask[keep]
        start = int(mask.any(dim=0).nonzero()[0, 0])  # columns before this are padding only
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        self._mask, self._next = mask[:, start:], self._next[index]
        self._rows = [self._rows[i] for i in keep]
