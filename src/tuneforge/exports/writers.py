"""Writing an export's one file: the adapter, the merged model, a GGUF, or an Ollama bundle.

Directories ship as uncompressed tar archives with one top-level folder: safetensors and
GGUF weights barely compress, and gzip would cost minutes of CPU on a large model for a
few percent. The merged model is the base loaded in float32 with the adapter merged into
it (peft's ``merge_and_unload``), then stored in the base's own dtype: a float32 base (the
built-in SmolLM2) keeps every bit of the merge, and the tests check that its greedy replies
are the ones TuneForge serves. The GGUF formats are written from the same float32 merge.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tuneforge.db.tables.exports import ExportFormat, ExportQuantization
from tuneforge.exports.gguf import write_gguf
from tuneforge.exports.modelfile import build_modelfile, turn_format
from tuneforge.exports.service import ExportWork
from tuneforge.store.base_models import MODEL_LOAD_LOCK

if TYPE_CHECKING:  # loaded by the worker when it writes, never by the API process
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Progress = Callable[[str, float], None]
"""(stage, fraction of the whole export done)."""
HASH_CHUNK_BYTES = 1024 * 1024


def write_export(work: ExportWork, target: Path, scratch: Path, progress: Progress) -> None:
    """Write the export's file at ``target``, using ``scratch`` for what goes in it."""
    if work.format is ExportFormat.ADAPTER:
        files = sorted(p for p in work.adapter_path.iterdir() if p.is_file())
        _archive(work.slug, files, target, lambda done: progress("archiving", 0.9 * done))
        return
    progress("loading and merging the model", 0.02)
    model, tokenizer = load_merged(work.base_path, work.adapter_path)
    if work.format is ExportFormat.MERGED:
        progress("saving the merged model", 0.3)
        folder = scratch / work.slug
        save_merged(model, tokenizer, _base_dtype(work.base_path), folder)
        files = sorted(folder.iterdir())
        _archive(work.slug, files, target, lambda done: progress("archiving", 0.5 + 0.4 * done))
        return
    quantization = work.quantization or ExportQuantization.F16
    gguf_file = target if work.format is ExportFormat.GGUF else scratch / f"{work.slug}.gguf"
    # The Modelfile's template is checked before minutes of writing, not after.
    modelfile = (
        _modelfile(tokenizer, gguf_file.name, work.system_prompt)
        if work.format is ExportFormat.OLLAMA
        else None
    )
    span = 0.85 if modelfile is None else 0.6
    write_gguf(
        model,
        tokenizer,
        gguf_file,
        quantization,
        work.model_name,
        lambda done: progress(f"writing GGUF ({quantization.value})", 0.1 + span * done),
    )
    if modelfile is not None:
        (scratch / "Modelfile").write_text(modelfile)
        files = [scratch / "Modelfile", gguf_file]
        _archive(work.slug, files, target, lambda done: progress("archiving", 0.7 + 0.2 * done))


def load_merged(base: Path, adapter: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The fine-tune as one float32 model: the base with the adapter merged into it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with MODEL_LOAD_LOCK:
        model: Any = AutoModelForCausalLM.from_pretrained(
            base, dtype=torch.float32, local_files_only=True
        )
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tokenizer_dir = adapter if (adapter / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    return model.eval(), tokenizer


def save_merged(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dtype: torch.dtype,
    folder: Path,
) -> None:
    """A standalone model directory; ``generate()`` stops at the chat's end-of-turn token."""
    eos = model.generation_config.eos_token_id
    ends = [*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id]
    ends = [int(i) for i in dict.fromkeys(ends) if i is not None]
    model.generation_config.eos_token_id = ends[0] if len(ends) == 1 else ends
    if model.generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _base_dtype(base: Path) -> torch.dtype:
    import torch

    config = json.loads((base / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name), None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def _modelfile(tokenizer: PreTrainedTokenizerBase, gguf_name: str, system: str | None) -> str:
    def render(messages: list[dict[str, str]], generation: bool) -> str:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation
        )
        return str(text)

    return build_modelfile(gguf_name, turn_format(render), tokenizer.eos_token, system)


class _Counting:
    """A file read for an archive, counting bytes as they pass."""

    def __init__(self, handle: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        self._handle = handle
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        self._on_bytes(len(chunk))
        return chunk


def _archive(
    folder: str, files: list[Path], target: Path, progress: Callable[[float], None]
) -> None:
    """An uncompressed tar of ``files`` under one top-level ``folder``."""
    total = sum(f.stat().st_size for f in files) or 1
    done = 0

    def count(size: int) -> None:
        nonlocal done
        done += size
        progress(done / total)

    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as archive:
        for file in files:
            info = archive.gettarinfo(file, arcname=f"{folder}/{file.name}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with file.open("rb") as handle:
                archive.addfile(info, _Counting(handle, count))  # type: ignore[arg-type]


def file_sha256(path: Path, progress: Callable[[float], None]) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size or 1
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            progress(handle.tell() / total)
    return digest.hexdigest()
