"""Shared fixtures: a small byte-level BPE tokenizer, seeded synthetic text, tiny random models per family."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "i",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "her",
    "she",
    "there",
    "been",
    "one",
    "all",
    "we",
    "their",
    "has",
    "would",
    "when",
    "if",
    "so",
    "no",
    "will",
    "more",
    "can",
    "out",
    "up",
    "said",
    "what",
    "about",
    "into",
    "than",
    "them",
    "only",
    "time",
    "could",
    "new",
    "some",
    "these",
    "two",
    "may",
    "first",
    "then",
    "do",
    "any",
    "like",
    "my",
    "now",
    "over",
    "such",
    "our",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "river",
    "city",
    "music",
    "army",
    "king",
    "song",
    "ship",
    "storm",
    "game",
    "church",
    "school",
    "war",
    "season",
    "film",
    "album",
    "team",
    "station",
    "road",
]


def synthetic_texts(n: int, seed: int, words_per_text: int = 120) -> list[str]:
    """Deterministic English-like texts: Zipf-weighted words with sentence punctuation."""
    rng = random.Random(seed)
    weights = [1.0 / (k + 1) for k in range(len(WORDS))]
    texts = []
    for _ in range(n):
        ws = rng.choices(WORDS, weights=weights, k=words_per_text)
        for k in range(8, len(ws), rng.randint(7, 15)):
            ws[k] = ws[k] + "."
        texts.append(" ".join(ws).capitalize())
    return texts


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 384-token byte-level BPE trained on synthetic text, as a transformers fast tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(synthetic_texts(200, seed=0), trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.pad_token = fast.eos_token
    return fast


@pytest.fixture(scope="session")
def texts() -> list[str]:
    """Calibration texts (seed 1)."""
    return synthetic_texts(400, seed=1)


def tiny_config(family: str, vocab: int) -> transformers.PretrainedConfig:
    """A small random-weight config of `family` (d = 64, f = 256, 2 layers)."""
    d, f, L, H = 64, 256, 2, 4
    common: dict[str, Any] = {"vocab_size": vocab}
    builders: dict[str, Callable[[], transformers.PretrainedConfig]] = {
        "gpt2": lambda: transformers.GPT2Config(n_embd=d, n_layer=L, n_head=H, n_inner=f, n_positions=128, **common),
        "gpt_neox": lambda: transformers.GPTNeoXConfig(
            hidden_size=d, num_hidden_layers=L, num_attention_heads=H, intermediate_size=f, max_position_embeddings=128, **common
        ),
        "falcon": lambda: transformers.FalconConfig(
            hidden_size=d, num_hidden_layers=L, num_attention_heads=H, ffn_hidden_size=f, bias=True, **common
        ),
        "bloom": lambda: transformers.BloomConfig(hidden_size=d, n_layer=L, n_head=H, **common),
        "opt": lambda: transformers.OPTConfig(
            hidden_size=d, num_hidden_layers=L, num_attention_heads=H, ffn_dim=f, word_embed_proj_dim=d,
            max_position_embeddings=128, **common,
        ),
        "phi": lambda: transformers.PhiConfig(
            hidden_size=d, num_hidden_layers=L, num_attention_heads=H, intermediate_size=f, max_position_embeddings=128, **common
        ),
        "gptj": lambda: transformers.GPTJConfig(n_embd=d, n_layer=L, n_head=H, n_inner=f, rotary_dim=8, n_positions=128, **common),
        "gpt_bigcode": lambda: transformers.GPTBigCodeConfig(
            n_embd=d, n_layer=L, n_head=H, n_inner=f, n_positions=128, **common
        ),
        "bert": lambda: transformers.BertConfig(
            hidden_size=d, num_hidden_layers=L, num_attention_heads=H, intermediate_size=f, max_position_embeddings=128, **common
        ),
    }  # fmt: skip
    return builders[family]()


FAMILIES = ("gpt2", "gpt_neox", "falcon", "bloom", "opt", "phi", "gptj", "gpt_bigcode", "bert")


def build_model(family: str, vocab: int, seed: int = 0) -> torch.nn.Module:
    """A float32 random-weight model of `family` in eval mode (BERT: BertModel, others: causal LM)."""
    torch.manual_seed(seed)
    config = tiny_config(family, vocab)
    cls = transformers.AutoModel if family == "bert" else transformers.AutoModelForCausalLM
    model = cls.from_config(config, dtype=torch.float32)
    # Scale up FFN input weights so pre-activations spread over the nonlinear part of the activation.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and any(k in name for k in ("c_fc", "h_to_4h", "fc1", "fc_in", "intermediate.dense")):
                p.mul_(8.0)
    return model.eval()


def saved_model(family: str, vocab: int, root: Path, seed: int = 0) -> torch.nn.Module:
    """build_model, saved to `root/family` and loaded back (so it has weight files on disk)."""
    model = build_model(family, vocab, seed)
    path = root / family
    model.save_pretrained(path)
    cls = type(model)
    return cls.from_pretrained(path, dtype=torch.float32).eval()
