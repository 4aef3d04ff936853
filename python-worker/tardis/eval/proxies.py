"""Accuracy proxies built deterministically from held-out text — proxies, not the real benchmarks.

- cloze (LAMBADA-style): a passage ending at a sentence end; the model must produce the passage's
  final word greedily from the words before it.
- choice (HellaSwag-style): context sentences, then the true next sentence against 3 distractor
  sentences drawn from other passages; the option with the highest length-normalised (per-token)
  log-likelihood is the model's answer. Chance is 25%.

Item builders are pure functions of (texts, n, seed); scorers take a causal LM and its tokenizer.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

import torch

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
WORD = re.compile(r"^[A-Za-z]+$")


@dataclass(frozen=True)
class ClozeItem:
    """Predict `target` (one word, no leading space) after `context`."""

    context: str
    target: str


@dataclass(frozen=True)
class ChoiceItem:
    """Pick the true continuation of `context` among `options`; `answer` is its index."""

    context: str
    options: tuple[str, ...]
    answer: int


def sentences(text: str) -> list[str]:
    """Split a passage into sentences at '.', '!' or '?' followed by a capitalised word."""
    return [s.strip() for s in SENTENCE_END.split(text.strip()) if s.strip()]


def cloze_items(texts: list[str], n: int, seed: int, *, max_words: int = 80, min_words: int = 20) -> list[ClozeItem]:
    """Up to `n` cloze items: a passage of whole sentences (≤ `max_words` words) minus its final word.

    Each passage is cut from one text so that it ends at a sentence end whose last word is alphabetic
    and at least 3 letters long (so the answer is a word, not a number or a stray token).
    """
    candidates: list[ClozeItem] = []
    for text in texts:
        sents = sentences(text)
        words: list[str] = []
        for s in sents:
            words.extend(s.split())
            if len(words) > max_words:
                words = words[-max_words:]
                # start the passage at a sentence start when one is in the window
                starts = [i for i in range(1, len(words)) if words[i - 1][-1:] in ".!?" and words[i][:1].isupper()]
                if starts:
                    words = words[starts[0] :]
            body = list(words)
            while body and not any(ch.isalnum() for ch in body[-1]):
                body.pop()  # tokenized text (WikiText) ends sentences with a separate " ."
            last = body[-1].rstrip(".!?\"')") if body else ""
            if len(body) >= min_words and WORD.match(last) and len(last) >= 3:
                candidates.append(ClozeItem(context=" ".join(body[:-1]), target=last))
                words = []  # passages do not overlap
    rng = random.Random(seed)
    return rng.sample(candidates, min(n, len(candidates)))


def choice_items(
    texts: list[str], n: int, seed: int, *, context_sentences: int = 2, options: int = 4, min_words: int = 5
) -> list[ChoiceItem]:
    """Up to `n` next-sentence items: the true next sentence vs `options − 1` from other texts, shuffled."""
    per_text = [[s for s in sentences(t) if len(s.split()) >= min_words] for t in texts]
    slots = [(i, k) for i, ss in enumerate(per_text) for k in range(context_sentences, len(ss))]
    if sum(1 for ss in per_text if ss) < options:
        return []
    rng = random.Random(seed)
    picked = rng.sample(slots, min(n, len(slots)))
    items = []
    for i, k in picked:
        ss = per_text[i]
        others: list[str] = []
        while len(others) < options - 1:
            j = rng.randrange(len(per_text))
            if j != i and per_text[j]:
                s = per_text[j][rng.randrange(len(per_text[j]))]
                if s not in others:
                    others.append(s)
        opts = [ss[k], *others]
        order = list(range(options))
        rng.shuffle(order)
        items.append(
            ChoiceItem(
                context=" ".join(ss[k - context_sentences : k]),
                options=tuple(opts[o] for o in order),
                answer=order.index(0),
            )
        )
    return items


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _max_positions(model: Any) -> int:
    config = model.config
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return 1024


@torch.no_grad()
def _continuation_logprobs(
    model: Any, pairs: list[tuple[list[int], list[int]]], batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each (context ids, continuation ids): per-token log p and greedy argmax over the continuation.

    Sequences are right-padded in batches (padding only follows the scored tokens, so a causal
    model's scores are unchanged); contexts are cut from the left to fit the model's positions.
    """
    device = next(model.parameters()).device
    limit = _max_positions(model)
    seqs = []
    for ctx, cont in pairs:
        keep = max(limit - len(cont), 1)
        seqs.append((ctx[-keep:], cont[: limit - 1]))
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for b in range(0, len(seqs), batch_size):
        chunk = seqs[b : b + batch_size]
        lengths = [len(c) + len(t) for c, t in chunk]
        width = max(lengths)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        attn = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, (c, t) in enumerate(chunk):
            ids[r, : len(c) + len(t)] = torch.tensor(c + t)
            attn[r, : len(c) + len(t)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        for r, (c, t) in enumerate(chunk):
            pos = torch.arange(len(c) - 1, len(c) + len(t) - 1, device=device)  # positions predicting t
            target = torch.tensor(t, device=device)
            out.append((logp[r, pos].gather(1, target[:, None]).squeeze(1).cpu(), logp[r, pos].argmax(-1).cpu()))
    return out


def cloze_accuracy(model: Any, tokenizer: Any, items: list[ClozeItem], *, batch_size: int = 16) -> dict[str, float]:
    """Fraction of items whose final word the model produces greedily (every token the argmax)."""
    pairs = [(_encode(tokenizer, it.context), _encode(tokenizer, " " + it.target)) for it in items]
    scored = _continuation_logprobs(model, pairs, batch_size)
    hits = [bool((argmax == torch.tensor(cont)).all()) for (_, argmax), (_, cont) in zip(scored, pairs, strict=True)]
    nll = [-float(lp.sum()) for lp, _ in scored]
    n = max(len(items), 1)
    return {"cloze_acc": sum(hits) / n, "cloze_target_nll": sum(nll) / n, "cloze_items": float(len(items))}


def choice_accuracy(model: Any, tokenizer: Any, items: list[ChoiceItem], *, batch_size: int = 16) -> dict[str, float]:
    """Fraction of items where the true option has the highest mean per-token log-likelihood."""
    pairs: list[tuple[list[int], list[int]]] = []
    for it in items:
        ctx = _encode(tokenizer, it.context)
        pairs.extend((ctx, _encode(tokenizer, " " + opt)) for opt in it.options)
    scored = _continuation_logprobs(model, pairs, batch_size)
    k = len(items[0].options) if items else 0
    correct = 0
    for i, it in enumerate(items):
        means = [float(lp.mean()) for lp, _ in scored[i * k : (i + 1) * k]]
        correct += int(max(range(k), key=lambda j: means[j]) == it.answer)
    return {"choice_acc": correct / max(len(items), 1), "choice_items": float(len(items))}
