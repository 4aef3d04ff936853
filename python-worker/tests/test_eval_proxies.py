"""Cloze and next-sentence proxies are deterministic and well formed; scorers, perplexity and the encoder
agreement metric match hand values."""

from __future__ import annotations

import itertools
import math
import random
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from conftest import WORDS, build_model
from torch import nn

from tardis.eval.embeddings import agreement, neighbours
from tardis.eval.perplexity import perplexity
from tardis.eval.proxies import (
    ChoiceItem,
    ClozeItem,
    choice_accuracy,
    choice_items,
    cloze_accuracy,
    cloze_items,
    sentences,
)


def passages(n: int, seed: int) -> list[str]:
    """Texts of 4–9 capitalised sentences of 6–14 words (last words ≥ 3 letters), fixed by `seed`."""
    rng = random.Random(seed)
    long_words = [w for w in WORDS if len(w) >= 3]
    out = []
    for _ in range(n):
        sents = []
        for _ in range(rng.randint(4, 9)):
            ws = [*rng.choices(WORDS, k=rng.randint(5, 13)), rng.choice(long_words)]
            sents.append(" ".join(ws).capitalize() + ".")
        out.append(" ".join(sents))
    return out


TEXTS = passages(60, seed=7)


def test_sentences_split_at_sentence_ends_only() -> None:
    assert sentences("It rained. Then it was 3.5 degrees! Was it? yes.") == [
        "It rained.",
        "Then it was 3.5 degrees!",
        "Was it? yes.",
    ]


def test_cloze_items_are_deterministic_per_seed() -> None:
    a, b, c = cloze_items(TEXTS, 30, seed=1), cloze_items(TEXTS, 30, seed=1), cloze_items(TEXTS, 30, seed=2)
    assert a == b
    assert a != c
    assert len(a) == 30


def test_cloze_items_are_a_passage_minus_its_final_word() -> None:
    joined = " ".join(TEXTS)
    for it in cloze_items(TEXTS, 30, seed=1):
        assert f"{it.context} {it.target}." in joined  # the passage ends at a sentence end
        assert it.target.isalpha() and len(it.target) >= 3
        assert len(it.context.split()) >= 19


def test_cloze_items_skip_a_separate_final_period_in_tokenized_text() -> None:
    text = "The army marched to the city at dawn . " * 3 + "Then the king spoke to the army of the river ."
    items = cloze_items([text], 5, seed=0, min_words=5)
    assert items and all(it.target in ("dawn", "river") for it in items)
    assert any(it.context.endswith("to the army of the") and it.target == "river" for it in items)


def test_choice_items_are_deterministic_and_well_formed() -> None:
    a, b, c = choice_items(TEXTS, 25, seed=1), choice_items(TEXTS, 25, seed=1), choice_items(TEXTS, 25, seed=2)
    assert a == b
    assert a != c
    assert len(a) == 25
    for it in a:
        assert len(it.options) == 4 and len(set(it.options)) == 4
        true = it.options[it.answer]
        source = [t for t in TEXTS if f"{it.context} {true}" in t]
        assert source, "context and true option must be consecutive sentences of one text"
        for k, opt in enumerate(it.options):
            if k != it.answer:
                assert all(opt not in t for t in source), "a distractor must come from another text"
    assert len({it.answer for it in a}) > 1  # the true option is not always in the same slot


class WordTokenizer:
    """One id per whitespace-separated word (unknown words get new ids); EOS id 0."""

    eos_token_id = 0

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {"<eos>": 0}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]}


class TableLM(nn.Module):
    """A bigram 'LM': the logits at each position are a fixed row of `table` chosen by the current token."""

    def __init__(self, table: torch.Tensor, positions: int = 64) -> None:
        super().__init__()
        self.table = nn.Parameter(table)
        self.config = SimpleNamespace(n_positions=positions)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Any:
        return SimpleNamespace(logits=self.table[input_ids])


def test_perplexity_matches_a_hand_computed_bigram_nll() -> None:
    tok = WordTokenizer()
    texts = ["a b c a b", "c c a b d a", "b a"]
    ids: list[int] = []
    for t in texts:
        ids += tok(t)["input_ids"] + [0]  # perplexity joins texts with EOS
    table = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    logp = torch.log_softmax(table.double(), dim=-1)
    hand = -sum(float(logp[a, b]) for a, b in itertools.pairwise(ids)) / (len(ids) - 1)
    for context, stride in ((4, 2), (5, 3), (64, 32)):  # every token is scored exactly once
        out = perplexity(TableLM(table), tok, texts, context=context, stride=stride)
        assert out["tokens"] == len(ids) - 1
        assert out["nll"] == pytest.approx(hand, rel=1e-5)
        assert out["ppl"] == pytest.approx(math.exp(hand), rel=1e-5)


def test_cloze_scorer_counts_greedy_hits_and_choice_scorer_uses_mean_log_likelihood() -> None:
    tok = WordTokenizer()
    for w in ("x", "the", "city", "river", "road", "hot", "cold"):
        tok(w)
    city, hot, cold = (tok.vocab[w] for w in ("city", "hot", "cold"))
    table = torch.zeros(8, 8)
    table[:, city] = 5.0  # every position predicts "city"
    table[:, hot], table[:, cold] = 2.0, -2.0
    lm = TableLM(table)
    items = [ClozeItem("x the", "city"), ClozeItem("x the", "river"), ClozeItem("the x", "city")]
    out = cloze_accuracy(lm, tok, items, batch_size=2)
    assert out["cloze_acc"] == pytest.approx(2 / 3)
    # options' mean per-token log p: "hot hot" beats "hot cold" beats "cold", whatever their lengths
    choices = [
        ChoiceItem("x", ("cold", "hot cold", "hot hot", "cold cold cold"), answer=2),
        ChoiceItem("x", ("hot", "cold", "river", "cold cold"), answer=1),  # "hot" wins: a miss
    ]
    assert choice_accuracy(lm, tok, choices)["choice_acc"] == 0.5


def test_scores_do_not_depend_on_batching_with_right_padding(tokenizer: Any) -> None:
    model = build_model("gpt2", len(tokenizer))
    clozes, choices = cloze_items(TEXTS, 12, seed=3), choice_items(TEXTS, 6, seed=3)
    assert cloze_accuracy(model, tokenizer, clozes, batch_size=1) == pytest.approx(
        cloze_accuracy(model, tokenizer, clozes, batch_size=5)
    )
    assert choice_accuracy(model, tokenizer, choices, batch_size=1) == pytest.approx(
        choice_accuracy(model, tokenizer, choices, batch_size=7)
    )


def test_encoder_agreement_is_one_for_identical_embeddings_and_counts_shared_neighbours() -> None:
    # 4 points on a circle: each one's nearest other point is its neighbour in angle
    angles = torch.tensor([0.0, 0.3, 1.6, 1.9])
    dense = torch.stack([angles.cos(), angles.sin()], dim=1)
    same = agreement(dense, dense.clone(), k=1)
    assert same["cosine_mean"] == pytest.approx(1.0) and same["top1_agreement"] == 1.0
    # swap points 1 and 2: now 0↔2 and 1↔3 are nearest pairs, and every neighbour set changes
    swapped = dense[[0, 2, 1, 3]]
    out = agreement(dense, swapped, k=1)
    assert out["top1_agreement"] == 0.0
    assert out["cosine_mean"] == pytest.approx(float((1 + 2 * math.cos(1.3) + 1) / 4), rel=1e-5)
    assert neighbours(dense, 1).squeeze(1).tolist() == [1, 0, 3, 2]
