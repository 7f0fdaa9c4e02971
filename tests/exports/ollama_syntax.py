"""Ollama's side of a Modelfile, re-implemented to check ours: its parser and its prompt.

``parse_modelfile`` follows ``parser/parser.go`` (``ParseFile``) state by state: a value
ends at a newline once it is unquoted or completely quoted, a triple-quoted value at the
first line ending in three quotes, and runes that are not printable are dropped.
``render_prompt`` follows ``template/template.go``: the model's SYSTEM becomes the first
message when a chat has none, consecutive messages of one role are merged, and the
TEMPLATE runs over ``.Messages``. It knows the Go template actions our TEMPLATE uses
(``range .Messages``, ``end``, ``.Role``, ``.Content``, string constants, trim markers)
and fails on any other, so a TEMPLATE using more than it checks cannot pass.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

COMMANDS = {"from", "license", "template", "system", "adapter", "draft", "renderer", "parser"}
COMMANDS |= {"parameter", "message", "requires"}


class ModelfileError(ValueError):
    pass


class _State(enum.Enum):
    NIL = enum.auto()
    NAME = enum.auto()
    VALUE = enum.auto()
    PARAMETER = enum.auto()
    MESSAGE = enum.auto()
    COMMENT = enum.auto()


def _space(r: str) -> bool:
    return r in " \t"


def _newline(r: str) -> bool:
    return r in "\r\n"


def _alpha(r: str) -> bool:
    return r.isascii() and r.isalpha()


def _next(r: str, state: _State) -> tuple[_State, str]:
    """``parseRuneForState``: the next state and the rune to keep ("" for none)."""
    if state is _State.NIL:
        if r == "#":
            return _State.COMMENT, ""
        if _space(r) or _newline(r):
            return _State.NIL, ""
        return _State.NAME, r
    if state is _State.NAME:
        if _alpha(r):
            return _State.NAME, r
        if _space(r):
            return _State.VALUE, ""
        raise ModelfileError("command must be one of the known commands")
    if state is _State.VALUE:
        if _newline(r) or _space(r):
            return _State.NIL, r
        return _State.VALUE, r
    if state in (_State.PARAMETER, _State.MESSAGE):
        if _alpha(r) or (state is _State.PARAMETER and (r.isdigit() or r == "_")):
            return state, r
        if _space(r):
            return _State.VALUE, ""
        raise ModelfileError("unexpected EOF")
    if _newline(r):
        return _State.NIL, ""
    return _State.COMMENT, ""


def _unquote(text: str) -> tuple[str, bool]:
    if text.startswith('"""'):
        if len(text) >= 6 and text.endswith('"""'):
            return text[3:-3], True
        return "", False
    if text.startswith('"'):
        if len(text) >= 2 and text.endswith('"'):
            return text[1:-1], True
        return "", False
    return text, True


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, argument) pairs as Ollama reads them; FROM is named "model"."""
    commands: list[tuple[str, str]] = []
    state, buffer, name, role = _State.NIL, "", "", ""
    for char in text:
        following, kept = _next(char, state)
        if following is not state:
            if state is _State.NAME:
                command = buffer.lower()
                if command not in COMMANDS:
                    raise ModelfileError(f"unknown command {buffer!r}")
                if command == "parameter":
                    following = _State.PARAMETER
                elif command == "message":
                    following = _State.MESSAGE
                name = "model" if command == "from" else command
            elif state is _State.PARAMETER:
                name = buffer
            elif state is _State.MESSAGE:
                role = buffer
            elif state is _State.VALUE:
                value, ok = _unquote(buffer.strip())
                if not ok or _space(kept):
                    buffer += kept
                    continue
                commands.append((name, f"{role}: {value}" if role else value))
                role = ""
            buffer, state = "", following
        if kept.isprintable() and kept:
            buffer += kept
    if state is _State.VALUE:
        value, ok = _unquote(buffer.strip())
        if not ok:
            raise ModelfileError("unexpected EOF in a quoted value")
        commands.append((name, value))
    elif state not in (_State.NIL, _State.COMMENT):
        raise ModelfileError("unexpected EOF")
    if not any(command == "model" for command, _ in commands):
        raise ModelfileError("no FROM line")
    return commands


_ACTION = re.compile(r"\{\{(- )?\s*(.*?)\s*( -)?\}\}", re.DOTALL)


@dataclass
class _Range:
    body: list[Any] = field(default_factory=list)


def _parse_template(template: str) -> list[Any]:
    root: list[Any] = []
    stack = [root]
    position = 0
    pending_trim = False
    for match in _ACTION.finditer(template):
        text = template[position : match.start()]
        if pending_trim:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        if text:
            stack[-1].append(text)
        action = match.group(2)
        if action == "range .Messages":
            block = _Range()
            stack[-1].append(block)
            stack.append(block.body)
        elif action == "end":
            stack.pop()
        elif action in (".Role", ".Content"):
            stack[-1].append(action)
        elif re.fullmatch(r'"[^"\\]*"', action):
            stack[-1].append(action[1:-1])
        else:
            raise ModelfileError(f"template action {action!r} is not checked here")
        pending_trim = bool(match.group(3))
        position = match.end()
    text = template[position:]
    root.append(text.lstrip() if pending_trim else text)
    if len(stack) != 1:
        raise ModelfileError("unclosed range")
    return root


def _run(nodes: list[Any], messages: list[dict[str, str]], dot: dict[str, str] | None) -> str:
    out = []
    for node in nodes:
        if isinstance(node, _Range):
            out.extend(_run(node.body, messages, message) for message in messages)
        elif node in (".Role", ".Content"):
            if dot is None:
                raise ModelfileError(f"{node} outside range .Messages")
            out.append(dot[node[1:].lower()])
        else:
            out.append(node)
    return "".join(out)


def render_prompt(template: str, system: str | None, messages: list[dict[str, str]]) -> str:
    """The prompt Ollama's chat sends the model for ``messages``."""
    if system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system}, *messages]
    collated: list[dict[str, str]] = []
    for message in messages:
        if collated and collated[-1]["role"] == message["role"]:
            collated[-1] = {
                **collated[-1],
                "content": f"{collated[-1]['content']}\n\n{message['content']}",
            }
        else:
            collated.append(dict(message))
    return _run(_parse_template(template), collated, None)
