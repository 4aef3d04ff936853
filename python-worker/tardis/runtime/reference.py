"""The reference TARDIS FFN in plain PyTorch: the ground truth for every kernel and engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch.nn import functional as F

from tardis.core.activations import activation

if TYPE_CHECKING:
    from tardis.kernels.layout import TiledPredictor

FlagMode = Literal["predict", "predict_i8", "oracle", "all"]


def dense_ffn(
    x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2t: torch.Tensor, b2: torch.Tensor, act: str
) -> torch.Tensor:
    """The original FFN W2·act(W1·x + b1) + b2 for x [N, d] (w1 and w2t are both [f, d]).

    The biases are fused into the GEMMs, as the models' own FFNs run them, so a step the engine runs
    dense costs what the unmodified model's FFN costs.
    """
    return F.linear(activation(act)(F.linear(x, w1, b1)), w2t.T, b2)


def tardis_ffn(
    x: torch.Tensor,
    *,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2t: torch.Tensor,
    wf: torch.Tensor,
    bf: torch.Tensor,
    w1q: torch.Tensor,
    lo_in: torch.Tensor,
    hi_in: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    slope: torch.Tensor,
    intercept: torch.Tensor,
    act: str,
    mode: FlagMode = "predict",
    i8_pred: TiledPredictor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """y = Wf·x + bf + Σ_{i flagged} W2[:, i]·(act(z_i) − a_i·z_i − c_i), and the flag mask.

    x [N, d]; w1, w2t, w1q [f, d]; thresholds and lines [f]. `mode` picks the flags: "predict" uses
    ẑ = w1q·x + b1 against [lo_in, hi_in]; "oracle" uses the exact z against [lo, hi]; "all" flags
    every neuron (then y equals the dense FFN up to rounding); "predict_i8" predicts as the GPU's int8-x
    predictor does (x rounded to int8 per token and group, `kernels.layout.predict_i8`, float64; needs
    `i8_pred`, the tiled int2 predictor). The correction is computed only for
    the union of flagged neurons over the rows (exact for every row), as the GPU path does.
    Returns (y [N, d] in x's dtype, flags [N, f] bool).
    """
    y = x @ wf.T + bf
    if mode == "all":
        flags = torch.ones(x.shape[0], w1.shape[0], dtype=torch.bool, device=x.device)
    elif mode == "predict_i8":
        if i8_pred is None:
            raise ValueError(
                'flag mode "predict_i8" needs i8_pred (the tiled predictor: kernels.layout.tile_predictor)'
            )
        from tardis.kernels.layout import predict_i8

        zhat64 = predict_i8(x, i8_pred) + b1.double()
        flags = (zhat64 < lo_in.double()) | (zhat64 > hi_in.double())
    elif mode == "oracle":
        z_all = (x @ w1.T + b1).float()
        flags = (z_all < lo) | (z_all > hi)
    else:
        zhat = (x @ w1q.T + b1).float()
        flags = (zhat < lo_in) | (zhat > hi_in)
    cols = flags.any(0).nonzero().squeeze(1)
    if cols.numel() > 0:
        acc = torch.promote_types(x.dtype, torch.float32)  # corrections in fp32 (fp64 for fp64 inputs)
        z = (x @ w1.index_select(0, cols).T + b1.index_select(0, cols)).to(acc)
        line = slope.index_select(0, cols).to(acc) * z + intercept.index_select(0, cols).to(acc)
        corr = (activation(act)(z) - line) * flags.index_select(1, cols)
        y = y + corr.to(x.dtype) @ w2t.index_select(0, cols)
    return y, flags


# the live counters of one FFN's TARDIS steps, in one int64 tensor (the op adds to it on the device)
COUNTS = ("flagged", "union", "tokens", "steps")


def count_step(counts: torch.Tensor, flags: torch.Tensor) -> None:
    """Add one step's flags [N, f] to `counts` (int64 [4]: flagged pairs, union size, tokens, steps), as the
    GPU op's kernel 1 does."""
    with torch.no_grad():
        counts[0] += flags.sum()
        counts[1] += flags.any(0).sum()
        counts[2] += flags.shape[0]
        counts[3] += 1


def read_counts(counts: torch.Tensor) -> dict[str, int]:
    """`counts` (int64 [4]) as {"flagged", "union", "tokens", "steps"}: one device read."""
    return dict(zip(COUNTS, counts.tolist(), strict=True))
