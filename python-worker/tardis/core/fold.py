"""Folding: W2·diag(a)·W1 and its bias, computed in float64 (METHOD.md §1)."""

from __future__ import annotations

import torch


def fold(
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    slope: torch.Tensor,
    intercept: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Wf = W2·diag(a)·W1 [d, d] and bf = W2·(a∘b1 + c) + b2 [d], both float64 on the CPU.

    w1 [f, d], b1 [f], w2 [d, f], b2 [d], slope/intercept [f]. Computed on w1's device (at Falcon-7B
    shape a layer is 0.75 TFLOP in float64: seconds on a CPU, milliseconds on an H200).
    """
    dev = w1.device
    w1_, w2_ = w1.detach().to(dev, torch.float64), w2.detach().to(dev, torch.float64)
    a, c = slope.to(dev, torch.float64), intercept.to(dev, torch.float64)
    wf = (w2_ * a) @ w1_
    bf = w2_ @ (a * b1.detach().to(dev, torch.float64) + c) + b2.detach().to(dev, torch.float64)
    return wf.cpu(), bf.cpu()
