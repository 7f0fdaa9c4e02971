"""Generating one chat reply with a loaded model, whole or as a stream of text deltas.

A grammar (``constrained.py``) masks what a structured reply may not contain before any
sampling. Sampling draws from a per-request ``torch.Generator`` instead of torch's global one, so a
``seed`` reproduces its output even while other models generate in other threads. Stop
strings end generation as soon as they appear and are cut from the reply; a stream holds
back text that might be the start of one, so a client never sees part of a stop string.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TextIteratorStreamer,
    TopPLogitsWarper,
)

from tuneforge.errors import InvalidInput
from tuneforge.inference.constrained import ConstrainedDecoding, Grammar
from tuneforge.providers.chat_format import chat_for_template

FinishReason = Literal["stop", "length"]
# generate() decodes greedily; sampling happens in our own processors. Neutral values for
# the rest keep generate() from warning about (or applying) a model's own sampling defaults.
NEUTRAL_SAMPLING: dict[str, Any] = {
    "do_sample": False,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 50,
}
ChatMessages = Sequence[Mapping[str, Any]]
MAX_CHARACTERS_PER_TOKEN = 16
Tools = list[dict[str, Any]] | None


@dataclass(frozen=True)
class SamplingParams:
    """``temperature == 0`` means greedy; ``stop`` strings end the reply and are cut from it."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    grammar: Grammar | None = None  # constrains every token (structured outputs, strict tools)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


class _SampleWithGenerator(LogitsProcessor):
    """Draws the next token with the request's generator and leaves greedy only that choice."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float(), dim=-1)
        choice = torch.multinomial(probs, num_samples=1, generator=self.generator)
        only_choice = torch.full_like(scores, float("-inf"))
        return only_choice.scatter_(1, choice, 0.0)  # type: ignore[return-value]


class _StopWhen(StoppingCriteria):
    """Ends generation once a stop string appears in the reply or the caller cancels."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        stops: tuple[str, ...],
        prompt_length: int,
        cancel: threading.Event,
    ) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_length = prompt_length
        self.cancel = cancel
        # A token decodes to at least one character, or a byte of one (4 bytes at most).
        self.window = 4 * max((len(stop) for stop in stops), default=0) + 4

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        done = self.cancel.is_set()
        if not done and self.stops:
            start = max(self.prompt_length, input_ids.shape[1] - self.window)
            tail = self.tokenizer.decode(input_ids[0, start:], skip_special_tokens=True)
            done = any(stop in tail for stop in self.stops)
        batch = input_ids.shape[0]
        return torch.full((batch,), done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop string in ``text``."""
    found = [index for stop in stops if (index := text.find(stop)) >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters might be the start of a stop string, so must wait."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest


def _end_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [*ids, tokenizer.eos_token_id]
    return list(dict.fromkeys(i for i in ids if i is not None))


def _pad_token_id(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, eos_ids: list[int]
) -> int | None:
    """Padding is never used for one sequence; setting it only keeps generate() quiet."""
    for candidate in (model.generation_config.pad_token_id, tokenizer.pad_token_id):
        if candidate is not None:
            return int(candidate)
    return eos_ids[0] if eos_ids else None


def _room_for_reply(model: PreTrainedModel, prompt_length: int, max_tokens: int) -> int:
    """``max_tokens``, cut to what fits the model's context after the prompt."""
    context = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(context, int):
        return max_tokens
    if prompt_length >= context:
        raise InvalidInput(
            f"messages: the prompt is {prompt_length} tokens; this model's context holds {context}",
            field="messages",
        )
    return min(max_tokens, context - prompt_length)


def _check_prompt_characters(model: PreTrainedModel, messages: ChatMessages, tools: Tools) -> None:
    """Refuse a prompt that cannot fit before tokenizing it: a token is rarely more than
    ``MAX_CHARACTERS_PER_TOKEN`` characters, and tokenizing megabytes takes seconds."""
    context = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(context, int):
        return
    size = sum(len(str(message.get("content") or "")) for message in messages)
    size += len(json.dumps(tools)) if tools else 0
    if size > context * MAX_CHARACTERS_PER_TOKEN:
        raise InvalidInput(
            f"messages: the prompt is {size} characters; this model's context holds "
            f"{context} tokens",
            field="messages",
        )


def _prompt_encoding(
    tokenizer: PreTrainedTokenizerBase, messages: ChatMessages, tools: Tools
) -> dict[str, list[int]]:
    """The prompt's token ids (and attention mask), rendered as training renders it."""
    chat, template_tools = chat_for_template(tokenizer, [dict(m) for m in messages], tools)
    encoding = tokenizer.apply_chat_template(
        chat, tools=template_tools, add_generation_prompt=True, return_dict=True
    )
    return {key: list(encoding[key]) for key in ("input_ids", "attention_mask")}


def generate_reply(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: ChatMessages,
    params: SamplingParams,
    *,
    cancel: threading.Event,
    streamer: TextIteratorStreamer | None = None,
    tools: Tools = None,
) -> Completion:
    """One reply to ``messages`` (and ``tools``), rendered as training renders them; one
    thread at a time."""
    _check_prompt_characters(model, messages, tools)
    inputs = {
        key: torch.tensor([value], device=model.device)
        for key, value in _prompt_encoding(tokenizer, messages, tools).items()
    }
    prompt_length = int(inputs["input_ids"].shape[1])
    max_tokens = _room_for_reply(model, prompt_length, params.max_tokens)
    eos_ids = _end_token_ids(model, tokenizer)
    processors = LogitsProcessorList()
    if params.grammar is not None:
        processors.append(
            ConstrainedDecoding(
                tokenizer, params.grammar, prompt_length=prompt_length, eos_ids=eos_ids
            )
        )
    if params.temperature > 0:
        generator = torch.Generator(device=model.device)
        if params.seed is None:
            generator.seed()
        else:
            generator.manual_seed(params.seed)
        processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_p < 1:
            processors.append(TopPLogitsWarper(params.top_p))
        processors.append(_SampleWithGenerator(generator))
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            max_new_tokens=max_tokens,
            **NEUTRAL_SAMPLING,
            eos_token_id=eos_ids,
            pad_token_id=_pad_token_id(model, tokenizer, eos_ids),
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList(
                [_StopWhen(tokenizer, params.stop, prompt_length, cancel)]
            ),
            streamer=streamer,
        )
    new_tokens = output[0, prompt_length:].tolist()
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    cut = find_stop(text, params.stop)
    ended = cut is not None or (bool(new_tokens) and new_tokens[-1] in eos_ids)
    return Completion(
        text=text if cut is None else text[:cut],
        prompt_tokens=prompt_length,
        completion_tokens=len(new_tokens),
        finish_reason="stop" if ended or len(new_tokens) < max_tokens else "length",
    )


