from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tuneforge.config import Settings
from tuneforge.errors import InvalidInput
from tuneforge.providers.local.jobdir import ProgressLog, parse_local_hyperparameters, read_events
from tuneforge.providers.local.provider import LocalProvider


def test_event_ids_continue_across_writers_and_a_torn_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    first = ProgressLog(path)
    first.emit("started", "go")
    first.emit("metrics", "step 1", step=1, metrics={"train_loss": 2.0})
    first.emit("metrics", "step 2", step=2, metrics={"train_loss": 1.5})
    with path.open("a") as handle:
        handle.write('{"id": 4, "type": "metr')  # killed mid-write

    assert [e["id"] for e in read_events(path, 0)[0]] == [1, 2, 3]
    second = ProgressLog(path)  # the resumed trainer
    second.emit("resumed", "from step-1", step=1)
    second.emit("metrics", "step 2 again", step=2, metrics={"train_loss": 1.5})
    second.emit("metrics", "step 3", step=3, metrics={"train_loss": 1.2})

    events, offset = read_events(path, 0)
    assert [(e["id"], e["type"], e["step"]) for e in events] == [
        (1, "started", None),
        (2, "metrics", 1),
        (3, "metrics", 2),
        (4, "resumed", 1),
        (5, "metrics", 3),
    ]
    assert offset == path.stat().st_size
    newer, _ = read_events(path, 3, start_offset=0)
    assert [e["id"] for e in newer] == [4, 5]


def test_hyperparameters_accept_auto_and_name_the_bad_field() -> None:
    parsed = parse_local_hyperparameters({"n_epochs": "auto", "lora_r": 4, "num_processes": 2})
    assert parsed.n_epochs == "auto"
    assert parsed.lora_r == 4
    with pytest.raises(InvalidInput, match="lora_rank"):
        parse_local_hyperparameters({"lora_rank": 4})
    with pytest.raises(InvalidInput, match="warmup_ratio"):
        parse_local_hyperparameters({"warmup_ratio": 2})


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"num_processes": 64}, "hyperparameters.num_processes"),
        ({"micro_batch_tokens": 10**12}, "hyperparameters.micro_batch_tokens"),
        ({"eval_every_steps": 10**18}, "hyperparameters.eval_every_steps"),
        ({"checkpoint_every_steps": 10**18}, "hyperparameters.checkpoint_every_steps"),
        ({"lora_alpha": 1e300}, "hyperparameters.lora_alpha"),
        ({"lora_alpha": float("inf")}, "hyperparameters.lora_alpha"),
        ({"max_seq_length": 10**9}, "hyperparameters.max_seq_length"),
        ({"target_modules": [f"proj_{i}" for i in range(1000)]}, "hyperparameters.target_modules"),
        ({"target_modules": ["q_proj; rm -rf /"]}, "hyperparameters.target_modules.0"),
    ],
)
def test_local_hyperparameters_out_of_bounds_are_refused_naming_the_field(
    tmp_path: Path, hyperparameters: dict[str, Any], field: str
) -> None:
    provider = LocalProvider(Settings(data_dir=tmp_path))
    with pytest.raises(InvalidInput) as refused:
        provider.check_hyperparameters(hyperparameters)
    assert refused.value.extra["field"] == field
