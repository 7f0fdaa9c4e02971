"""Builders for local-provider tests: a tiny chat model made in well under a second, no hub.

The tokenizer is a byte-level BPE trained here on a few words, with a ChatML template like
SmolLM2's; the model is a 2-layer Llama with random weights. Conversations follow a rule
(the answer repeats the question) so a few training steps visibly lower the loss.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tuneforge.providers.local.jobdir import (
    JobPaths,
    JobSpec,
    parse_local_hyperparameters,
    read_events,
    write_spec,
)

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_WORD_TEXT = (
    "the cat dog sat on a mat ran to park blue red green what is color of sky sea "
    "please tell me about your day it was fine thanks hello world answer question"
)
WORDS = _WORD_TEXT.split()


def chat_examples(count: int, seed: int = 0) -> list[dict]:
    """Deterministic conversations with a learnable rule: the answer repeats the question."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        words = rng.choices(WORDS, k=rng.randint(2, 12))
        question = " ".join(words)
        examples.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": f"you said {question}"},
                ]
            }
        )
    return examples


def write_jsonl(path: Path, examples: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


def build_tiny_model(target: Path) -> Path:
    corpus = [" ".join(WORDS)] * 4 + [" ".join(WORDS[i::3]) for i in range(3)]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def prepare_job_dir(
    root: Path,
    model_dir: Path,
    hyperparameters: dict,
    *,
    n_train: int = 48,
    n_valid: int = 0,
    seed: int = 7,
) -> JobPaths:
    """A job directory as ``create_job`` writes it, for running the trainer in-process."""
    paths = JobPaths(root)
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(paths.train_file, chat_examples(n_train))
    if n_valid:
        write_jsonl(paths.valid_file, chat_examples(n_valid, seed=seed + 1))
    write_spec(
        paths,
        JobSpec(
            job_id=root.name,
            base_model="tiny-llama",
            base_model_path=str(model_dir),
            hyperparameters=parse_local_hyperparameters(hyperparameters).model_dump(),
            seed=seed,
            has_validation=bool(n_valid),
        ),
    )
    return paths


def metric_events(paths: JobPaths) -> list[dict]:
    events, _ = read_events(paths.progress, 0)
    return [e for e in events if e["type"] == "metrics"]
