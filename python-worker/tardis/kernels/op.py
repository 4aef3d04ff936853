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
from tardis.kernels.blocks import workspace_size, zero_counters
from tardis.kernels.layout import Int8X, TiledPredictor, tile_predictor
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
    out32: bool = False,
    reset_first: bool = False,
    xq_words: torch.Tensor | None = None,
    xq_scales: torch.Tensor | None = None,
    xq_sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """y [N, d] = the TARDIS FFN of x [N, d] with predicted flags (see runtime/reference.py), in x's dtype, or
    with out32 the float32 sums before that rounding (on CUDA: a call may skip the finish kernel). reset_first:
    the workspace's counters may be left over from such a call (KernelPack.fp32_out). xq_*: x's int8 words
    (layout.pack_x_i8) written with x by tardis::add3_layer_norm_i8, which zeroed the counters (CUDA: no int8 x
    kernel; the CPU reference does not read them)."""
    pred = _tiled(qwords, qscales, qoffsets, bits, group_size, w1.shape[1], w1.shape[0])
    if x.is_cuda:
        from tardis.kernels.decode import ffn_decode_triton

        given = (xq_words, xq_scales, xq_sums)
        if any(t is None for t in given) != all(t is None for t in given):
            raise ValueError("tardis::ffn_decode: give all three int8 x tensors (words, scales, sums) or none")
        y, _ = ffn_decode_triton(
            x, wf=wf, bf=bf, pred=pred, b1=b1, lo_in=lo_in, hi_in=hi_in, w1=w1, w2t=w2t, slope=slope,
            intercept=intercept, act=act, workspace=workspace, counts=counts, out32=out32, reset_first=reset_first,
            x_i8=None if xq_words is None else (xq_words, xq_scales, xq_sums),  # type: ignore[arg-type]
        )  # fmt: skip
        return y
    w1q = pred.dequantize(torch.float32).to(x.dtype)
    y, flags = tardis_ffn(
        x, w1=w1, b1=b1, w2t=w2t, wf=wf, bf=bf, w1q=w1q, lo_in=lo_in, hi_in=hi_in, lo=lo_in, hi=hi_in,
        slope=slope, intercept=intercept, act=act, mode="predict",
    )  # fmt: skip
    count_step(counts, flags)
    return y.float() if out32 else y


@_ffn_decode_op.register_fake
def _(
    x: torch.Tensor, wf: torch.Tensor, bf: torch.Tensor, qwords: torch.Tensor, qscales: torch.Tensor,
    qoffsets: torch.Tensor, b1: torch.Tensor, lo_in: torch.Tensor, hi_in: torch.Tensor, w1: torch.Tensor,
    w2t: torch.Tensor, slope: torch.Tensor, intercept: torch.Tensor, workspace: torch.Tensor, counts: torch.Tensor,
    act: str, bits: int, group_size: int, out32: bool = False, reset_first: bool = False,
    xq_words: torch.Tensor | None = None, xq_scales: torch.Tensor | None = None, xq_sums: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    return torch.empty_like(x, dtype=torch.float32 if out32 else x.dtype)


def _tiled(
    words: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, bits: int, gs: int, d: int, f: int
) -> TiledPredictor:
    return TiledPredictor(words, scales, offsets, bits, gs, d, f, int(words.shape[3]))


@dataclass
class KernelPack:
    """What the kernels need beyond the module's own buffers: the tiled predictor and a workspace."""

    pred: TiledPredictor
    workspace: torch.Tensor  # int32, zero at rest (the kernels leave it zeroed), but see fp32_out
    # set_fp32_out: a call whose caller takes a float32 output gets one, and at batch 1 skips the finish kernel,
    # leaving the list count in the workspace; so while this is on, every call zeroes the counters first
    fp32_out: bool = False


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


def set_fp32_out(module: nn.Module, on: bool) -> None:
    """Put a TardisFFN's kernel pack in (or out of) the float32-output mode (KernelPack.fp32_out); turning it off
    zeroes the counters a call may have left. Switch it only between CUDA graphs: a graph captured in one mode
    must not be replayed in the other."""
    pack = getattr(module, "kernel_pack", None)
    if pack is None:
        raise ValueError(f"{type(module).__name__} has no kernel pack: tardis.kernels.attach it on a CUDA device first")
    if pack.fp32_out and not on:
        zero_counters(pack.workspace)
    pack.fp32_out = on


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
    fp32_ok: bool = False,
    x_i8: Int8X | None = None,
) -> torch.Tensor:
    """Call `tardis::ffn_decode` with a kernel pack; x [N, d] → y [N, d] in x's dtype, or float32 where the
    caller takes it (fp32_ok) and the pack is in the float32-output mode (set_fp32_out). x_i8: x's int8 words from
    tardis.kernels.norm.add3_layer_norm_i8 with this pack's workspace, where int8_x_layout(pack, N) is not None."""
    p = pack.pred
    words, scales, sums = (None, None, None) if x_i8 is None else x_i8
    return torch.ops.tardis.ffn_decode(
        x, wf, bf, p.words, p.scales, p.offsets, b1, lo_in, hi_in, w1, w2t, slope, intercept, pack.workspace,
        counts, act, p.bits, p.group_size, fp32_ok and pack.fp32_out, pack.fp32_out, words, scales, sums,
    )  # fmt: skip


def int8_x_layout(pack: KernelPack, tokens: int) -> tuple[int, int, int] | None:
    """(group size, words a group, groups) of the int8 x words a call of `tokens` tokens with this pack rounds x to
    (decode.takes_int8_x), or None where it does not: the layout add3_layer_norm_i8 then writes them in."""
    from tardis.kernels.decode import takes_int8_x

    p = pack.pred
    return (p.group_size, p.words_per_group, p.n_groups) if takes_int8_x(p, tokens) else None
