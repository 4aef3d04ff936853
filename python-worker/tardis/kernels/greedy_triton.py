"""The Triton kernels of `tardis::greedy_step` (see greedy.py) and their launcher."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK = 2048  # logits a program of the first kernel reduces
ROWS = 16  # rows the merge kernel takes at a time
BIG = tl.constexpr(2**31 - 1)  # no index: larger than any column or chunk


@triton.jit
def _first_max(v, idx, m):
    # each row of v [R, C]: (value, index) of its first largest where m, a NaN counting as the largest
    # (torch.argmax's order); v is −inf and idx BIG where not m
    nan = m & (v != v)
    nan_at = tl.min(tl.where(nan, idx, BIG), axis=1)
    top = tl.max(tl.where(nan, float("-inf"), v), axis=1)
    top_at = tl.min(tl.where(m & (v == top[:, None]), idx, BIG), axis=1)
    has_nan = nan_at < BIG
    return tl.where(has_nan, float("nan"), top), tl.where(has_nan, nan_at, top_at)


@triton.jit
def _chunk_argmax_kernel(x_ptr, pv_ptr, pi_ptr, V, sx, NC, CH: tl.constexpr):
    # program (b, c): the first largest of row b's columns [c·CH, (c+1)·CH), value and column into slot b·NC + c
    b = tl.program_id(0)
    c = tl.program_id(1)
    cols = c * CH + tl.arange(0, CH)
    m = cols < V
    v = tl.load(x_ptr + b * sx + cols, mask=m, other=float("-inf")).to(tl.float32)
    top, at = _first_max(v[None, :], cols[None, :], m[None, :])
    tl.store(pv_ptr + b * NC + c + tl.arange(0, 1), top)
    tl.store(pi_ptr + b * NC + c + tl.arange(0, 1), at)


@triton.jit
def _greedy_merge_kernel(
    pv_ptr, pi_ptr, ids_ptr, tok_ptr, step_ptr, B, NC, T, sid, stb, stt, NCP: tl.constexpr, RB: tl.constexpr
):
    # one program: each row's chunks merged (the first chunk holding the row's first largest: chunks are in column
    # order), the token written as the next input id and into column min(step, T − 1); then step + 1
    s = tl.load(step_ptr)
    col = tl.minimum(s, T - 1)
    ch = tl.arange(0, NCP)
    for r0 in range(0, B, RB):
        rows = r0 + tl.arange(0, RB)
        rm = rows < B
        m = rm[:, None] & (ch[None, :] < NC)
        v = tl.load(pv_ptr + rows[:, None] * NC + ch[None, :], mask=m, other=float("-inf"))
        at = tl.load(pi_ptr + rows[:, None] * NC + ch[None, :], mask=m, other=BIG)
        # the first chunk holding the row's (first) largest, then that chunk's column
        _, c = _first_max(v, tl.where(m, ch[None, :], BIG), m)
        tok = tl.sum(tl.where(ch[None, :] == c[:, None], at, 0), axis=1).to(tl.int64)
        tl.store(ids_ptr + rows * sid, tok, mask=rm)
        tl.store(tok_ptr + rows * stb + col * stt, tok, mask=rm)
    tl.store(step_ptr, s + 1)


def launch_greedy_step(logits: torch.Tensor, ids: torch.Tensor, tokens: torch.Tensor, step: torch.Tensor) -> None:
    """Both kernels on logits [B, V] (its columns contiguous), ids [B, 1], tokens [B, T], step [1] (greedy.py)."""
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    b, v = logits.shape
    nc = triton.cdiv(v, CHUNK)
    part_v = torch.empty(b * nc, dtype=torch.float32, device=logits.device)
    part_i = torch.empty(b * nc, dtype=torch.int32, device=logits.device)
    _chunk_argmax_kernel[(b, nc)](logits, part_v, part_i, v, logits.stride(0), nc, CH=CHUNK, num_warps=4)
    _greedy_merge_kernel[(1,)](
        part_v, part_i, ids, tokens, step, b, nc, tokens.shape[1], ids.stride(0), tokens.stride(0), tokens.stride(1),
        NCP=max(triton.next_power_of_2(nc), 2), RB=ROWS, num_warps=4,
    )  # fmt: skip
