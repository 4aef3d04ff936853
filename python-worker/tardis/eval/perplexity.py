"""Perplexity of a causal LM on held-out text with a sliding window."""

from __future__ import annotations

import math
from typing import Any

import torch

from tardis.data import join_tokens


@torch.no_grad()
def perplexity(
    model: Any, tokenizer: Any, texts: list[str], *, context: int = 256, stride: int = 128
) -> dict[str, float]:
    """exp(mean NLL) over the joined texts, scoring each token once with up to `context` tokens of history.

    Windows of `context` tokens advance by `stride`; only the tokens new to each window are scored
    (the first window scores all but its first token). Returns {"ppl", "nll", "tokens"}.
    """
    tokens = torch.tensor(join_tokens(tokenizer, texts), dtype=torch.long)
    device = next(model.parameters()).device
    total_nll, scored, prev_end = 0.0, 0, 0
    for start in range(0, max(len(tokens) - 1, 1), stride):
        end = min(start + context, len(tokens))
        window = tokens[start:end].unsqueeze(0).to(device)
        logits = model(input_ids=window).logits.float()
        logp = torch.log_softmax(logits[0, :-1], dim=-1)
        targets = window[0, 1:]
        nll = -logp.gather(1, targets.unsqueeze(1)).squeeze(1)
        new = max(prev_end - start - 1, 0)  # targets already scored by the previous window
        total_nll += float(nll[new:].sum())
        scored += int(nll[new:].numel())
        prev_end = end
        if end == len(tokens):
            break
    mean = total_nll / max(scored, 1)
    return {"ppl": math.exp(mean), "nll": mean, "tokens": float(scored)}
