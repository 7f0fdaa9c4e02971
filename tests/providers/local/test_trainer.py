"""The training loop run in-process on a tiny model: loss, learning, checkpoints and resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.providers.local.factories import chat_examples, metric_events, prepare_job_dir
from tuneforge.providers.local.data import IGNORE_INDEX, encode_chat_example, pack_examples
from tuneforge.providers.local.jobdir import checkpoint_dirs, read_events, read_status
from tuneforge.providers.local.modeling import AssistantTokenLoss
from tuneforge.providers.local.trainer import run_training

FAST = {"lora_r": 8, "lora_alpha": 64, "learning_rate_multiplier": 10.0, "warmup_ratio": 0.0}


def test_assistant_token_loss_equals_the_models_own_loss(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear")).eval()
    example = encode_chat_example(tokenizer, chat_examples(1)[0], 512)
    batch = pack_examples([example], [0])

    loss_sum, correct = AssistantTokenLoss(peft_model)(
        batch.input_ids, batch.position_ids, batch.targets, batch.segment_lengths
    )
    labels = torch.tensor([[IGNORE_INDEX, *example.targets[:-1]]])
    expected = peft_model(input_ids=batch.input_ids, labels=labels).loss

    torch.testing.assert_close(loss_sum / example.n_targets, expected)
    assert 0 <= int(correct) <= example.n_targets


def test_training_lowers_the_loss_and_saves_the_adapter(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    paths = prepare_job_dir(
        tmp_path / "job",
        tiny_model_dir,
        {**FAST, "n_epochs": 3, "batch_size": 8, "eval_every_steps": 3},
        n_train=48,
        n_valid=16,
    )

    assert run_training(paths, lambda: False) == "succeeded"

    metrics = metric_events(paths)
    # Step 0 is the base model, measured on the held-out data before any update.
    assert [m["step"] for m in metrics] == list(range(0, 19))
    assert set(metrics[0]["metrics"]) == {"valid_loss", "valid_mean_token_accuracy"}
    valid = [m["metrics"]["valid_loss"] for m in metrics if "valid_loss" in m["metrics"]]
    assert len(valid) == 7
    assert valid[-1] < valid[0] - 0.2
    assert metrics[-1]["metrics"]["train_loss"] < metrics[1]["metrics"]["train_loss"] - 0.2
    assert {"train_mean_token_accuracy", "learning_rate", "tokens_per_second"} <= set(
        metrics[1]["metrics"]
    )
    status = read_status(paths)
    assert status["state"] == "succeeded"
    assert status["fine_tuned_model"] == "ft:tiny-llama:tuneforge::job"
    assert (paths.adapter / "adapter_model.safetensors").is_file()
    assert (paths.adapter / "tokenizer_config.json").is_file()
    types = [e["type"] for e in read_events(paths.progress, 0)[0]]
    assert types[0] == "started" and types[-1] == "finished"
    assert types.count("epoch") == 3


def test_resume_continues_from_the_checkpoint_and_matches_an_uninterrupted_run(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    hyperparameters = {**FAST, "n_epochs": 2, "batch_size": 8, "checkpoint_every_steps": 2}
    whole = prepare_job_dir(tmp_path / "whole", tiny_model_dir, hyperparameters, n_train=32)
    split = prepare_job_dir(tmp_path / "split", tiny_model_dir, hyperparameters, n_train=32)

    assert run_training(whole, lambda: False) == "succeeded"
    # Stop during step 6: the newest checkpoint is then step-4.
    assert run_training(split, lambda: read_status(split)["step"] >= 5) == "cancelled"
    assert [step for step, _ in checkpoint_dirs(split)] == [2, 4]
    assert run_training(split, lambda: False) == "succeeded"

    events = read_events(split.progress, 0)[0]
    resumed = [e for e in events if e["type"] == "resumed"]
    assert [e["step"] for e in resumed] == [4]
    assert [m["step"] for m in metric_events(split)] == list(range(0, 9))
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))
    final_whole = load_file(whole.adapter / "adapter_model.safetensors")
    final_split = load_file(split.adapter / "adapter_model.safetensors")
    assert final_whole.keys() == final_split.keys()
    for name, tensor in final_whole.items():
        torch.testing.assert_close(final_split[name], tensor, atol=1e-6, rtol=1e-5)
    last_whole, last_split = metric_events(whole)[-1], metric_events(split)[-1]
    assert abs(last_whole["metrics"]["train_loss"] - last_split["metrics"]["train_loss"]) < 1e-5


def test_non_finite_gradients_skip_steps_then_fail_the_run_as_diverged(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    broken = tmp_path / "broken-model"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("inf")
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(broken)
    paths = prepare_job_dir(tmp_path / "job", broken, {**FAST, "batch_size": 4}, n_train=32)

    with pytest.raises(FloatingPointError, match="diverged"):
        run_training(paths, lambda: False)

    status = read_status(paths)
    assert status["state"] == "failed" and "non-finite gradients" in status["error"]
    events = read_events(paths.progress, 0)[0]
    assert [e["step"] for e in events if e["type"] == "skipped_step"] == [1, 2]
    for event in metric_events(paths):
        assert "train_loss" not in event["metrics"]
        assert all(math.isfinite(value) for value in event["metrics"].values())
    assert checkpoint_dirs(paths) == [] and not paths.adapter.exists()
