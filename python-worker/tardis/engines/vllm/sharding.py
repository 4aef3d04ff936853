"""Tensor-parallel TARDIS FFN math (METHOD.md §4), pure PyTorch: no vLLM needed.

Rank r of `world` owns a contiguous block of the f neurons (the same block vLLM's ColumnParallelLinear
gives it of W1 and RowParallelLinear of W2) and a contiguous block of the d output rows of Wf. Its
partial output is [N, d]: its rows of Wf·x + bf, zeros elsewhere, plus the exact corrections of its
flagged neurons (which touch every output row). The sum of the partials over the ranks — the one
all-reduce the dense FFN already has — is the unsharded TARDIS FFN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tardis.core.activations import activation
from tardis.core.layer import FoldedLayer
from tardis.core.predictor import QuantizedW1


def block(n: int, rank: int, world: int) -> slice:
    """Rank `rank`'s contiguous block of n items split evenly over `world` ranks (vLLM's split)."""
    if n % world:
        raise ValueError(f"{n} is not divisible by the tensor-parallel size {world}")
    size = n // world
    return slice(rank * size, (rank + 1) * size)


@dataclass
class FFNShard:
    """What rank `rank` keeps of one folded layer: Wf rows, and the predictor and lines of its neurons.

    Shapes (d_r = d / world, f_r = f / world): wf [d_r, d], bf [d_r], w1q [f_r, d], the rest [f_r] fp32.
    """

    rank: int
    world: int
    rows: slice
    neurons: slice
    wf: torch.Tensor
    bf: torch.Tensor
    w1q: torch.Tensor
    lo_in: torch.Tensor
    hi_in: torch.Tensor
    slope: torch.Tensor
    intercept: torch.Tensor
    act: str


def predictor_rows(q: QuantizedW1, rows: slice) -> QuantizedW1:
    """The packed predictor of a block of neurons (packing runs along d, so rows slice cleanly)."""
    return QuantizedW1(
        packed=q.packed[rows],
        scales=q.scales[rows],
        offsets=q.offsets[rows],
        bits=q.bits,
        group_size=q.group_size,
        in_features=q.in_features,
    )


def make_shard(
    layer: FoldedLayer, rank: int, world: int, *, dtype: torch.dtype, device: torch.device | str
) -> FFNShard:
    """Rank `rank`'s shard of `layer`, in `dtype` on `device` (thresholds and lines stay float32)."""
    d, f = int(layer.wf.shape[0]), int(layer.lo.shape[0])
    rows, neurons = block(d, rank, world), block(f, rank, world)
    lo_in, hi_in = layer.thresholds()

    def put(t: torch.Tensor, dt: torch.dtype = dtype) -> torch.Tensor:
        return t.detach().to(device=device, dtype=dt).contiguous()

    return FFNShard(
        rank=rank,
        world=world,
        rows=rows,
        neurons=neurons,
        wf=put(layer.wf[rows]),
        bf=put(layer.bf[rows]),
        w1q=put(predictor_rows(layer.predictor, neurons).dequantize(torch.float32)),
        lo_in=put(lo_in[neurons], torch.float32),
        hi_in=put(hi_in[neurons], torch.float32),
        slope=put(layer.slope[neurons], torch.float32),
        intercept=put(layer.intercept[neurons], torch.float32),
        act=layer.act,
    )


def tardis_partial(
    x: torch.Tensor, shard: FFNShard, *, w1: torch.Tensor, b1: torch.Tensor, w2t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's partial TARDIS FFN of x [N, d] and its flags [N, f_r].

    w1 [f_r, d], b1 [f_r], w2t [f_r, d] are the rank's own neuron block of the base FFN. Flags come
    from the predictor ẑ = w1q·x + b1; corrections are computed over the union of flagged neurons
    (exact for every row), in float32 as in runtime/reference.py.
    """
    n, d = x.shape
    y = x.new_zeros(n, d)
    y[:, shard.rows] = x @ shard.wf.T + shard.bf
    zhat = (x @ shard.w1q.T + b1).float()
    flags = (zhat < shard.lo_in) | (zhat > shard.hi_in)
    cols = flags.any(0).nonzero().squeeze(1)
    if cols.numel() > 0:
        acc = torch.promote_types(x.dtype, torch.float32)
        z = (x @ w1.index_select(0, cols).T + b1.index_select(0, cols)).to(acc)
        line = shard.slope.index_select(0, cols).to(acc) * z + shard.intercept.index_select(0, cols).to(acc)
        corr = (activation(shard.act)(z) - line) * flags.index_select(1, cols)
        y = y + corr.to(x.dtype) @ w2t.index_select(0, cols)
    return y, flags


def dense_partial(
    x: torch.Tensor, *, w1: torch.Tensor, b1: torch.Tensor, w2t: torch.Tensor, b2: torch.Tensor | None, act: str
) -> torch.Tensor:
    """This rank's partial of the original FFN of x [N, d]: its neuron block, b2 on one rank only (None elsewhere)."""
    y = activation(act)(x @ w1.T + b1) @ w2t
    return y if b2 is None else y + b2
