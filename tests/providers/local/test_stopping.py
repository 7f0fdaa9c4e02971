"""Runs judged on held-out data: the held-out slice, step 0, early stopping, the best step."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.providers.local.factories import (
    chat_examples,
    metric_events,
    prepare_job_dir,
    write_jsonl,
)
from tuneforge.providers.local.jobdir import JobPaths, read_events, read_status
from tuneforge.providers.local.stopping import (
    MAX_HOLDOUT_EXAMPLES,
    EarlyStopping,
    holdout_indices,
    resolve_patience,
)
from tuneforge.providers.local.trainer import run_training

FAST = {"lora_r": 8, "lora_alpha": 64, "learning_rate_multiplier": 10.0, "warmup_ratio": 0.0}


def events_of(paths: JobPaths, event_type: str) -> list[dict]:
    return [e for e in read_events(paths.progress, 0)[0] if e["type"] == event_type]


def test_the_held_out_slice_is_seeded_bounded_and_spares_small_datasets() -> None:
    chosen = holdout_indices(300, 0.1, seed=42)
    assert len(chosen) == 30 and chosen == holdout_indices(300, 0.1, seed=42)
    assert chosen != holdout_indices(300, 0.1, seed=43)
    assert len(holdout_indices(100_000, 0.1, seed=1)) == MAX_HOLDOUT_EXAMPLES
    assert holdout_indices(8, 0.5, seed=1) == []  # too few to spare any
    assert holdout_indices(300, 0.0, seed=1) == []


def test_early_stopping_waits_patience_evaluations_without_a_real_improvement() -> None:
    stopper = EarlyStopping(patience=2, min_delta=0.01)
    assert stopper.observe(0, 2.0).improved
    assert stopper.observe(10, 1.0).improved
    creeping = stopper.observe(20, 0.995)  # the lowest yet, but by less than min_delta
    assert creeping.improved and not creeping.stop
    assert stopper.observe(30, 0.999).stop
    assert (stopper.best_step, stopper.best_loss) == (20, 0.995)  # the model's weights
    resumed = EarlyStopping.restore(stopper.state(), patience=2, min_delta=0.01)
    assert resumed == stopper
    assert resolve_patience("auto", has_holdout=True) == 3
    assert resolve_patience("auto", has_holdout=False) == 0
    assert resolve_patience(0, has_holdout=True) == 0


def test_on_auto_every_new_low_counts_and_only_a_plateau_stops() -> None:
    stopper = EarlyStopping(patience=2, min_delta=None)
    stopper.observe(0, 1.5)
    stopper.observe(4, 0.5)
    assert stopper.threshold() == 0.0
    for step, loss in ((8, 0.4999), (12, 0.4998), (16, 0.4997)):  # creeping: still learning
        assert not stopper.observe(step, loss).stop
    assert not stopper.observe(20, 0.4997).stop  # no new low: one evaluation
    assert stopper.observe(24, 0.5).stop  # two: a plateau
    assert (stopper.best_step, stopper.best_loss) == (16, 0.4997)


def test_overfitting_is_flagged_once_when_valid_loss_rises_as_train_loss_falls() -> None:
    stopper = EarlyStopping(patience=0, min_delta=0.0)
    stopper.track_train_loss(2.0)
    assert not stopper.observe(10, 1.0).overfitting
    stopper.track_train_loss(0.5)
    assert stopper.observe(20, 1.5).overfitting
    assert not stopper.observe(30, 1.6).overfitting  # said once
    flat = EarlyStopping(patience=0, min_delta=0.0)
    flat.track_train_loss(1.0)
    flat.observe(10, 1.0)
    flat.track_train_loss(1.2)  # train loss rising too: a bad step, not overfitting
    assert not flat.observe(20, 1.5).overfitting


def test_a_job_without_validation_data_holds_out_a_slice_and_is_measured_from_step_0(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    paths = prepare_job_dir(
        tmp_path / "job", tiny_model_dir, {**FAST, "n_epochs": 1, "batch_size": 8}, n_train=40
    )

    assert run_training(paths, lambda: False) == "succeeded"

    [holdout] = events_of(paths, "holdout")
    assert holdout["data"] == {
        "held_out": 4,
        "examples": 40,
        "fraction": 0.1,
        "positions": holdout_indices(40, 0.1, seed=7),  # the job's seed: the same lines
    }
    steps = [m["step"] for m in metric_events(paths)]
    assert steps == list(range(0, 6))  # 36 examples at 8 a step, after step 0
    assert "valid_loss" in metric_events(paths)[0]["metrics"]


def test_a_plateau_stops_the_run_early_and_the_job_still_succeeds(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A learning rate too small to move the loss: valid loss is flat from step 0."""
    hyperparameters = {
        **FAST,
        "learning_rate_multiplier": 1e-6,
        "n_epochs": 10,
        "batch_size": 4,
        "eval_every_steps": 2,
        "early_stopping_patience": 3,
        "early_stopping_min_delta": 0.01,
    }
    paths = prepare_job_dir(tmp_path / "job", tiny_model_dir, hyperparameters, n_valid=8)

    assert run_training(paths, lambda: False) == "succeeded"

    [stopped] = events_of(paths, "early_stopped")
    assert stopped["step"] == 6  # evaluations at 2, 4 and 6 did not beat step 0 by 0.01
    valid = {
        m["step"]: m["metrics"]["valid_loss"]
        for m in metric_events(paths)
        if "valid_loss" in m["metrics"]
    }
    assert sorted(valid) == [0, 2, 4, 6]
    best_step = min(valid, key=lambda step: valid[step])
    assert stopped["data"]["planned_steps"] == 120
    status = read_status(paths)
    assert status["state"] == "succeeded" and status["stopped_early_at"] == 6
    assert status["step"] == 6 and status["best_step"] == best_step
    [finished] = events_of(paths, "finished")
    assert finished["data"]["best_step"] == best_step
    assert f"made from step {best_step}" in finished["message"]


def test_the_model_is_made_from_the_best_step_and_overfitting_is_reported(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Validation answers contradict the training rule, so learning it makes valid loss rise."""
    hyperparameters = {
        **FAST,
        "n_epochs": 4,
        "batch_size": 8,
        "eval_every_steps": 1,
        "early_stopping_patience": 0,
    }
    paths = prepare_job_dir(tmp_path / "job", tiny_model_dir, hyperparameters, n_valid=8)
    contradicting = [
        {"messages": [e["messages"][0], {"role": "assistant", "content": "no"}]}
        for e in chat_examples(8, seed=99)
    ]
    write_jsonl(paths.valid_file, contradicting)

    assert run_training(paths, lambda: False) == "succeeded"

    metrics = metric_events(paths)
    valid = {m["step"]: m["metrics"]["valid_loss"] for m in metrics if "valid_loss" in m["metrics"]}
    best_step = min(valid, key=lambda step: valid[step])
    assert best_step < max(valid)  # the run went on past its best
    [finished] = events_of(paths, "finished")
    assert finished["data"]["best_step"] == best_step
    assert events_of(paths, "overfitting"), [m["metrics"] for m in metrics]
    final = load_file(paths.adapter / "adapter_model.safetensors")
    best = load_file(paths.best_adapter / "adapter_model.safetensors")
    assert best and final.keys() == best.keys()
    for name, tensor in best.items():
        torch.testing.assert_close(final[name], tensor)
    config = json.loads((paths.adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
