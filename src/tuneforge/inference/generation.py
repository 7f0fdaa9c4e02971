"""What a generation is asked and answers: sampling parameters, the prompt, the reply, a stream.

The decoding itself runs in batches (``decoding.py``); this module holds what a request
thread does before and after: render and check the prompt, and read a stream of text
deltas. Stop strings end a reply as soon as they appear and are cut from it; a stream holds
back text that might be the start of one, so a client never sees part of a stop string.
Nothing here imports torch: the API process loads it at the first generation.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tuneforge.errors import InvalidInput
from tuneforge.providers.chat_format import chat_for_template

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextIteratorStreamer

    from tuneforge.inference.constrained import Grammar

FinishReason = Literal["stop", "length"]
# For scripts that call transformers' generate() themselves (benchmarks): greedy, and
# neutral values so generate() neither warns about nor applies a model's sampling defaults.
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


def end_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [*ids, tokenizer.eos_token_id]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def _context_length(model: PreTrainedModel) -> int | None:
    context = getattr(model.config, "max_position_embeddings", None)
    return context if isinstance(context, int) else None


def room_for_reply(model: PreTrainedModel, prompt_length: int, max_tokens: int) -> int:
    """``max_tokens``, cut to what fits the model's context after the prompt."""
    context = _context_length(model)
    if context is None:
        return max_tokens
    if prompt_length >= context:
        raise InvalidInput(
            f"messages: the prompt is {prompt_length} tokens; this model's context holds {context}",
            field="messages",
        )
    return min(max_tokens, context - prompt_length)


def check_prompt_characters(model: PreTrainedModel, messages: ChatMessages, tools: Tools) -> None:
    """Refuse a prompt that cannot fit before tokenizing it: a token is rarely more than
    ``MAX_CHARACTERS_PER_TOKEN`` characters, and tokenizing megabytes takes seconds."""
    context = _context_length(model)
    if context is None:
        return
    size = sum(len(str(message.get("content") or "")) for message in messages)
    size += len(json.dumps(tools)) if tools else 0
    if size > context * MAX_CHARACTERS_PER_TOKEN:
        raise InvalidInput(
            f"messages: the prompt is {size} characters; this model's context holds "
            f"{context} tokens",
            field="messages",
        )


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase, messages: ChatMessages, tools: Tools
) -> list[int]:
    """The prompt's token ids, rendered as training renders it."""
    chat, template_tools = chat_for_template(tokenizer, [dict(m) for m in messages], tools)
    encoding = tokenizer.apply_chat_template(
        chat, tools=template_tools, add_generation_prompt=True, return_dict=True
    )
    return [int(token) for token in encoding["input_ids"]]


class CompletionStream:
    """Text deltas of one generation as its batch produces them; ``result`` once they are
    exhausted.

    ``close()`` cancels the generation: its row leaves the batch at the next step, so a
    client that went away frees its place for the next request.
    """

    def __init__(
        self,
        streamer: TextIteratorStreamer,
        stops: tuple[str, ...],
        cancel: threading.Event,
        outcome: Future[Completion],
    ) -> None:
        self._streamer = streamer
        self._stops = stops
        self._cancel = cancel
        self._outcome = outcome
        self._emitted: list[str] = []
        self._hit_stop = False
        self.result: Completion | None = None

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
        outcome = self._outcome.result()  # raises the generation's error
        self.result = Completion(
            text="".join(self._emitted),
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            finish_reason="stop" if self._hit_stop else outcome.finish_reason,
        )
