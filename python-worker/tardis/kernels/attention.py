"""`tardis::mqa_decode_attention`: one decode step of multi-query attention (CUDA: Triton; CPU: the reference).

A multi-query decode step has H query rows (one per head) and one key/value head over the cache's L slots.
Library attention kernels put all H rows of a sequence in one program, so at batch 1 one or two SMs walk the
whole cache (about 10 µs on an H100 at Falcon-7B's 71 heads and a 388-slot static cache). Here the cache is split
into blocks of BL slots: program (b, s) scores all H rows against block s (one tl.dot each way) and writes its
unnormalised partial output with its row maxima and sums, and a second kernel merges the blocks per row
(flash-decoding). Static grids, no host sync, so it is CUDA-graph safe; the cache's unused slots are excluded by
the attention mask, as in SDPA.

The mask is the one SDPA takes, reduced to the decode row: [B, L] bool (True: attend) or additive float, or none.
"""

from __future__ import annotations

import math

import torch

BLOCK_SLOTS = 64  # cache slots per program of the partial kernel


def mqa_decode_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """softmax(q·kᵀ·scale + mask)·v in float32 (float64 in, float64 out); q [B, H, hd], k / v [B, L, hd],
    mask [B, L] bool (True: attend) or additive float, or None."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    s = torch.einsum("bhd,bld->bhl", q.to(acc), k.to(acc)) * scale
    if mask is not None:
        if mask.dtype == torch.bool:
            s = s.masked_fill(~mask[:, None, :], float("-inf"))
        else:
            s = s + mask[:, None, :].to(acc)
    return torch.einsum("bhl,bld->bhd", torch.softmax(s, dim=-1), v.to(acc)).to(q.dtype)


@torch.library.custom_op("tardis::mqa_decode_attention", mutates_args=())
def _mqa_decode_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """out [B, H, hd] of one multi-query decode step; q [B, H, hd], k / v [B, L, hd] (any strides with a unit
    last one), mask [B, L] or None."""
    if q.is_cuda:
        from tardis.kernels.attention_triton import launch  # Triton only where there is a GPU

        return launch(q, k, v, mask, scale, BLOCK_SLOTS)
    return mqa_decode_reference(q, k, v, mask, scale)


@_mqa_decode_attention_op.register_fake
def _(q: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return torch.empty_like(q)


def mqa_decode_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, scale: float | None = None
) -> torch.Tensor:
    """One multi-query decode step: q [B, H, hd], k / v [B, L, hd] → [B, H, hd] (scale: 1/√hd by default)."""
    b, _, hd = q.shape
    if k.shape[0] != b or k.shape[2] != hd or v.shape != k.shape:
        raise ValueError(f"mqa_decode_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: "
                         "want q [B, H, hd] and k, v [B, L, hd]")  # fmt: skip
    if mask is not None and tuple(mask.shape) != (b, k.shape[1]):
        raise ValueError(f"mqa_decode_attention: mask {tuple(mask.shape)}, want [B, L] = {(b, k.shape[1])}")
    return torch.ops.tardis.mqa_decode_attention(q, k, v, mask, 1 / math.sqrt(hd) if scale is None else scale)
