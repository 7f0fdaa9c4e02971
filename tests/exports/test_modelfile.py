"""The Modelfile against Ollama's documented syntax: the instructions we emit parse back as
written, and the TEMPLATE renders every conversation as the model's chat template does."""

from __future__ import annotations

import jinja2
import pytest

from tests.exports.ollama_syntax import ModelfileError, parse_modelfile, render_prompt
from tuneforge.errors import InvalidInput
from tuneforge.exports.modelfile import TurnFormat, build_modelfile, quoted, turn_format

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# SmolLM2-135M-Instruct's own template: ChatML with a default system prompt.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_STYLE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content']"
    " + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
GEMMA_STYLE = (
    "{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' "
    "else message['role'] %}{{ '<start_of_turn>' + role + '\n' + message['content'] + "
    "'<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<start_of_turn>model\n' }}{% endif %}"
)
CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi!"}],
    [
        {"role": "user", "content": "Two lines:\nfirst"},
        {"role": "assistant", "content": "second"},
        {"role": "user", "content": 'and "quotes"'},
    ],
]


def jinja_renderer(template: str):  # type: ignore[no-untyped-def]
    compiled = jinja2.Environment().from_string(template)

    def render(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return compiled.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token="<|begin_of_text|>",
            eos_token="</s>",
        )

    return render


@pytest.mark.parametrize("template", [CHATML, SMOLLM2, LLAMA3_STYLE])
def test_the_template_renders_every_conversation_as_the_chat_template(template: str) -> None:
    render = jinja_renderer(template)
    turns = turn_format(render)
    modelfile = parse_modelfile(build_modelfile("model.gguf", turns, "<|im_end|>", None))
    [go_template] = [value for command, value in modelfile if command == "template"]
    system = dict(modelfile).get("system")

    for messages in CONVERSATIONS:
        assert render_prompt(go_template, system, messages) == render(messages, True)


def test_smollm2s_default_system_prompt_becomes_system() -> None:
    turns = turn_format(jinja_renderer(SMOLLM2))

    modelfile = build_modelfile("model.gguf", turns, "<|im_end|>", None)

    assert parse_modelfile(modelfile) == [
        ("model", "./model.gguf"),
        ("template", turns.go_template()),
        ("stop", "<|im_end|>"),
        ("stop", "<|im_start|>"),
        ("system", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
    ]
    assert turns.go_template() == (
        "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
        "{{ end }}<|im_start|>assistant\n"
    )


def test_an_agents_system_prompt_replaces_the_default_and_reads_back_exactly() -> None:
    turns = turn_format(jinja_renderer(SMOLLM2))
    prompt = 'You are "Ada".\n  Keep answers under 20 words.\tNo emojis. '

    commands = parse_modelfile(build_modelfile("model.gguf", turns, "<|im_end|>", prompt))

    assert dict(commands)["system"] == prompt
    conversation = CONVERSATIONS[0]
    expected = jinja_renderer(SMOLLM2)([{"role": "system", "content": prompt}, *conversation], True)
    assert render_prompt(dict(commands)["template"], prompt, conversation) == expected


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "  leading and trailing spaces  ",
        '"quoted"',
        'ends with a quote"',
        '"',
        "two\nlines",
        '\nstarts on a new line, "quoted" over\nlines\n',
        "{{ .Prompt }} # not a comment",
    ],
)
def test_a_quoted_value_reads_back_exactly(value: str) -> None:
    assert parse_modelfile(f"FROM x.gguf\nSYSTEM {quoted(value, what='SYSTEM')}\n") == [
        ("model", "x.gguf"),
        ("system", value),
    ]


@pytest.mark.parametrize("value", ['say """hi"""', "bell\x07", "nul\x00"])
def test_a_value_ollama_cannot_read_back_is_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match="SYSTEM"):
        quoted(value, what="SYSTEM")


def test_the_parser_port_rejects_what_ollama_rejects() -> None:
    with pytest.raises(ModelfileError, match="FROM"):
        parse_modelfile('SYSTEM "no model"\n')
    with pytest.raises(ModelfileError):
        parse_modelfile('FROM x\nSYSTEM """never closed\n')
    with pytest.raises(ModelfileError):
        parse_modelfile("FROM x\nTEMPERATURE 1\n")


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        (MISTRAL, "not wrapped as role markers"),
        (GEMMA_STYLE, "not wrapped as role markers"),
        (
            CHATML.replace(
                "{% for message in messages %}",
                "{% for message in messages if message['role'] != 'system' %}",
            ),
            "not rendered once",
        ),
    ],
)
def test_a_template_of_another_shape_is_refused(template: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason) as refused:
        turn_format(jinja_renderer(template))

    assert refused.value.extra == {"field": "format"}


def test_literal_braces_in_a_template_stay_literal() -> None:
    turns = TurnFormat("{{weird}}", "<t>", ":", "</t>", "<t>assistant:", None)

    assert render_prompt(turns.go_template(), None, CONVERSATIONS[0]) == turns.render(
        CONVERSATIONS[0], None
    )
