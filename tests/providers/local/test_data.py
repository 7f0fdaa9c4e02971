from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from tests.providers.local.factories import chat_examples
from tuneforge.providers.local.data import (
    IGNORE_INDEX,
    EncodedExample,
    encode_chat_example,
    encode_dataset,
    pack_examples,
    plan_micro_batches,
)
from tuneforge.providers.local.modeling import use_segment_attention


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def learned_text(tokenizer: PreTrainedTokenizerBase, example: EncodedExample) -> str:
    return tokenizer.decode([t for t in example.targets if t != IGNORE_INDEX])


def test_only_assistant_turns_are_learned_and_weight_zero_is_skipped(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    example = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "the cat"},
            {"role": "assistant", "content": "a dog", "weight": 0},
            {"role": "user", "content": "blue sky"},
            {"role": "assistant", "content": "red sea"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": [{"type": "text", "text": "world"}]},
        ]
    }
    encoded = encode_chat_example(tokenizer, example, max_seq_length=512)

    assert learned_text(tokenizer, encoded) == "red sea<|im_end|>world<|im_end|>"
    as_text = [{"role": m["role"], "content": m["content"]} for m in example["messages"]]
    as_text[-1]["content"] = "world"
    rendered = tokenizer.apply_chat_template(as_text, tokenize=False)
    assert tokenizer.decode(encoded.input_ids) == rendered
    # Targets are next-token labels: each learned position predicts the following token.
    for position, target in enumerate(encoded.targets):
        if target != IGNORE_INDEX:
            assert target == encoded.input_ids[position + 1]
    assert encoded.targets[-1] == IGNORE_INDEX


def test_developer_role_is_rendered_as_system(tokenizer: PreTrainedTokenizerBase) -> None:
    example = {
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ]
    }
    encoded = encode_chat_example(tokenizer, example, max_seq_length=512)
    assert "<|im_start|>system\nbe brief" in tokenizer.decode(encoded.input_ids)
    assert learned_text(tokenizer, encoded) == "hello<|im_end|>"


def test_long_examples_are_truncated_and_counted(tokenizer: PreTrainedTokenizerBase) -> None:
    def chat(question: str, answer: str) -> dict:
        return {
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        }

    short = chat("hi", "hello")
    limit = encode_chat_example(tokenizer, short, 512).length + 8
    long_answer = chat("hi", " ".join(["the cat sat"] * 40))
    long_prompt = chat(" ".join(["the dog ran"] * 40), "ok")
    dataset = encode_dataset(tokenizer, [short, long_answer, long_prompt], limit)

    assert dataset.truncated == 2
    assert dataset.dropped == 1  # nothing of its answer survives the cut
    assert [e.length for e in dataset.examples] == [limit - 8, limit]
    assert dataset.examples[1].n_targets > 0


def test_micro_batch_plan_places_every_example_once_in_nearly_full_rows() -> None:
    rng = random.Random(3)
    lengths = [rng.randint(5, 300) for _ in range(200)]
    indices = list(range(0, 200, 2))
    rows = plan_micro_batches(lengths, indices, token_budget=600)

    assert sorted(i for row in rows for i in row) == indices
    assert all(sum(lengths[i] for i in row) <= 600 for row in rows)
    assert len(rows) <= math.ceil(sum(lengths[i] for i in indices) / 600) + 1
    # An example longer than the budget gets a row of its own.
    assert plan_micro_batches([700, 100, 50], [0, 1, 2], token_budget=600) == [[0], [1, 2]]


@pytest.mark.parametrize("segment_attention", [True, False], ids=["segments", "sdpa-mask"])
def test_a_packed_example_gets_the_logits_it_has_alone(
    tiny_model_dir: Path, tokenizer: PreTrainedTokenizerBase, segment_attention: bool
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    conversations = chat_examples(6, seed=5)
    conversations[0]["messages"][0]["content"] = " ".join(["the cat sat on a mat"] * 20)
    examples = [encode_chat_example(tokenizer, e, 512) for e in conversations]
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([e.input_ids])).logits[0] for e in examples]
        if segment_attention:
            assert use_segment_attention(model)
        batch = pack_examples(examples, list(range(6)))
        packed = model(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            use_cache=False,
            segment_lengths=batch.segment_lengths if segment_attention else None,
        ).logits[0]

    assert model.config._attn_implementation == (
        "tuneforge_segments" if segment_attention else "sdpa"
    )
    offset = 0
    for example, expected in zip(examples, alone, strict=True):
        inside = packed[offset : offset + example.length]
        torch.testing.assert_close(inside, expected, atol=1e-5, rtol=1e-4)
        offset += example.length
