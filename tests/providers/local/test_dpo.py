"""DPO in the trainer on a tiny model: the loss, its falling, and what the reference is."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch.nn import functional
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.providers.local.factories import metric_events, preference_examples, prepare_job_dir
from tuneforge.providers.local.data import IGNORE_INDEX, EncodedExample, pack_examples
from tuneforge.providers.local.dpo import dpo_terms, encode_pairs, reference_log_probs
from tuneforge.providers.local.jobdir import read_events, read_status
from tuneforge.providers.local.modeling import SequenceLogProbs, use_segment_attention
from tuneforge.providers.local.reporting import Reporter
from tuneforge.providers.local.runtime import Runtime
from tuneforge.providers.local.steps import TrainingRun
from tuneforge.providers.local.trainer import build_run, run_training

FAST = {"lora_r": 8, "lora_alpha": 64, "learning_rate_multiplier": 10.0, "warmup_ratio": 0.0}
CPU = Runtime(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def sequence_log_prob(model: torch.nn.Module, example: EncodedExample) -> float:
    """The summed log-probability of an example's targets, from a plain forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([example.input_ids])).logits[0].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    return sum(
        float(log_probs[position, target])
        for position, target in enumerate(example.targets)
        if target != IGNORE_INDEX
    )


def pair_log_probs(model: torch.nn.Module, run: TrainingRun, count: int) -> torch.Tensor:
    pairs = run.objective.train[:count]  # type: ignore[attr-defined]
    return torch.tensor(
        [[sequence_log_prob(model, p.chosen), sequence_log_prob(model, p.rejected)] for p in pairs]
    )


