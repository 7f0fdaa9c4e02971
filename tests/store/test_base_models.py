from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from tests.fixtures.tiny_model import TINY_CONTEXT_LENGTH
from tuneforge.config import Settings
from tuneforge.errors import Conflict, InvalidInput, NotFound
from tuneforge.store.base_models import (
    find_model_dir,
    list_store_models,
    pull_builtin_model,
    register_local_model,
)


def test_a_local_model_directory_registers_with_its_context_and_size(
    local_settings: Settings, tiny_model_dir: Path, tmp_path: Path
) -> None:
    stored = register_local_model(local_settings, tiny_model_dir, "tiny-llama")

    assert stored.context_length == TINY_CONTEXT_LENGTH
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert stored.parameter_count == sum(p.numel() for p in model.parameters())
    assert find_model_dir(local_settings, "tiny-llama") == tiny_model_dir.resolve()
    assert [m.name for m in list_store_models(local_settings)] == ["tiny-llama"]
    # Registering the same path again is fine; another path under the same name is not.
    register_local_model(local_settings, tiny_model_dir, "tiny-llama")
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    with pytest.raises(Conflict):
        register_local_model(local_settings, copy, "tiny-llama")


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("config.json", "no config.json"),
        ("model.safetensors", "no \\*.safetensors"),
        ("tokenizer.json", "no tokenizer"),
        ("chat_template", "no chat template"),
    ],
)
def test_incomplete_model_directories_are_refused(
    local_settings: Settings, tiny_model_dir: Path, tmp_path: Path, remove: str, message: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    if remove == "chat_template":
        (broken / "chat_template.jinja").unlink(missing_ok=True)
        config = json.loads((broken / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        (broken / "tokenizer_config.json").write_text(json.dumps(config))
    else:
        (broken / remove).unlink()
    with pytest.raises(InvalidInput, match=message):
        register_local_model(local_settings, broken, "broken")


def test_names_are_checked(local_settings: Settings, tiny_model_dir: Path) -> None:
    with pytest.raises(InvalidInput):
        register_local_model(local_settings, tiny_model_dir, "Bad Name")
    with pytest.raises(Conflict, match="built-in"):
        register_local_model(local_settings, tiny_model_dir, "smollm2-135m-instruct")
    with pytest.raises(NotFound):
        pull_builtin_model(local_settings, "no-such-model")
    assert find_model_dir(local_settings, "smollm2-135m-instruct") is None
