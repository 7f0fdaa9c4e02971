"""The GGUF writer's conventions, read back with the gguf package's own reader."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

from tests.fixtures.tiny_model import CHAT_TEMPLATE, build_tokenizer
from tuneforge.db.tables.exports import ExportQuantization
from tuneforge.errors import InvalidInput
from tuneforge.exports.gguf import check_architecture, permute_for_rope, write_gguf


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerFast:
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def tiny_llama(tokenizer: PreTrainedTokenizerFast, *, tied: bool) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer) + 5,  # a padded vocabulary, as many models have
        hidden_size=64,
        intermediate_size=80,  # ffn_down's rows of 80 do not fill Q8_0's blocks of 32
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def read(path: Path) -> tuple[dict[str, object], dict[str, gguf.ReaderTensor]]:
    reader = gguf.GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    return fields, {tensor.name: tensor for tensor in reader.tensors}


def test_q_and_k_are_permuted_the_way_transformers_reader_permutes_back() -> None:
    rows = np.arange(8 * 16 * 3, dtype=np.float32).reshape(8 * 16, 3)
    reverse = LlamaTensorProcessor()._reverse_permute_weights

    assert np.array_equal(reverse(permute_for_rope(rows, 8, 8), 8, 8), rows)
    assert np.array_equal(reverse(permute_for_rope(rows[:32], 8, 2), 8, 2), rows[:32])
    assert not np.array_equal(permute_for_rope(rows, 8, 8), rows)


def test_the_file_describes_the_model_and_its_tokenizer(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    model = tiny_llama(tokenizer, tied=False)
    fractions: list[float] = []

    write_gguf(
        model, tokenizer, tmp_path / "m.gguf", ExportQuantization.F16, "ft:x", fractions.append
    )

    fields, tensors = read(tmp_path / "m.gguf")
    assert fields["general.architecture"] == "llama"
    assert fields["general.name"] == "ft:x"
    assert fields["llama.block_count"] == 2
    assert fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.rope.dimension_count"] == 16
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "gpt2"
    assert fields["tokenizer.chat_template"] == CHAT_TEMPLATE
    tokens = fields["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list) and len(tokens) == model.config.vocab_size
    assert tokens[-1] == f"[PAD{model.config.vocab_size - 1}]"
    types = fields["tokenizer.ggml.token_type"]
    assert isinstance(types, list)
    assert types[:3] == [gguf.TokenType.CONTROL] * 3  # <|im_end|>, <|im_start|>, <|endoftext|>
    assert types[-1] == gguf.TokenType.UNUSED
    eos = tokenizer.eos_token_id
    assert (fields["tokenizer.ggml.eos_token_id"], fields["tokenizer.ggml.eot_token_id"]) == (
        eos,
        eos,
    )
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert "output.weight" in tensors
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_q8_0_blocks_each_matrix_it_can_and_a_tied_head_is_left_out(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    model = tiny_llama(tokenizer, tied=True)

    write_gguf(model, tokenizer, tmp_path / "m.gguf", ExportQuantization.Q8_0, "x", lambda _: None)

    fields, tensors = read(tmp_path / "m.gguf")
    assert fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    assert "output.weight" not in tensors
    matrices = {name: t.tensor_type for name, t in tensors.items() if len(t.shape) == 2}
    fallback = {name for name, kind in matrices.items() if kind != gguf.GGMLQuantizationType.Q8_0}
    assert fallback == {"blk.0.ffn_down.weight", "blk.1.ffn_down.weight"}
    assert tensors["blk.0.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    ffn_up = tensors["blk.1.ffn_up.weight"]
    restored = gguf.quants.dequantize(ffn_up.data, ffn_up.tensor_type)
    original = model.model.layers[1].mlp.up_proj.weight.detach().numpy()
    assert np.abs(restored.reshape(original.shape) - original).max() < 0.01


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"model_type": "qwen2"}, "architecture is 'qwen2'"),
        ({"model_type": "llama", "rope_parameters": {"rope_type": "llama3"}}, "rope scaling"),
        ({"model_type": "llama", "attention_bias": True}, "biases"),
        ({"model_type": "llama", "hidden_act": "gelu"}, "silu"),
    ],
)
def test_what_is_not_mapped_is_refused_by_name(config: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason) as refused:
        check_architecture(config)

    assert refused.value.extra == {"field": "format"}