def generate_greedy_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[ChatMessages],
    max_tokens: int,
    tools: Sequence[Tools] | None = None,
) -> list[Completion]:
    """Greedy replies to several conversations in one left-padded batch (for evaluations).

    Each row stops at its own end-of-turn token; rows that finish early are padded until
    the longest is done, so a batch costs its longest reply.
    """
    tool_lists = tools or [None] * len(conversations)
    prompts = [
        _prompt_encoding(tokenizer, messages, tools_of)["input_ids"]
        for messages, tools_of in zip(conversations, tool_lists, strict=True)
    ]
    eos_ids = _end_token_ids(model, tokenizer)
    pad_id = _pad_token_id(model, tokenizer, eos_ids) or 0
    lengths = [len(ids) for ids in prompts]
    width = max(lengths)
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in prompts])
    attention_mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
    inputs = {
        "input_ids": input_ids.to(model.device),
        "attention_mask": attention_mask.to(model.device),
    }
    room = _room_for_reply(model, width, max_tokens)
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            max_new_tokens=room,
            **NEUTRAL_SAMPLING,
            eos_token_id=eos_ids,
            pad_token_id=pad_id,
        )
    completions = []
    for row, prompt_length in zip(output[:, width:].tolist(), lengths, strict=True):
        end = next((i for i, token in enumerate(row) if token in eos_ids), None)
        new_tokens = row if end is None else row[: end + 1]
        completions.append(
            Completion(
                text=tokenizer.decode(new_tokens, skip_special_tokens=True),
                prompt_tokens=int(prompt_length),
                completion_tokens=len(new_tokens),
                finish_reason="stop" if end is not None else "length",
            )
        )
    return completions


class CompletionStream:
    """Text deltas as a generation thread produces them; ``result`` once they are exhausted.

    ``close()`` stops the generation: a client that went away should not keep the model busy.
    """

    def __init__(self, streamer: TextIteratorStreamer, stops: tuple[str, ...]) -> None:
        self._streamer = streamer
        self._stops = stops
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._outcome: Completion | BaseException | None = None
        self._emitted: list[str] = []
        self._hit_stop = False
        self.result: Completion | None = None

    def start(self, run: Callable[[threading.Event], Completion]) -> CompletionStream:
        def target() -> None:
            try:
                self._outcome = run(self._cancel)
            except BaseException as exc:
                self._outcome = exc
                self._streamer.text_queue.put(self._streamer.stop_signal)

        self._thread = threading.Thread(target=target, name="tuneforge-generate", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._cancel.set()

    def __iter__(self) -> Iterator[str]:
        pending = ""
        for piece in self._streamer:
            pending += piece
            cut = find_stop(pending, self._stops)
            if cut is not None:
                self._hit_stop = True
                self._cancel.set()
                yield from self._emit(pending[:cut])
                break
            ready = len(pending) - _held_back(pending, self._stops)
            yield from self._emit(pending[:ready])
            pending = pending[ready:]
        else:
            yield from self._emit(pending)
        self._finish()

    def _emit(self, text: str) -> Iterator[str]:
        if text:
            self._emitted.append(text)
            yield text

    def _finish(self) -> None:
        assert self._thread is not None, "start() was not called"
        self._thread.join()
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        assert self._outcome is not None
        self.result = Completion(
            text="".join(self._emitted),
            prompt_tokens=self._outcome.prompt_tokens,
            completion_tokens=self._outcome.completion_tokens,
            finish_reason="stop" if self._hit_stop else self._outcome.finish_reason,
        )
