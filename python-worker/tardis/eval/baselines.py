"""Pruning baselines for the FFN weights (W1 and W2 of every FFN): magnitude, Wanda and RIA, unstructured.

TARDIS is compared against these at the same FFN parameter reduction (METHOD.md §6). Only FFN
weights are pruned; attention, embeddings and biases are left alone.

- magnitude: score |W_ij|, the lowest `sparsity` fraction of each matrix is zeroed (layer-wise).
- Wanda (Sun et al. 2023): score |W_ij|·‖X_j‖₂, pruned per output row.
- RIA (Zhang et al. 2024, "Plug-and-Play"): score (|W_ij|/Σ_k|W_ik| + |W_ij|/Σ_k|W_kj|)·‖X_j‖₂^0.5,
  pruned per output row.

X is the matrix's input on calibration text: the FFN input x for W1, the activation h = act(W1·x + b1)
for W2. The norms come from one pass over the dense model (not Wanda's sequential re-collection after
each pruned layer), accumulated as running sums of squares per input channel (memory O(d + f) per FFN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from tardis.arch.base import FFNSite
from tardis.arch.registry import adapter_for
from tardis.core.activations import activation

Method = Literal["magnitude", "wanda", "ria"]
METHODS: tuple[Method, ...] = ("magnitude", "wanda", "ria")
RIA_ALPHA = 0.5  # exponent on the activation norm, the RIA paper's default


@dataclass
class InputNorms:
    """Running sums of squares per input channel of one FFN: x [d] for W1, h [f] for W2."""

    x_sq: torch.Tensor  # [d] float64
    h_sq: torch.Tensor  # [f] float64
    tokens: int = 0

    def x_norm(self) -> torch.Tensor:
        """‖X_j‖₂ over all calibration tokens, per input channel of W1 [d]."""
        return self.x_sq.sqrt()

    def h_norm(self) -> torch.Tensor:
        """‖H_j‖₂ over all calibration tokens, per input channel of W2 [f]."""
        return self.h_sq.sqrt()


def sparsity_for_reduction(paper_reduction: float) -> float:
    """The pruning sparsity with the same FFN parameter reduction as TARDIS's paper-definition one.

    Pruning a fraction s of W1 and W2 removes a fraction s of the FFN's parameters (biases, < 0.2%
    of them, are not counted), so the sparsity is the reduction itself, clamped to [0, 1].
    """
    return min(max(float(paper_reduction), 0.0), 1.0)


def scores(method: Method, w: torch.Tensor, in_norm: torch.Tensor | None = None) -> torch.Tensor:
    """Importance of each weight of w [out, in] (higher = kept), float64; in_norm [in] is ‖X_j‖₂."""
    a = w.detach().double().abs()
    if method == "magnitude":
        return a
    if in_norm is None:
        raise ValueError(f"method {method!r} needs the input norms ‖X_j‖₂ of the matrix (collect_input_norms)")
    norm = in_norm.detach().double().to(a.device)
    if norm.shape != (a.shape[1],):
        raise ValueError(f"input norms have shape {tuple(norm.shape)}, expected ({a.shape[1]},) for W {tuple(a.shape)}")
    if method == "wanda":
        return a * norm[None, :]
    if method == "ria":
        eps = torch.finfo(torch.float64).tiny
        row = a.sum(dim=1, keepdim=True).clamp_min(eps)  # Σ over the inputs of output row i
        col = a.sum(dim=0, keepdim=True).clamp_min(eps)  # Σ over the outputs reading input j
        return (a / row + a / col) * norm[None, :].pow(RIA_ALPHA)
    raise ValueError(f"unknown pruning method {method!r}; expected one of {METHODS}")


def keep_mask(score: torch.Tensor, sparsity: float, *, per_row: bool) -> torch.Tensor:
    """Boolean mask [out, in] keeping the highest scores; exactly round(sparsity·numel) weights are zeroed.

    The comparison group is one output row when `per_row` (each row loses ⌊k/out⌋ weights, the first
    k mod out rows one more, so the matrix total is exact), else the whole matrix. Ties are broken by
    position (the earlier index is pruned first), so the mask is deterministic.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity={sparsity!r} is invalid: expected a fraction in [0, 1]")
    groups = score if per_row else score.reshape(1, -1)
    rows, cols = groups.shape
    k = round(sparsity * rows * cols)
    per_group = torch.full((rows,), k // rows, dtype=torch.long)
    per_group[: k % rows] += 1
    order = torch.argsort(groups, dim=1, stable=True)  # ascending: lowest scores first
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(cols, device=order.device).expand(rows, cols).contiguous())
    mask = rank >= per_group.to(rank.device)[:, None]
    return mask.reshape(score.shape)


