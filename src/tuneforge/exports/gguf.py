"""GGUF files of a merged model, written with the ``gguf`` package's writer and name maps.

llama.cpp (and so Ollama) reads the architecture's hyperparameters, the tokenizer and the
chat template from the file's metadata, so a GGUF needs nothing beside it. Only
architectures mapped here are written (llama first: SmolLM2 is one); anything else is
refused by name before any work. Two llama.cpp conventions matter for a faithful file:
the q and k projections are stored permuted for its rotary layout
(``convert_hf_to_gguf.py``'s ``LlamaModel.permute``; transformers' GGUF reader permutes
back), and a tied output head is left out (the reader ties it again).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gguf
import numpy as np

from tuneforge.db.tables.exports import ExportQuantization
from tuneforge.errors import InvalidInput

if TYPE_CHECKING:  # the API process imports this module without loading torch
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ARCHITECTURES = {"llama": gguf.MODEL_ARCH.LLAMA}
# 2-D weights become the chosen type; 1-D norms stay float32, as llama.cpp writes them.
FILE_TYPES = {
    ExportQuantization.F16: gguf.LlamaFileType.MOSTLY_F16,
    ExportQuantization.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
}
Progress = Callable[[float], None]


def check_architecture(config: dict[str, Any]) -> None:
    """Refuse, naming what is unsupported, a model this writer cannot map faithfully."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise InvalidInput(
            f"format: GGUF export supports {', '.join(sorted(ARCHITECTURES))} models; this "
            f"model's architecture is {model_type!r}",
            field="format",
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise InvalidInput(
            f"format: GGUF export does not write rope scaling ({rope.get('rope_type')!r}) yet",
            field="format",
        )
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise InvalidInput("format: GGUF export does not write llama biases yet", field="format")
    if config.get("hidden_act", "silu") != "silu":
        raise InvalidInput(
            f"format: GGUF export supports llama with silu, not {config['hidden_act']!r}",
            field="format",
        )


@dataclass(frozen=True)
class GgufTokenizer:
    """The tokenizer as GGUF metadata: llama.cpp's ``gpt2`` (byte-level BPE) model."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str


def gguf_tokenizer(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> GgufTokenizer:
    """Tokens by id (padded to the model's vocabulary), their types and the BPE merges.

    Only byte-level BPE with GPT-2's split is mapped: llama.cpp names a pre-tokenizer by
    its own table of regexes, and a name that does not match the tokenizer the model was
    trained with would tokenize differently there without any error."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex"):
        raise InvalidInput(
            "format: GGUF export supports byte-level BPE tokenizers with GPT-2's split (as "
            f"SmolLM2's); this one is {model.get('type')!r} with {pre.get('type')!r}",
            field="format",
        )
    if pre.get("add_prefix_space"):
        raise InvalidInput(
            "format: GGUF export does not map a tokenizer that adds a prefix space",
            field="format",
        )
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(max(vocab_size, len(by_id))):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(token)
            special = added[index].special
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return GgufTokenizer(tokens, [int(t) for t in types], merges, "gpt2")


def _adds_special(tokenizer: PreTrainedTokenizerBase) -> tuple[bool, bool]:
    """Whether encoding text adds BOS before it and EOS after it."""
    ids = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return bos is not None and ids[0] == bos, eos is not None and ids[-1] == eos


def _write_metadata(
    writer: gguf.GGUFWriter,
    config: Any,
    tokenizer: PreTrainedTokenizerBase,
    name: str,
    quantization: ExportQuantization,
) -> None:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_type("model")
    writer.add_name(name)
    writer.add_file_type(FILE_TYPES[quantization])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads or heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 1e4))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if head_dim != config.hidden_size // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)

    vocab = gguf_tokenizer(tokenizer, config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    for token_id, add in (
        (tokenizer.bos_token_id, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.unk_token_id, writer.add_unk_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
        # llama.cpp ends a turn at its end-of-turn token: the one replies end with here.
        (tokenizer.eos_token_id, writer.add_eot_token_id),
    ):
        if token_id is not None:
            add(int(token_id))
    add_bos, add_eos = _adds_special(tokenizer)
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(add_eos)
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if template:
        writer.add_chat_template(template)


def permute_for_rope(weights: np.ndarray, heads: int, kv_heads: int | None) -> np.ndarray:
    """llama.cpp's row order for a q or k projection (``LlamaModel.permute``)."""
    if kv_heads is not None and heads != kv_heads:
        heads = kv_heads
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


@dataclass(frozen=True)
class _Tensor:
    name: str
    source: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType


def _tensor_type(
    shape: tuple[int, ...], quantization: ExportQuantization
) -> gguf.GGMLQuantizationType:
    if len(shape) < 2:
        return gguf.GGMLQuantizationType.F32
    block, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0]
    if quantization is ExportQuantization.Q8_0 and shape[-1] % block == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16  # llama.cpp's fallback for rows Q8_0 cannot block


def _plan(
    state: dict[str, torch.Tensor], config: Any, quantization: ExportQuantization
) -> list[_Tensor]:
    names = gguf.get_tensor_name_map(ARCHITECTURES[config.model_type], config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    plan = []
    for source, tensor in state.items():
        if tied and source == "lm_head.weight":
            continue
        name = names.get_name(source, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise InvalidInput(
                f"format: GGUF export has no name for the tensor {source}", field="format"
            )
        shape = tuple(tensor.shape)
        plan.append(_Tensor(name, source, shape, _tensor_type(shape, quantization)))
    return plan


def _encoded(tensor: torch.Tensor, item: _Tensor, config: Any) -> np.ndarray:
    data = tensor.detach().float().cpu().numpy()
    heads = config.num_attention_heads
    if item.name.endswith("attn_q.weight"):
        data = permute_for_rope(data, heads, heads)
    elif item.name.endswith("attn_k.weight"):
        data = permute_for_rope(data, heads, config.num_key_value_heads or heads)
    return gguf.quants.quantize(data, item.qtype)


_STORED_AS = {
    gguf.GGMLQuantizationType.F32: np.dtype(np.float32),
    gguf.GGMLQuantizationType.F16: np.dtype(np.float16),
    gguf.GGMLQuantizationType.Q8_0: np.dtype(np.uint8),
}


def _add_info(writer: gguf.GGUFWriter, item: _Tensor) -> int:
    """Declare a tensor before any data is written; its size in the file."""
    stored = _STORED_AS[item.qtype]
    if stored == np.uint8:
        shape = gguf.quants.quant_shape_to_byte_shape(item.shape, item.qtype)
        nbytes = int(np.prod(shape))
        writer.add_tensor_info(item.name, shape, stored, nbytes, raw_dtype=item.qtype)
    else:
        nbytes = int(np.prod(item.shape)) * stored.itemsize
        writer.add_tensor_info(item.name, item.shape, stored, nbytes)
    return nbytes


def write_gguf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: Path,
    quantization: ExportQuantization,
    name: str,
    progress: Progress,
) -> None:
    """Write ``model`` (merged, any float dtype) to ``path``, one tensor at a time, so only
    one encoded tensor is in memory beside the model."""
    config = model.config
    check_architecture(config.to_dict())
    state = model.state_dict()
    plan = _plan(state, config, quantization)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[ARCHITECTURES[config.model_type]])
    try:
        _write_metadata(writer, config, tokenizer, name, quantization)
        total = sum(_add_info(writer, item) for item in plan) or 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        done = 0
        for item in plan:
            encoded = _encoded(state[item.source], item, config)
            writer.write_tensor_data(encoded)
            done += encoded.nbytes
            progress(done / total)
    finally:
        writer.close()
