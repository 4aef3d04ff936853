"""GPTQ's column loop as one Triton launch per block of columns (CUDA; Triton's interpreter on the CPU).

`tardis.core.predictor.quantize_gptq` walks each block of whole groups column by column: a group's scale and
offset (with the clip search) when its first column is reached, the column's codes, its error pushed onto the
block's later columns through the inverse Hessian's Cholesky factor U. On a GPU that loop is a dozen small
launches per column: 4544 columns × 32 layers of Falcon-7B took 45 s of its calibration (bench/NOTES.md v15).
Here one program holds BR rows × the whole block in registers and runs the block's columns in order; the host
then applies the block's errors to the later columns with one matrix product, as the torch loop does.

The same arithmetic as the torch loop (IEEE division, no FMA contraction, fp16-rounded scales and offsets, round
half to even), up to the order of float sums, so codes may differ from it only at a rounding tie; GPTQ then sends
that difference on to the later columns.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tardis.kernels.ptx import INTERPRET, round_half_even

ROWS = 16  # rows of W1 per program
# products and sums rounded one by one as torch's elementwise ops round them (no FMA contraction): a contracted
# a·b + c rounds once, and GPTQ sends every difference on to the later columns (the interpreter has no such option)
_NO_FMA: dict[str, bool] = {} if INTERPRET else {"enable_fp_fusion": False}


@triton.jit
def _gptq_block_kernel(
    w_ptr, u_ptr, ratios_ptr, codes_ptr, scale_ptr, offset_ptr, err_ptr, F, DP, b0, NB, N_RATIOS,
    BR: tl.constexpr, BW: tl.constexpr, G: tl.constexpr, QMAX: tl.constexpr, ASM: tl.constexpr,
):  # fmt: skip
    # rows [pid·BR, +BR) of W1's columns [b0, b0 + NB) (NB ≤ BW, whole groups of G): codes (fp32) into codes[:, b0:],
    # each group's scale and offset into scale / offset [:, group], each column's scaled error into err [:, 0:NB]
    pid = tl.program_id(0)
    rows = pid * BR + tl.arange(0, BR)
    rmask = rows < F
    cols = tl.arange(0, BW)
    cmask = cols < NB
    r64 = rows.to(tl.int64)
    w = tl.load(w_ptr + r64[:, None] * DP + b0 + cols[None, :], mask=rmask[:, None] & cmask[None, :], other=0.0)
    sc = tl.zeros((BR,), dtype=tl.float32)
    off = tl.zeros((BR,), dtype=tl.float32)
    for j in range(0, NB):
        if j % G == 0:  # a group starts: its scale and offset from the columns as updated so far
            gm = ((cols >= j) & (cols < j + G))[None, :]
            gmin = tl.min(tl.where(gm, w, float("inf")), axis=1)
            gmax = tl.max(tl.where(gm, w, float("-inf")), axis=1)
            best = tl.full((BR,), float("inf"), dtype=tl.float32)
            for k in range(0, N_RATIOS):
                ratio = tl.load(ratios_ptr + k)
                s = tl.math.div_rn((gmax - gmin) * ratio, tl.full((BR,), QMAX, dtype=tl.float32))
                s = s.to(tl.float16).to(tl.float32)
                s = tl.where(s > 0, s, 1.0)
                o = (gmin * ratio).to(tl.float16).to(tl.float32)
                q = tl.math.div_rn(w - o[:, None], tl.broadcast_to(s[:, None], (BR, BW)))
                q = tl.minimum(tl.maximum(round_half_even(q, ASM), 0.0), QMAX)
                d = q * s[:, None] + o[:, None] - w
                e = tl.sum(tl.where(gm, d * d, 0.0), axis=1)
                better = e < best
                best = tl.where(better, e, best)
                sc = tl.where(better, s, sc)
                off = tl.where(better, o, off)
            grp = (b0 + j) // G
            n_groups = DP // G
            tl.store(scale_ptr + r64 * n_groups + grp, sc, mask=rmask)
            tl.store(offset_ptr + r64 * n_groups + grp, off, mask=rmask)
        wj = tl.sum(tl.where(cols[None, :] == j, w, 0.0), axis=1)
        q = tl.math.div_rn(wj - off, sc)
        q = tl.minimum(tl.maximum(round_half_even(q, ASM), 0.0), QMAX)
        tl.store(codes_ptr + r64 * DP + b0 + j, q, mask=rmask)
        ujj = tl.load(u_ptr + (b0 + j).to(tl.int64) * DP + b0 + j)
        err = tl.math.div_rn(wj - (q * sc + off), tl.broadcast_to(ujj, (BR,)))
        urow = tl.load(u_ptr + (b0 + j).to(tl.int64) * DP + b0 + cols, mask=cmask & (cols > j), other=0.0)
        w = w - err[:, None] * urow[None, :]
        tl.store(err_ptr + r64 * NB + j, err, mask=rmask)


def gptq_blocks(
    w: torch.Tensor, u: torch.Tensor, bits: int, g: int, block: int, ratios: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ over W1 padded to whole groups (w: float32 [f, dp], updated in place) with U [dp, dp] (float32): the
    codes [f, dp] (float32), scales and offsets [f, dp / g] (float32, fp16-representable)."""
    f, dp = w.shape
    codes = torch.zeros(f, dp, device=w.device)
    scale = torch.zeros(f, dp // g, device=w.device)
    offset = torch.zeros(f, dp // g, device=w.device)
    r = torch.tensor(ratios, dtype=torch.float32, device=w.device)
    bw = triton.next_power_of_2(block)
    for b0 in range(0, dp, block):
        b1 = min(b0 + block, dp)
        errs = torch.empty(f, b1 - b0, device=w.device)
        _gptq_block_kernel[(triton.cdiv(f, ROWS),)](
            w, u, r, codes, scale, offset, errs, f, dp, b0, b1 - b0, len(ratios),
            BR=ROWS, BW=bw, G=g, QMAX=float((1 << bits) - 1), ASM=not INTERPRET, **_NO_FMA,
        )  # fmt: skip
        if b1 < dp:
            w[:, b1:] -= errs @ u[b0:b1, b1:]
    return codes, scale, offset
