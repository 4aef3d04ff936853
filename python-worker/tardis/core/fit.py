"""Least-squares lines act(z) ≈ a·z + c fitted on the samples inside each neuron's range."""

from __future__ import annotations

import torch

from tardis.core.stats import FitSums


def fit_lines(s: FitSums) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slope a, intercept c and residual sum of squares per neuron, from in-range sums (float64).

    Density-weighted because the sums run over the calibration samples themselves. A neuron with
    fewer than two in-range samples or no spread gets a flat line through the mean.
    """
    n = s.n
    denom = n * s.szz - s.sz * s.sz
    ok = (n >= 2) & (denom > 1e-12 * n * n * (s.szz / n.clamp_min(1)).clamp_min(1e-30))
    slope = torch.where(ok, (n * s.szh - s.sz * s.sh) / torch.where(ok, denom, 1.0), 0.0)
    intercept = torch.where(n > 0, (s.sh - slope * s.sz) / n.clamp_min(1), 0.0)
    sse = (
        s.shh
        - 2 * slope * s.szh
        - 2 * intercept * s.sh
        + slope * slope * s.szz
        + 2 * slope * intercept * s.sz
        + n * intercept * intercept
    ).clamp_min(0)
    return slope, intercept, sse