def mask_for(method: Method, w: torch.Tensor, sparsity: float, in_norm: torch.Tensor | None = None) -> torch.Tensor:
    """The keep-mask of `method` for w [out, in] at `sparsity` (magnitude: layer-wise; Wanda, RIA: per row)."""
    return keep_mask(scores(method, w, in_norm), sparsity, per_row=method != "magnitude")


@contextmanager
def _norm_taps(sites: list[FFNSite], norms: list[InputNorms]) -> Iterator[None]:
    """Forward pre-hooks that add each FFN input's squares (and its activation's) to `norms`."""

    def make(site: FFNSite, acc: InputNorms) -> Callable[..., None]:
        act = activation(site.act)

        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            x2 = x.detach().reshape(-1, x.shape[-1]).float()
            h = act(x2 @ site.w1.float().T + site.b1.float())
            acc.x_sq += x2.double().pow(2).sum(0)
            acc.h_sq += h.double().pow(2).sum(0)
            acc.tokens += x2.shape[0]

        return hook

    handles = [
        s.input_module.register_forward_pre_hook(make(s, n), with_kwargs=True)
        for s, n in zip(sites, norms, strict=True)
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def collect_input_norms(model: nn.Module, batches: list[torch.Tensor]) -> list[InputNorms]:
    """Per-FFN input-channel sums of squares of x and h over calibration token batches [B, T]."""
    sites = adapter_for(model).sites(model)
    norms = [
        InputNorms(
            x_sq=torch.zeros(s.w1.shape[1], dtype=torch.float64, device=s.w1.device),
            h_sq=torch.zeros(s.w1.shape[0], dtype=torch.float64, device=s.w1.device),
        )
        for s in sites
    ]
    device = next(model.parameters()).device
    model.eval()
    with _norm_taps(sites, norms):
        for batch in batches:
            model(input_ids=batch.to(device))
    return norms


@torch.no_grad()
def prune_ffns(
    model: nn.Module, method: Method, sparsity: float, norms: list[InputNorms] | None = None
) -> dict[str, Any]:
    """Zero `sparsity` of every FFN's W1 and W2 in place by `method`; returns the achieved sparsity.

    Writes go through the adapter's [f, d] / [d, f] views, which share storage with the model's
    parameters (GPT-2's Conv1D weights are transposed views). Wanda and RIA need `norms`.
    """
    sites = adapter_for(model).sites(model)
    if method != "magnitude" and (norms is None or len(norms) != len(sites)):
        raise ValueError(
            f"method {method!r} needs one InputNorms per FFN ({len(sites)}); run collect_input_norms first"
        )
    zeroed, total = 0, 0
    for k, site in enumerate(sites):
        n = norms[k] if norms is not None else None
        for w, in_norm in ((site.w1, n.x_norm() if n else None), (site.w2, n.h_norm() if n else None)):
            mask = mask_for(method, w, sparsity, in_norm).to(w.device)
            w.mul_(mask.to(w.dtype))
            zeroed += int((~mask).sum())
            total += mask.numel()
    return {"method": method, "sparsity_target": sparsity, "sparsity": zeroed / max(total, 1), "ffn_weights": total}
