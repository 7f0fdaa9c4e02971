from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from tests.providers.local.factories import chat_examples
from tuneforge.providers.local.data import (
    IGNORE_INDEX,
    EncodedExample,
    collate_rows,
    encode_chat_example,
    encode_dataset,
    plan_micro_batches,
)


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


def test_micro_batch_plan_places_every_example_once_within_budget() -> None:
    rng = random.Random(3)
    lengths = [rng.randint(5, 300) for _ in range(200)]
    indices = list(range(0, 200, 2))
    batches = plan_micro_batches(lengths, indices, token_budget=600)

    placed = [i for rows in batches for row in rows for i in row]
    assert sorted(placed) == indices
    padded = 0
    for rows in batches:
        width = max(lengths[row[0]] for row in rows)
        assert all(sum(lengths[i] for i in row) <= width for row in rows)
        assert len(rows) * width <= max(600, width)
        padded += len(rows) * width
    real = sum(lengths[i] for i in indices)
    assert padded < 1.15 * real  # packing leaves little padding


def test_packed_rows_give_each_example_the_logits_it_has_alone(
    tiny_model_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    conversations = chat_examples(6, seed=5)
    conversations[0]["messages"][0]["content"] = " ".join(["the cat sat on a mat"] * 20)
    examples = [encode_chat_example(tokenizer, e, 512) for e in conversations]
    lengths = [e.length for e in examples]
    batches = plan_micro_batches(lengths, list(range(6)), token_budget=2 * max(lengths))
    assert any(len(row) > 1 for rows in batches for row in rows), "nothing was packed"

    with torch.no_grad():
        for rows in batches:
            batch = collate_rows(examples, rows)
            packed = model(
                input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False
            ).logits
            for r, row in enumerate(rows):
                offset = 0
                for index in row:
                    ids = torch.tensor([examples[index].input_ids])
                    alone = model(input_ids=ids, use_cache=False).logits[0]
                    inside = packed[r, offset : offset + lengths[index]]
                    torch.testing.assert_close(inside, alone, atol=1e-5, rtol=1e-4)
                    offset += lengths[index]
