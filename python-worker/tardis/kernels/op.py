"""`tardis::ffn_decode`: the project's FFN custom op (CUDA: Triton kernels; CPU: the reference).

It is CUDA-graph safe and syncs nothing: the step's live counters are added on the device into the counter
tensor it mutates, `counts` (int64 [4]: flagged (token, neuron) pairs, the union size, tokens, steps), by kernel 1
itself, so a decode step costs no counting kernels of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tardis.core.predictor import QuantizedW1
from tardis.kernels.blocks import workspace_size
from tardis.kernels.layout import TiledPredictor, tile_predictor
from tardis.runtime.reference import count_step, tardis_ffn


@torch.library.custom_op("tardis::ffn_decode", mutates_args=("workspace", "counts"))
def _ffn_decode_op(
    x: torch.Tensor,
    wf: torch.Tensor,
    bf: torch.Tensor,
    qwords: torch.Tensor,
    qscales: torch.Tensor,
    qoffsets: torch.Tensor,
    b1: torch.Tensor,
    lo_in: torch.Tensor,
    hi_in: torch.Tensor,
    w1: torch.Tensor,
    w2t: torch.Tensor,
    slope: torch.Tensor,
    intercept: torch.Tensor,
    workspace: torch.Tensor,
    counts: torch.Tensor,
    act: str,
    bits: int,
    group_size: int,
) -> torch.Tensor:
    """y [N, d] = the TARDIS FFN of x [N, d] with predicted flags (see runtime/reference.py)."""
    pred = _tiled(qwords, qscales, qoffsets, bits, group_size, w1.shape[1], w1.shape[0])
    if x.is_cuda:
        from tardis.kernels.decode import ffn_decode_triton

        y, _ = ffn_decode_triton(
            x, wf=wf, bf=bf, pred=pred, b1=b1, lo_in=lo_in, hi_in=hi_in, w1=w1, w2t=w2t, slope=slope,
            intercept=intercept, act=act, workspace=workspace, counts=counts,
        )  # fmt: skip
        return y
    w1q = pred.dequantize(torch.float32).to(x.dtype)
    y, flags = tardis_ffn(
        x, w1=w1, b1=b1, w2t=w2t, wf=wf, bf=bf, w1q=w1q, lo_in=lo_in, hi_in=hi_in, lo=lo_in, hi=hi_in,
        slope=slope, intercept=intercept, act=act, mode="predict",
    )  # fmt: skip
    count_step(counts, flags)
    return y


@_ffn_decode_op.register_fake
def _(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return torch.empty_like(x)


def _tiled(
    words: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, bits: int, gs: int, d: int, f: int
) -> TiledPredictor:
    return TiledPredictor(words, scales, offsets, bits, gs, d, f, int(words.shape[3]))


@dataclass
class KernelPack:
    """What the kernels need beyond the module's own buffers: the tiled predictor and a workspace."""

    pred: TiledPredictor
    workspace: torch.Tensor  # int32, zero at rest (the kernels leave it zeroed)


def make_pack(predictor: QuantizedW1, device: torch.device | str) -> KernelPack:
    """Tile `predictor` for the kernels and allocate the zeroed workspace on `device`."""
    pred = tile_predictor(predictor.to(device)).to(device)
    return KernelPack(
        pred,
        torch.zeros(workspace_size(predictor.in_features, predictor.packed.shape[0]), dtype=torch.int32, device=device),
    )


def attach(module: nn.Module, predictor: QuantizedW1) -> None:
    """Give a TardisFFN its kernel pack, so its forward runs `tardis::ffn_decode` on CUDA."""
    device = next(iter(module.buffers())).device
    setattr(module, "kernel_pack", make_pack(predictor, device))  # noqa: B010 (plain attribute, not a buffer)


def ffn_decode(
    x: torch.Tensor,
    pack: KernelPack,
    *,
    wf: torch.Tensor,
    bf: torch.Tensor,
    b1: torch.Tensor,
    lo_in: torch.Tensor,
    hi_in: torch.Tensor,
    w1: torch.Tensor,
    w2t: torch.Tensor,
    slope: torch.Tensor,
    intercept: torch.Tensor,
    act: str,
    counts: torch.Tensor,
) -> torch.Tensor:
    """Call `tardis::ffn_decode` with a kernel pack; x [N, d] → y [N, d]."""
    p = pack.pred
    return torch.ops.tardis.ffn_decode(
        x, wf, bf, p.words, p.scales, p.offsets, b1, lo_in, hi_in, w1, w2t, slope, intercept, pack.workspace,
        counts, act, p.bits, p.group_size,
    )  # fmt: skip
