from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.errors import InvalidInput
from tuneforge.providers.local.jobdir import ProgressLog, parse_local_hyperparameters, read_events


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
