"""What an export answers, loaded by plain transformers with no TuneForge code, against
what TuneForge serves for the same prompt (``POST /v1/chat/completions``, greedy).

The merged directory and the f16 GGUF (read by transformers' own GGUF reader) must give
exactly the served replies; the q8_0 GGUF must agree on the top-1 token at
``Q8_0_MIN_AGREEMENT`` of the positions of the float32 fine-tune's greedy replies. The
Ollama bundle's Modelfile must parse as Ollama reads it and its TEMPLATE render the chat
template's prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from tests.exports.conftest import RunExport, download, unpack
from tests.exports.ollama_syntax import parse_modelfile, render_prompt
from tests.fixtures.api import Account
from tests.fixtures.factories import Factories
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.exports.writers import load_merged

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("installed_tiny_model")]

REPLY_TOKENS = 24
PROMPTS = [
    [{"role": "user", "content": "Say something about stars."}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "How can I help you today?"},
    ],
    [
        {"role": "user", "content": "The quick brown fox"},
        {"role": "assistant", "content": "jumps over the lazy dog."},
        {"role": "user", "content": "And then?"},
    ],
]
Q8_0_MIN_AGREEMENT = 0.9
"""Measured 0.958 here (69 of 72 positions; f16: 72 of 72). The tiny model's random weights
have closer calls than a trained model's (SmolLM2: see benchmarks/export_formats.py), so the
bar leaves room for one more flip."""


def served(client: TestClient, account: Account, model_id: str, messages: list[Any]) -> str:
    body = {"model": model_id, "messages": messages, "temperature": 0, "max_tokens": REPLY_TOKENS}
    response = client.post("/v1/chat/completions", json=body, headers=account.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def reply(model: PreTrainedModel, tokenizer: Any, messages: list[Any]) -> str:
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=REPLY_TOKENS, do_sample=False)
    return str(
        tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    )


def load_gguf(folder: Path, name: str) -> tuple[PreTrainedModel, Any]:
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(folder, gguf_file=name)


def test_the_merged_model_answers_exactly_as_tuneforge_serves_it(
    client: TestClient,
    account: Account,
    fine_tuned: FineTunedModel,
    run_export: RunExport,
    tmp_path: Path,
) -> None:
    export = run_export(fine_tuned.id, format="merged")
    folder = unpack(download(client, account, export), tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        path.name for path in folder.iterdir()
    }

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)

    for messages in PROMPTS:
        assert reply(model, tokenizer, messages) == served(client, account, fine_tuned.id, messages)


def test_the_f16_gguf_answers_exactly_as_tuneforge_serves_it(
    client: TestClient,
    account: Account,
    fine_tuned: FineTunedModel,
    run_export: RunExport,
    installed_tiny_model: Path,
    tmp_path: Path,
) -> None:
    export = run_export(fine_tuned.id, format="gguf", quantization="f16")
    assert export["file_name"] == "ft-tiny-support-gguf-f16.gguf"
    (tmp_path / export["file_name"]).write_bytes(download(client, account, export))

    model, tokenizer = load_gguf(tmp_path, export["file_name"])

    assert (
        tokenizer.chat_template == AutoTokenizer.from_pretrained(installed_tiny_model).chat_template
    )
    for messages in PROMPTS:
        assert reply(model, tokenizer, messages) == served(client, account, fine_tuned.id, messages)


def top1_agreement(reference: PreTrainedModel, tokenizer: Any, exported: PreTrainedModel) -> float:
    """Teacher-forced over the reference model's greedy replies: how often both models'
    most likely next token is the same."""
    agree = total = 0
    for messages in PROMPTS:
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        start = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            sequence = reference.generate(**inputs, max_new_tokens=REPLY_TOKENS, do_sample=False)
            expected = reference(sequence).logits[0, start - 1 : -1].argmax(-1)
            actual = exported(sequence).logits[0, start - 1 : -1].argmax(-1)
        agree += int((expected == actual).sum())
        total += expected.numel()
    return agree / total


def test_the_q8_0_gguf_agrees_on_the_top_token(
    client: TestClient,
    account: Account,
    fine_tuned: FineTunedModel,
    run_export: RunExport,
    installed_tiny_model: Path,
    tiny_adapter_dir: Path,
    tmp_path: Path,
) -> None:
    export = run_export(fine_tuned.id, format="gguf", quantization="q8_0")
    f16 = run_export(fine_tuned.id, format="gguf", quantization="f16")
    assert export["size_bytes"] < 0.7 * f16["size_bytes"]
    (tmp_path / export["file_name"]).write_bytes(download(client, account, export))
    exported, _ = load_gguf(tmp_path, export["file_name"])
    fine_tune, tokenizer = load_merged(installed_tiny_model, tiny_adapter_dir)

    assert top1_agreement(fine_tune, tokenizer, exported) >= Q8_0_MIN_AGREEMENT


def test_the_ollama_bundle_carries_the_agents_system_prompt_and_the_chat_format(
    client: TestClient,
    account: Account,
    fine_tuned: FineTunedModel,
    factories: Factories,
    run_export: RunExport,
    tmp_path: Path,
) -> None:
    prompt = 'You are "Ada", the support agent.\nAnswer in one line.'
    agent = factories.agent(
        account.organization_id, system_prompt=prompt, fine_tuned_model_id=fine_tuned.id
    )

    export = run_export(fine_tuned.id, format="ollama", quantization="q8_0", agent_id=agent.id)

    assert (export["agent_id"], export["file_name"]) == (
        agent.id,
        "ft-tiny-support-ollama-q8_0.tar",
    )
    folder = unpack(download(client, account, export), tmp_path)
    commands = parse_modelfile((folder / "Modelfile").read_text())
    assert [name for name, _ in commands] == ["model", "template", "stop", "stop", "system"]
    settings = dict(commands)
    assert settings["model"] == "./ft-tiny-support.gguf"
    assert settings["system"] == prompt
    assert [value for name, value in commands if name == "stop"] == ["<|im_end|>", "<|im_start|>"]
    _, tokenizer = load_gguf(folder, "ft-tiny-support.gguf")
    for messages in PROMPTS[::2]:
        with_system = [{"role": "system", "content": prompt}, *messages]
        expected = tokenizer.apply_chat_template(
            with_system, tokenize=False, add_generation_prompt=True
        )
        assert render_prompt(settings["template"], settings["system"], messages) == expected