@pytest.fixture
def float32_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Train and score in float32 even on a CPU with bf16 instructions: the reference is
    checked against a plain float32 forward pass to 1e-4, which bf16 matmuls do not reach."""
    monkeypatch.setattr("tuneforge.providers.local.steps.cpu_has_native_bf16", lambda: False)


def train_steps(run: TrainingRun, steps: int) -> None:
    for step in range(steps):
        assert run.objective.train_step(run, step, lambda: False) is not None


def test_the_dpo_loss_is_the_sigmoid_loss_on_beta_scaled_log_ratios() -> None:
    policy = torch.tensor([[-1.0, -3.0], [-2.0, -2.0], [-4.0, -1.0]])
    reference = torch.full((3, 2), -2.0)

    terms = dpo_terms(policy, reference, beta=0.5, preferred_tokens=torch.tensor([2, 4, 1]))

    # Margins: 0.5 * ((-1 + 2) - (-3 + 2)) = 1, then 0, then 0.5 * (-2 - 1) = -1.5.
    torch.testing.assert_close(terms.margins, torch.tensor([1.0, 0.0, -1.5]))
    expected = -functional.logsigmoid(torch.tensor([1.0, 0.0, -1.5]))
    torch.testing.assert_close(terms.losses, expected)
    assert terms.losses[1].item() == pytest.approx(math.log(2))
    torch.testing.assert_close(terms.wins, torch.tensor([1.0, 0.5, 0.0]))
    torch.testing.assert_close(terms.nll, torch.tensor([0.5, 0.5, 4.0]))


def test_the_nll_weight_adds_the_preferred_replys_per_token_nll() -> None:
    policy = torch.tensor([[-1.0, -3.0], [-8.0, -2.0]], requires_grad=True)
    reference = torch.full((2, 2), -2.0)
    tokens = torch.tensor([2, 4])

    alone = dpo_terms(policy, reference, 0.5, tokens)
    weighted = dpo_terms(policy, reference, 0.5, tokens, nll_weight=0.2)

    torch.testing.assert_close(weighted.losses - alone.losses, 0.2 * torch.tensor([0.5, 2.0]))
    weighted.losses.sum().backward()
    assert policy.grad is not None
    # Minimizing the loss raises the preferred reply's log-probability.
    assert policy.grad[0, 0] < 0 and policy.grad[1, 0] < 0


@pytest.mark.slow
def test_a_packed_row_gives_each_sequence_its_own_log_probability(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    use_segment_attention(model)
    pairs = encode_pairs(tokenizer, preference_examples(3), 512).pairs
    sequences = [s for pair in pairs for s in (pair.chosen, pair.rejected)]
    batch = pack_examples(sequences, list(range(len(sequences))))
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))

    with torch.no_grad():
        packed = SequenceLogProbs(wrapped)(
            batch.input_ids, batch.position_ids, batch.targets, batch.segment_lengths
        )

    alone = torch.tensor([sequence_log_prob(model, s) for s in sequences])
    torch.testing.assert_close(packed, alone, atol=1e-4, rtol=1e-5)


@pytest.mark.slow
def test_dpo_training_lowers_the_loss_and_wins_the_held_out_pairs(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    paths = prepare_job_dir(
        tmp_path / "job",
        tiny_model_dir,
        {**FAST, "n_epochs": 3, "batch_size": 8, "eval_every_steps": 3, "nll_weight": 0.0},
        n_train=48,
        n_valid=16,
        method="dpo",
    )

    assert run_training(paths, lambda: False) == "succeeded"

    metrics = metric_events(paths)
    assert [m["step"] for m in metrics] == list(range(0, 19))
    start = metrics[0]["metrics"]
    # Step 0: the adapter adds nothing yet, so the policy is its reference (DPO alone here).
    assert set(start) == {"valid_loss", "valid_reward_margin", "valid_reward_accuracy"}
    assert start["valid_loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert start["valid_reward_margin"] == pytest.approx(0.0, abs=1e-3)
    held_out = [m["metrics"] for m in metrics if "valid_loss" in m["metrics"]]
    assert held_out[-1]["valid_loss"] < math.log(2) - 0.2
    assert held_out[-1]["valid_reward_accuracy"] >= 0.9
    assert held_out[-1]["valid_reward_margin"] > 0
    first, last = metrics[1]["metrics"], metrics[-1]["metrics"]
    assert {"train_reward_margin", "train_reward_accuracy", "learning_rate", "grad_norm"} <= set(
        first
    )
    assert last["train_loss"] < first["train_loss"] - 0.2
    assert read_status(paths)["state"] == "succeeded"
    assert (paths.adapter / "adapter_model.safetensors").is_file()
    started = next(e for e in read_events(paths.progress, 0)[0] if e["type"] == "started")
    # DPO's auto rule would scale the rate down; an explicit multiplier is taken as given.
    assert started["data"]["learning_rate"] == pytest.approx(2e-3)


@pytest.mark.slow
@pytest.mark.usefixtures("float32_steps")
def test_the_reference_is_the_model_with_the_adapter_switched_off(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    paths = prepare_job_dir(
        tmp_path / "job",
        tiny_model_dir,
        {**FAST, "batch_size": 4, "holdout_fraction": 0.0},
        n_train=16,
        method="dpo",
    )
    run = build_run(paths, CPU, Reporter(paths, enabled=False))
    train_steps(run, 3)  # the adapter is far from the identity by now
    pairs = run.objective.train[:4]  # type: ignore[attr-defined]

    reference = reference_log_probs(run, pairs, torch.full((4, 2), math.nan), [0, 1, 2, 3])

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    torch.testing.assert_close(reference, pair_log_probs(plain, run, 4), atol=1e-4, rtol=1e-5)
    run.model.eval()
    policy = pair_log_probs(run.model, run, 4)
    assert (policy - reference).abs().max() > 0.1


@pytest.mark.slow
@pytest.mark.usefixtures("float32_steps")
def test_from_a_fine_tune_the_reference_is_that_fine_tune_and_the_result_serves_on_the_base(
    tmp_path: Path, tiny_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    hyperparameters = {**FAST, "batch_size": 4, "holdout_fraction": 0.0}
    paths = prepare_job_dir(
        tmp_path / "job",
        tiny_model_dir,
        hyperparameters,
        n_train=16,
        method="dpo",
        parent_adapter=tiny_adapter_dir,
    )
    run = build_run(paths, CPU, Reporter(paths, enabled=False))
    train_steps(run, 3)
    pairs = run.objective.train[:4]  # type: ignore[attr-defined]

    reference = reference_log_probs(run, pairs, torch.full((4, 2), math.nan), [0, 1, 2, 3])

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    parent = PeftModel.from_pretrained(base, tiny_adapter_dir).eval()
    torch.testing.assert_close(reference, pair_log_probs(parent, run, 4), atol=1e-4, rtol=1e-4)

    # What the run writes is one plain adapter on the original base: parent and run together.
    run.model.eval()
    policy = pair_log_probs(run.model, run, 4)
    run.adapter_files.save(run.model, tmp_path / "stacked")
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    served = PeftModel.from_pretrained(fresh, tmp_path / "stacked").eval()
    torch.testing.assert_close(pair_log_probs(served, run, 4), policy, atol=1e-4, rtol=1e-4)
    assert (policy - reference).abs().max() > 0.1

    # A resumed run reads back exactly its own part of that adapter.
    again = build_run(paths, CPU, Reporter(paths, enabled=False))
    again.adapter_files.load(again.model, tmp_path / "stacked")
    again.model.eval()
    torch.testing.assert_close(pair_log_probs(again.model, again, 4), policy, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_a_dpo_job_from_a_fine_tune_trains_and_writes_a_servable_adapter(
    tmp_path: Path, tiny_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    paths = prepare_job_dir(
        tmp_path / "job",
        tiny_model_dir,
        {**FAST, "n_epochs": 2, "batch_size": 8, "eval_every_steps": 2, "lora_r": 4},
        n_train=32,
        n_valid=8,
        method="dpo",
        parent_adapter=tiny_adapter_dir,
    )

    assert run_training(paths, lambda: False) == "succeeded"

    held_out = [m["metrics"] for m in metric_events(paths) if "valid_loss" in m["metrics"]]
    # Step 0: the policy is the parent fine-tune, its reference: every pair ties.
    assert held_out[0]["valid_reward_margin"] == pytest.approx(0.0, abs=1e-3)
    assert held_out[0]["valid_reward_accuracy"] == 0.5
    assert held_out[-1]["valid_loss"] < held_out[0]["valid_loss"]
    config = (paths.adapter / "adapter_config.json").read_text()
    assert '"r": 8' in config  # the parent's rank 4 and the run's 4
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    PeftModel.from_pretrained(fresh, paths.adapter)  # loads on the plain base
