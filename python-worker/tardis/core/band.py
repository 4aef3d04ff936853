"""The flag band: where a neuron's line is as good as it is inside its range (FoldConfig.band_tolerance).

The range [l, u] (the shortest interval holding `coverage` of a neuron's inputs) is where the line
a·z + c is fitted. A neuron whose input lands just outside it is not necessarily badly served by the
line: for a smooth activation the misfit |act(z) − a·z − c| grows from the range's ends outward,
slowly at first. The band [l', u'] ⊇ [l, u] is the interval around the range on which the misfit
stays ≤ κ · (the largest misfit inside the range); only inputs outside the band are recomputed.
κ = 0 gives the band = the range (the paper's test). Exact linear pieces (ReLU, identity) have no
misfit inside their range, so their band is their range for every κ.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tardis.core.activations import activation

BAND_REACH = 4.0
"""How far beyond the range the band may reach, in range widths per side (a cap: the band is finite)."""
_SCAN_STEPS = 512  # grid points per side over the reach; a crossing is then refined by bisection
_INSIDE_POINTS = 257  # grid points over [l, u] for the largest misfit inside the range
_BISECT = 30
_CHUNK = 2048  # neurons per vectorized block (bounds memory: chunk × steps float64)


def _misfit(
    act: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, a: torch.Tensor, c: torch.Tensor
) -> torch.Tensor:
    return (act(z) - a.unsqueeze(1) * z - c.unsqueeze(1)).abs()


def inside_misfit(
    act_name: str, lo: torch.Tensor, hi: torch.Tensor, slope: torch.Tensor, intercept: torch.Tensor
) -> torch.Tensor:
    """Per neuron, the largest |act(z) − a·z − c| over z ∈ [l, u] (a grid of 257 points, float64).

    Infinite or empty ranges give 0."""
    act = activation(act_name)
    lo64, hi64 = lo.double(), hi.double()
    ok = torch.isfinite(lo64) & torch.isfinite(hi64) & (hi64 > lo64)
    out = torch.zeros_like(lo64)
    t = torch.linspace(0.0, 1.0, _INSIDE_POINTS, dtype=torch.float64, device=lo.device)
    idx = ok.nonzero().squeeze(1)
    for s in range(0, idx.numel(), _CHUNK):
        i = idx[s : s + _CHUNK]
        z = lo64[i].unsqueeze(1) + (hi64[i] - lo64[i]).unsqueeze(1) * t
        out[i] = _misfit(act, z, slope.double()[i], intercept.double()[i]).amax(1)
    return out


def _reach_side(
    act: Callable[[torch.Tensor], torch.Tensor],
    edge: torch.Tensor,
    step: torch.Tensor,
    a: torch.Tensor,
    c: torch.Tensor,
    tau: torch.Tensor,
) -> torch.Tensor:
    """How far from `edge` (in the direction of `step`'s sign) the misfit first exceeds tau, for one side.

    Scans the edge and `_SCAN_STEPS` points of `step` beyond it, then bisects between the last point
    within tau and the first beyond it; returns the distance in units of `step` (0 when the edge itself
    is beyond tau, the full reach when no point is).
    """
    k = torch.arange(0, _SCAN_STEPS + 1, dtype=torch.float64, device=edge.device)
    z = edge.unsqueeze(1) + step.unsqueeze(1) * k
    bad = _misfit(act, z, a, c) > tau.unsqueeze(1)
    first = torch.where(bad, k, torch.full_like(k, _SCAN_STEPS + 1.0)).amin(1)
    crossed = (first >= 1) & (first <= _SCAN_STEPS)
    good_k, bad_k = (first - 1.0).clamp(min=0), first.clamp(max=_SCAN_STEPS)
    for _ in range(_BISECT):
        mid = 0.5 * (good_k + bad_k)
        m_bad = _misfit(act, (edge + step * mid).unsqueeze(1), a, c).squeeze(1) > tau
        bad_k = torch.where(crossed & m_bad, mid, bad_k)
        good_k = torch.where(crossed & ~m_bad, mid, good_k)
    return torch.where(
        first > _SCAN_STEPS, torch.full_like(good_k, float(_SCAN_STEPS)), torch.where(crossed, good_k, 0.0)
    )


def widen_to_band(
    act_name: str,
    lo: torch.Tensor,
    hi: torch.Tensor,
    slope: torch.Tensor,
    intercept: torch.Tensor,
    tolerance: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The band [l', u'] per neuron (see the module docstring), as float32 like the ranges.

    lo, hi, slope, intercept: [f]. From each end of the range outward the band extends to the first
    point where |act(z) − a·z − c| > tolerance · inside_misfit, at most BAND_REACH range widths.
    Neurons with an infinite or empty range, no misfit inside it, or tolerance 0 keep their range.
    """
    lo64, hi64 = lo.double(), hi.double()
    if tolerance <= 0:
        return lo.float(), hi.float()
    tau = tolerance * inside_misfit(act_name, lo, hi, slope, intercept)
    ok = torch.isfinite(lo64) & torch.isfinite(hi64) & (hi64 > lo64) & (tau > 0)
    new_lo, new_hi = lo64.clone(), hi64.clone()
    act = activation(act_name)
    a64, c64 = slope.double(), intercept.double()
    idx = ok.nonzero().squeeze(1)
    for s in range(0, idx.numel(), _CHUNK):
        i = idx[s : s + _CHUNK]
        step = (hi64[i] - lo64[i]) * (BAND_REACH / _SCAN_STEPS)
        up = _reach_side(act, hi64[i], step, a64[i], c64[i], tau[i])
        down = _reach_side(act, lo64[i], -step, a64[i], c64[i], tau[i])
        new_hi[i] = hi64[i] + step * up
        new_lo[i] = lo64[i] - step * down
    # float32 storage must not round the band inside the range
    return torch.minimum(new_lo.float(), lo.float()), torch.maximum(new_hi.float(), hi.float())
