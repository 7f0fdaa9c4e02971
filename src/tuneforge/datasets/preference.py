"""Preference pairs (OpenAI's DPO format) among a dataset's examples.

A line is a preference pair when it has the DPO keys instead of ``messages``
(``checks.is_preference_example``). A dataset holds one kind: its first valid example
decides, and valid examples of the other kind make the report invalid, each named by its
line. The kind is decided when the report is finished rather than line by line, because
a large upload is checked in parallel spans that each see only their own lines.

Stored, a pair is a ``training_examples`` row whose ``messages`` and ``tools`` are the
prompt's and whose ``preferred_output`` and ``non_preferred_output`` are its replies.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneforge.datasets.checks import (
    PREFERENCE_KEYS,
    PREFERENCE_OUTPUTS,
    Issue,
    is_preference_example,
    make_issue,
)
from tuneforge.datasets.tokens import PreferenceTokens
from tuneforge.db.tables.datasets import DatasetKind

# The content columns of a row that keeps its line's text instead.
EMPTY_CONTENT: dict[str, Any] = dict.fromkeys(
    ("messages", "tools", "preferred_output", "non_preferred_output")
)
# What a stored pair's prompt keeps (``parallel_tool_calls`` is warned about and not kept).
STORED_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})


def example_messages(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Every message of a checked example: a pair's prompt, then its two replies."""
    if is_preference_example(payload):
        return [*payload["input"]["messages"], *(payload[name][0] for name in PREFERENCE_OUTPUTS)]
    return payload["messages"]


def example_tools(payload: dict[str, Any]) -> Any:
    if is_preference_example(payload):
        source = payload.get("input")
        return source.get("tools") if isinstance(source, dict) else None
    return payload.get("tools")


def content_columns(payload: dict[str, Any]) -> dict[str, Any] | None:
    """A parsed example as row columns; None for a pair whose columns could not give it back
    as it was (unknown keys, a prompt that is not an object, a reply missing): such a row
    keeps the line's text, as an unreadable line does, and so its error."""
    if not is_preference_example(payload):
        return {
            "messages": payload.get("messages"),
            "tools": payload.get("tools"),
            "preferred_output": None,
            "non_preferred_output": None,
        }
    source = payload.get("input")
    storable = (
        payload.keys() == PREFERENCE_KEYS
        and isinstance(source, dict)
        and source.get("messages") is not None
        and source.keys() <= STORED_INPUT_KEYS
        and all(payload[name] is not None for name in PREFERENCE_OUTPUTS)
    )
    if not storable:
        return None
    return {
        "messages": source["messages"],
        "tools": source.get("tools"),
        "preferred_output": payload["preferred_output"],
        "non_preferred_output": payload["non_preferred_output"],
    }


def stored_payload(
    messages: Any, tools: Any, preferred_output: Any, non_preferred_output: Any
) -> dict[str, Any]:
    """A stored row's example again, as it was parsed."""
    if preferred_output is None and non_preferred_output is None:
        payload: dict[str, Any] = {"messages": messages}
        if tools is not None:
            payload["tools"] = tools
        return payload
    source: dict[str, Any] = {"messages": messages}
    if tools is not None:
        source["tools"] = tools
    return {
        "input": source,
        "preferred_output": preferred_output,
        "non_preferred_output": non_preferred_output,
    }


@dataclass(frozen=True)
class KindVerdict:
    kind: DatasetKind
    strays: list[tuple[int, Issue]]  # (line, error) of each valid example of the other kind
    stray_count: int


class PreferenceTally:
    """Per valid example, whether it is a pair; per valid pair, its token counts."""

    def __init__(self) -> None:
        self.is_pair = array("B")
        self.prompt_tokens = array("I")
        self.preferred_tokens = array("I")
        self.non_preferred_tokens = array("I")

    def add(self, pair: PreferenceTokens | None) -> None:
        """Count one valid example: a pair's tokens, or None for a chat example."""
        self.is_pair.append(pair is not None)
        if pair is not None:
            self.prompt_tokens.append(pair.prompt)
            self.preferred_tokens.append(pair.preferred)
            self.non_preferred_tokens.append(pair.non_preferred)

    def merge(self, later: PreferenceTally) -> None:
        self.is_pair += later.is_pair
        self.prompt_tokens += later.prompt_tokens
        self.preferred_tokens += later.preferred_tokens
        self.non_preferred_tokens += later.non_preferred_tokens

    def verdict(self, lines: np.ndarray, max_samples: int) -> KindVerdict:
        """The dataset's kind (its first valid example's) and the examples that differ."""
        kinds = np.frombuffer(self.is_pair, dtype=np.uint8) if self.is_pair else np.zeros(0)
        if not len(kinds):
            return KindVerdict(DatasetKind.CHAT, [], 0)
        kind = DatasetKind.PREFERENCE if kinds[0] else DatasetKind.CHAT
        other = DatasetKind.CHAT if kinds[0] else DatasetKind.PREFERENCE
        positions = np.flatnonzero(kinds != kinds[0])
        first_line = int(lines[0])
        strays = [
            (
                int(lines[position]),
                make_issue(
                    "mixed_kinds",
                    f"A {other.value} example in a dataset of {kind.value} examples (decided by "
                    f"line {first_line}); a dataset holds one kind",
                ),
            )
            for position in positions[:max_samples].tolist()
        ]
        return KindVerdict(kind, strays, len(positions))
