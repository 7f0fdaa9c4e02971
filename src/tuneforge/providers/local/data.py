"""Chat examples to training tensors: the model's chat template, assistant-only targets, packing.

Targets: the conversation is rendered with the model's own chat template, and only the
text of assistant turns (with ``weight`` other than 0) is learned, including the
template's end-of-turn marker so the model learns to stop. Each turn's span is found by
rendering the conversation up to the turn with and without it; the text is then
tokenized segment by segment so every token is wholly inside or outside a span, and the
prompt part is tokenized exactly as inference will tokenize it. Tools and tool calls
render through ``providers/chat_format.py``, as at inference, so a call is learned as the
tokens the model will emit to make it.

Packing (see ``plan_micro_batches``): a step's examples are laid, longest first, into
rows of up to ``micro_batch_tokens`` (or the longest example, if longer), first fit, so
rows come out nearly full and no token is padding. Each row is one forward pass; its
examples' position ids restart at 0 and attention stays within each example (see
``modeling.py``), so a packed example sees exactly what it would see alone (the tests
compare logits).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from tuneforge.providers.chat_format import chat_for_template

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    targets: list[int]  # next-token targets; IGNORE_INDEX where nothing is learned
    truncated: bool

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def n_targets(self) -> int:
        return sum(1 for t in self.targets if t != IGNORE_INDEX)


@dataclass(frozen=True)
class EncodedDataset:
    examples: list[EncodedExample]
    truncated: int  # examples cut at max_seq_length (kept if a target survived)
    dropped: int  # examples with nothing left to learn after truncation

    @property
    def total_tokens(self) -> int:
        return sum(e.length for e in self.examples)


@dataclass(frozen=True)
class PackedBatch:
    """One row of examples back to back: tensors of shape [1, tokens]."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    segment_lengths: list[int]

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())


def read_chat_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def encode_dataset(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[dict[str, Any]], max_seq_length: int
) -> EncodedDataset:
    encoded, truncated, dropped = [], 0, 0
    for example in examples:
        item = encode_chat_example(tokenizer, example, max_seq_length)
        truncated += item.truncated
        if item.n_targets == 0:
            dropped += 1
        else:
            encoded.append(item)
    return EncodedDataset(encoded, truncated, dropped)


def encode_chat_example(
    tokenizer: PreTrainedTokenizerBase, example: dict[str, Any], max_seq_length: int
) -> EncodedExample:
    chat, tools = chat_for_template(tokenizer, example["messages"], example.get("tools"))
    trained = [m["role"] == "assistant" and m.get("weight", 1) != 0 for m in chat]
    messages = [{k: v for k, v in m.items() if k != "weight"} for m in chat]
    text = _render(tokenizer, messages, tools, generation_prompt=False)
    spans = _assistant_spans(tokenizer, messages, trained, tools, text)
    segments, learn = [], []
    cursor = 0
    for start, end in spans:
        segments += [text[cursor:start], text[start:end]]
        learn += [False, True]
        cursor = end
    segments.append(text[cursor:])
    learn.append(False)
    kept = [(segment, flag) for segment, flag in zip(segments, learn, strict=True) if segment]
    pieces = tokenizer([segment for segment, _ in kept], add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    mask: list[bool] = []
    for piece, (_, is_learned) in zip(pieces, kept, strict=True):
        ids += piece
        mask += [is_learned] * len(piece)
    truncated = len(ids) > max_seq_length
    ids, mask = ids[:max_seq_length], mask[:max_seq_length]
    targets = [ids[j + 1] if mask[j + 1] else IGNORE_INDEX for j in range(len(ids) - 1)]
    return EncodedExample(ids, [*targets, IGNORE_INDEX], truncated)


def _render(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    *,
    generation_prompt: bool,
) -> str:
    return tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt
    )


def _assistant_spans(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    trained: list[bool],
    tools: list[dict[str, Any]] | None,
    text: str,
) -> list[tuple[int, int]]:
    """Character spans of the trained assistant turns in ``text``, in order."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    for index, message in enumerate(messages):
        if not trained[index]:
            continue
        span = None
        if index > 0:
            prompt = _render(tokenizer, messages[:index], tools, generation_prompt=True)
            upto = _render(tokenizer, messages[: index + 1], tools, generation_prompt=False)
            if text.startswith(upto) and upto.startswith(prompt) and len(prompt) >= cursor:
                span = (len(prompt), len(upto.rstrip()))
        if span is None:
            # Templates that rewrite earlier turns: fall back to the content and end marker.
            start = text.find(message["content"], cursor)
            if start < 0:
                continue
            end = start + len(message["content"])
            eos = tokenizer.eos_token or ""
            if eos and text.startswith(eos, end):
                end += len(eos)
            span = (start, end)
        if span[1] > span[0]:
            spans.append(span)
            cursor = span[1]
    return spans


def plan_micro_batches(
    lengths: Sequence[int], indices: Sequence[int], token_budget: int
) -> list[list[int]]:
    """Rows of example indices, each at most ``token_budget`` tokens (or the longest example).

    First-fit decreasing; every index appears exactly once.
    """
    capacity = max([token_budget, *(lengths[i] for i in indices)])
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(indices, key=lambda i: (-lengths[i], i)):
        size = lengths[index]
        for row, space in enumerate(free):
            if size <= space:
                rows[row].append(index)
                free[row] -= size
                break
        else:
            rows.append([index])
            free.append(capacity - size)
    return rows


def pack_examples(examples: Sequence[EncodedExample], row: list[int]) -> PackedBatch:
    """The examples of ``row`` as one packed sequence with restarting position ids."""
    chosen = [examples[i] for i in row]
    return PackedBatch(
        input_ids=torch.tensor([[t for e in chosen for t in e.input_ids]]),
        position_ids=torch.tensor([[p for e in chosen for p in range(e.length)]]),
        targets=torch.tensor([[t for e in chosen for t in e.targets]]),
        segment_lengths=[e.length for e in chosen],
    )
