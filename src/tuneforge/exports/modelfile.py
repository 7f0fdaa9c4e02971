"""Ollama's Modelfile for an exported GGUF: FROM, TEMPLATE, stop PARAMETERs and SYSTEM.

Ollama renders prompts with a Go template, not the model's Jinja chat template, so the
template has to be translated. Rather than parse Jinja, the chat template is rendered on
probe conversations and read as the shape most chat formats share (ChatML, Llama 3's
headers): a header, then every message as ``open + role + infix + content + close``,
then the generation prompt. The Go template is that shape over ``.Messages``; it is only
emitted once its Python mirror renders every probe exactly as the chat template does, so
a template of another shape is refused rather than approximated. A default system prompt
the template inserts becomes the Modelfile's SYSTEM, which Ollama inserts the same way.

Quoting follows Ollama's parser: a triple-quoted value ends at the first line that ends
in three quotes, and there is no escape, so values holding three quotes or characters the
parser drops are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tuneforge.errors import InvalidInput

Messages = list[dict[str, str]]
RenderChat = Callable[[Messages, bool], str]
"""The chat template: (messages, add_generation_prompt) to the prompt text."""

_PROBES = ("tf-probe-zero", "tf-probe-one", "tf-probe-two")
_SYSTEM_PROBE = "tf-probe-system"


@dataclass(frozen=True)
class TurnFormat:
    """A chat template that wraps each message the same way, whatever its role."""

    header: str
    open: str
    infix: str
    close: str
    generation: str
    default_system: str | None

    def render(self, messages: Messages, system: str | None) -> str:
        """What Ollama sends the model: its SYSTEM becomes the first message when the
        conversation has none, then the Go template runs over the messages."""
        if system and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": system}, *messages]
        turns = "".join(
            f"{self.open}{m['role']}{self.infix}{m['content']}{self.close}" for m in messages
        )
        return f"{self.header}{turns}{self.generation}"

    def go_template(self) -> str:
        return (
            f"{_go_text(self.header)}{{{{ range .Messages }}}}{_go_text(self.open)}"
            f"{{{{ .Role }}}}{_go_text(self.infix)}{{{{ .Content }}}}{_go_text(self.close)}"
            f"{{{{ end }}}}{_go_text(self.generation)}"
        )

    def stops(self, eos_token: str | None) -> list[str]:
        """The end of a turn, the start of the next and the end-of-sequence token."""
        found = [self.close.strip(), self.open.strip(), eos_token or ""]
        return [stop for stop in dict.fromkeys(found) if stop]


def _go_text(text: str) -> str:
    """Literal text in a Go template: ``{{`` would open an action."""
    return text.replace("{{", '{{ "{{" }}')


def _unsupported(reason: str) -> InvalidInput:
    return InvalidInput(
        f"format: the model's chat template cannot be translated for Ollama ({reason}); "
        "export the plain GGUF, which carries the template itself",
        field="format",
    )


def _split(text: str, markers: Sequence[str]) -> list[str]:
    """The text around each marker, in order; each must appear exactly once."""
    pieces, rest = [], text
    for marker in markers:
        if text.count(marker) != 1 or marker not in rest:
            raise _unsupported("a message is not rendered once, verbatim")
        before, rest = rest.split(marker)
        pieces.append(before)
    return [*pieces, rest]


def _common_prefix(a: str, b: str) -> str:
    size = 0
    while size < min(len(a), len(b)) and a[size] == b[size]:
        size += 1
    return a[:size]


def turn_format(render: RenderChat) -> TurnFormat:
    """Read the chat template's shape from probe renders; refuse any other shape."""
    zero, one, two = _PROBES
    chat = [
        {"role": "user", "content": zero},
        {"role": "assistant", "content": one},
        {"role": "user", "content": two},
    ]
    plain = render(chat, False)
    before, to_assistant, to_user, close = _split(plain, [zero, one, two])
    joint = _common_prefix(to_assistant, to_user)
    infix = _common_prefix(to_assistant[len(joint) :][::-1], to_user[len(joint) :][::-1])[::-1]
    roles = tuple(turn[len(joint) : len(turn) - len(infix)] for turn in (to_assistant, to_user))
    if roles != ("assistant", "user") or not joint.startswith(close):
        raise _unsupported("messages are not wrapped as role markers around the content")
    opener = joint[len(close) :]
    system_turn = f"{opener}system{infix}"
    with_system = render([{"role": "system", "content": _SYSTEM_PROBE}, chat[0]], False)
    system_prefix = _split(with_system, [_SYSTEM_PROBE])[0]
    if not system_prefix.endswith(system_turn):
        raise _unsupported("the system message is not a turn of its own")
    header = system_prefix[: -len(system_turn)]
    user_turn = f"{opener}user{infix}"
    if not before.endswith(user_turn) or not before.startswith(header):
        raise _unsupported("the conversation does not start with its first message")
    inserted = before[len(header) : -len(user_turn)]
    default_system = None
    if inserted:
        if not (inserted.startswith(system_turn) and inserted.endswith(close)):
            raise _unsupported("it inserts text that is not a system message")
        default_system = inserted[len(system_turn) : len(inserted) - len(close)]
    prompted = render(chat, True)
    if not prompted.startswith(plain):
        raise _unsupported("the generation prompt is not appended at the end")
    found = TurnFormat(header, opener, infix, close, prompted[len(plain) :], default_system)
    _verify(found, render)
    return found


def _verify(found: TurnFormat, render: RenderChat) -> None:
    """Every probe conversation renders the same through the chat template and the mirror."""
    system = {"role": "system", "content": "Be brief.\nAnswer in English."}
    user = {"role": "user", "content": "What is\ntwo plus two?"}
    reply = {"role": "assistant", "content": "Four."}
    again = {"role": "user", "content": "And three?"}
    for messages in ([user], [system, user], [user, reply, again], [system, user, reply, again]):
        if render(messages, True) != found.render(messages, found.default_system):
            raise _unsupported("the translated template renders a conversation differently")


def quoted(value: str, *, what: str) -> str:
    """A Modelfile value in the quotes Ollama's parser reads back exactly."""
    if '"""' in value:
        raise InvalidInput(f'{what}: three double quotes (""") cannot be written in a Modelfile')
    if any(not (char.isprintable() or char in "\n\t") for char in value):
        raise InvalidInput(f"{what}: control characters are dropped by Ollama's Modelfile parser")
    if "\n" not in value and '"' not in value:
        return f'"{value}"'
    return f'"""{value}"""'


def build_modelfile(
    gguf_name: str, turns: TurnFormat, eos_token: str | None, system: str | None
) -> str:
    """The Modelfile beside ``gguf_name``; ``system`` (an agent's prompt) else the chat
    template's default system prompt becomes SYSTEM."""
    lines = [
        f"FROM ./{gguf_name}",
        f"TEMPLATE {quoted(turns.go_template(), what='TEMPLATE')}",
        *(f"PARAMETER stop {quoted(stop, what='stop')}" for stop in turns.stops(eos_token)),
    ]
    prompt = system if system is not None else turns.default_system
    if prompt:
        lines.append(f"SYSTEM {quoted(prompt, what='SYSTEM')}")
    return "\n".join(lines) + "\n"
