"""Choosing each neuron's range: the shortest interval holding a `coverage` fraction of its inputs."""

from __future__ import annotations

import torch

from tardis.core.activations import EXACT_PIECES


def shortest_interval(counts: torch.Tensor, edges: torch.Tensor, coverage: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per neuron, the narrowest run of histogram bins holding ≥ coverage of its samples.

    counts: int [f, K] per-bin counts; edges: [f, K+1] bin edges. Returns (lo, hi) [f] at bin edges.
    Vectorized over neurons: for every start bin, a binary search over the cumulative counts finds
    the first end bin that reaches the target.
    """
    f, K = counts.shape
    cum = torch.zeros(f, K + 1, dtype=torch.int64, device=counts.device)
    cum[:, 1:] = counts.cumsum(1)
    total = cum[:, -1:]
    target = torch.ceil(total.double() * coverage).long().clamp_min(1)
    ends = torch.searchsorted(cum, (cum[:, :K] + target).contiguous())  # index into cum: end edge
    valid = ends <= K
    ends_c = ends.clamp(max=K)
    width = edges.gather(1, ends_c) - edges[:, :K]
    width = torch.where(valid, width, torch.full_like(width, float("inf")))
    start = width.argmin(1, keepdim=True)
    lo = edges.gather(1, start).squeeze(1)
    hi = edges.gather(1, ends_c.gather(1, start)).squeeze(1)
    return lo, hi


def snap_to_exact_pieces(
    act: str, nonpos_fraction: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """For piecewise-linear activations, use the exact piece that holds more of the inputs.

    ReLU: (−∞, 0] with a = c = 0 when most inputs are ≤ 0 (TARDIS becomes activation sparsity),
    else [0, ∞) with a = 1, c = 0; identity: (−∞, ∞) with a = 1. Pieces split at z = 0, so the
    fraction of inputs ≤ 0 picks one. Returns (lo, hi, slope, intercept); slope/intercept are None
    for smooth activations (they are then fitted by least squares).
    """
    pieces = EXACT_PIECES.get(act)
    if pieces is None:
        return lo, hi, None, None
    neg, pos = pieces if len(pieces) == 2 else (pieces[0], pieces[0])
    use_neg = nonpos_fraction >= 0.5
    new_lo = torch.where(use_neg, torch.full_like(lo, neg.lo), torch.full_like(lo, pos.lo))
    new_hi = torch.where(use_neg, torch.full_like(hi, neg.hi), torch.full_like(hi, pos.hi))
    slope = torch.where(use_neg, neg.slope, pos.slope).to(torch.float64)
    intercept = torch.where(use_neg, neg.intercept, pos.intercept).to(torch.float64)
    return new_lo, new_hi, slope, intercept
