"""The Triton kernels of `tardis::layer_norm_rows`, `tardis::add3` and `tardis::add3_layer_norm` (see norm.py) and
their launchers."""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from tardis.kernels.layout import Int8X
from tardis.kernels.ptx import INTERPRET, round_half_even

ADD3_BLOCK = 1024  # elements per add3 program


@triton.jit
def _sum3(a_ptr, b_ptr, c_ptr, offs, m):
    # a + b + c at offs in fp32 (zero where not m)
    s = tl.load(a_ptr + offs, mask=m, other=0.0).to(tl.float32)
    s += tl.load(b_ptr + offs, mask=m, other=0.0).to(tl.float32)
    s += tl.load(c_ptr + offs, mask=m, other=0.0).to(tl.float32)
    return s


@triton.jit
def _normed(x, cols, m, w_ptr, b_ptr, D, eps, HAS_BIAS: tl.constexpr):
    # one row x (fp32, zero past D) → (x − mean) / √(var + eps) · w + b in fp32
    mean = tl.sum(x, axis=0) / D
    xc = tl.where(m, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / D + eps)
    y = xc * rstd * tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y += tl.load(b_ptr + cols, mask=m, other=0.0).to(tl.float32)
    return y


@triton.jit
def _layer_norm_kernel(x_ptr, w_ptr, b_ptr, y_ptr, D, sx, sy, eps, BD: tl.constexpr, HAS_BIAS: tl.constexpr):
    # program r: row r whole (BD ≥ D), mean and variance in fp32, one rounding of the output
    r = tl.program_id(0)
    cols = tl.arange(0, BD)
    m = cols < D
    x = tl.load(x_ptr + r * sx + cols, mask=m, other=0.0).to(tl.float32)
    y = _normed(x, cols, m, w_ptr, b_ptr, D, eps, HAS_BIAS)
    tl.store(y_ptr + r * sy + cols, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _int8_x_row(
    xv, r, xq_ptr, xsx_ptr, xsum_ptr, N_GROUPS, BD: tl.constexpr, GS: tl.constexpr, WPG: tl.constexpr,
    ASM: tl.constexpr,
):  # fmt: skip
    # row r (fp32 [BD], zero past D) as the decode op's int8 x kernel (decode._xq_kernel) writes it, every group of
    # GS = 16·WPG columns at once: q = round_half_even(x · div_rn(127, absmax)), int32 word (j, k) holding in byte b
    # the q of column (4b + k)·WPG + j; s_x = absmax / 127 and Σ x over each word's 16 columns (layout.pack_x_i8)
    NGP: tl.constexpr = BD // GS
    x2 = tl.reshape(xv, (NGP, GS))
    amax = tl.max(tl.abs(x2), axis=1)
    c127 = tl.full((NGP,), 127.0, tl.float32)
    inv = tl.where(amax > 0, tl.math.div_rn(c127, tl.where(amax > 0, amax, 1.0)), 0.0)
    q = round_half_even(x2 * inv[:, None], ASM).to(tl.int32)  # |q| ≤ 127
    q3 = tl.reshape(q & 255, (NGP, 4, 4 * WPG))  # [group, b, (k, j)]
    words = tl.sum(q3 << (8 * tl.arange(0, 4))[None, :, None], axis=1)  # disjoint bytes: the sum is their OR
    g = tl.arange(0, NGP)[:, None]
    kj = tl.arange(0, 4 * WPG)[None, :]
    gm = g < N_GROUPS
    tl.store(xq_ptr + ((r * N_GROUPS + g) * WPG + kj % WPG) * 4 + kj // WPG, words, mask=gm)
    gv = tl.arange(0, NGP)
    tl.store(xsx_ptr + r * N_GROUPS + gv, tl.math.div_rn(amax, c127), mask=gv < N_GROUPS)
    sums = tl.sum(tl.reshape(x2, (NGP, 16, WPG)), axis=1)
    tl.store(xsum_ptr + (r * N_GROUPS + g) * WPG + tl.arange(0, WPG)[None, :], sums, mask=gm)


@triton.jit
def _add3_layer_norm_kernel(
    a_ptr, b_ptr, c_ptr, w_ptr, bias_ptr, h_ptr, y_ptr, D, eps, BD: tl.constexpr, HAS_BIAS: tl.constexpr,
    xq_ptr=None, xsx_ptr=None, xsum_ptr=None, cnt_ptr=None, N_GROUPS=1, GS: tl.constexpr = 16, WPG: tl.constexpr = 1,
    XQ: tl.constexpr = False, ASM: tl.constexpr = True,
):  # fmt: skip
    # program r: row r whole; h = a + b + c rounded once, then the layer norm of h as rounded (what add3 and then
    # layer_norm_rows give). XQ: the norm as rounded also as the next FFN call's int8 x words (_int8_x_row), and
    # program 0 zeroes that call's list count and items done (cnt_ptr: its workspace), as the int8 x kernel's RESET
    r = tl.program_id(0)
    cols = tl.arange(0, BD)
    m = cols < D
    offs = r * D + cols
    h = _sum3(a_ptr, b_ptr, c_ptr, offs, m).to(h_ptr.dtype.element_ty)
    tl.store(h_ptr + offs, h, mask=m)
    y = _normed(h.to(tl.float32), cols, m, w_ptr, bias_ptr, D, eps, HAS_BIAS).to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + offs, y, mask=m)
    if XQ:
        if r == 0:
            tl.store(cnt_ptr + tl.arange(0, 2), tl.zeros((2,), tl.int32))
        _int8_x_row(tl.where(m, y.to(tl.float32), 0.0), r, xq_ptr, xsx_ptr, xsum_ptr, N_GROUPS, BD, GS, WPG, ASM)


@triton.jit
def _add3_kernel(a_ptr, b_ptr, c_ptr, o_ptr, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    tl.store(o_ptr + offs, _sum3(a_ptr, b_ptr, c_ptr, offs, m).to(o_ptr.dtype.element_ty), mask=m)


def _row_launch(d: int) -> dict[str, int]:
    """The row kernels' launch for rows of d: the whole row in one block, up to sixteen warps."""
    bd = triton.next_power_of_2(d)
    return {"BD": bd, "num_warps": min(16, max(1, bd // 512))}


def launch_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """x [N, d] (unit last stride), weight / bias [d] → the layer norm of each row [N, d]."""
    n, d = x.shape
    x = x if x.stride(-1) == 1 else x.contiguous()
    y = torch.empty(n, d, device=x.device, dtype=x.dtype)
    _layer_norm_kernel[(n,)](
        x, weight, weight if bias is None else bias, y, d, x.stride(0), y.stride(0), eps,
        HAS_BIAS=bias is not None, **_row_launch(d),
    )  # fmt: skip
    return y


def launch_add3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a + b + c (one shape; b's dtype, a's too or float32) rounded once to b's dtype."""
    a, b, c = (t.contiguous() for t in (a, b, c))
    out = torch.empty_like(b)
    _add3_kernel[(triton.cdiv(a.numel(), ADD3_BLOCK),)](a, b, c, out, a.numel(), BLOCK=ADD3_BLOCK, num_warps=4)
    return out


def launch_add3_layer_norm(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """a, b, c [N, d] (b's dtype, a's too or float32), weight / bias [d] → (h = a + b + c in b's dtype, the layer
    norm of each row of h)."""
    h, y, _ = _launch_add3_layer_norm(a, b, c, weight, bias, eps, None, None)
    return h, y


def launch_add3_layer_norm_i8(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float,
    group_size: int, words_per_group: int, n_groups: int, workspace: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """launch_add3_layer_norm, and the norm as the int8 x words (layout.pack_x_i8) of groups of group_size =
    16 · words_per_group columns; zeroes workspace's counters (blocks.zero_counters). → (h, norm, words, s_x,
    sums)."""
    h, y, x_i8 = _launch_add3_layer_norm(a, b, c, weight, bias, eps, (group_size, words_per_group, n_groups), workspace)
    assert x_i8 is not None
    return h, y, *x_i8


def _launch_add3_layer_norm(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float,
    layout: tuple[int, int, int] | None, workspace: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, Int8X | None]:  # fmt: skip
    # one program a row; with a layout (group size, words a group, groups) the XQ variant, whose block holds
    # whole groups (both powers of two)
    n, d = a.shape
    a, b, c = (t.contiguous() for t in (a, b, c))
    h, y = torch.empty_like(b), torch.empty_like(b)
    launch: dict[str, Any] = _row_launch(d)
    x_i8: Int8X | None = None
    if layout is not None:
        gs, wpg, n_groups = layout
        dev = a.device
        x_i8 = (
            torch.empty(n, n_groups, wpg, 4, device=dev, dtype=torch.int32),
            torch.empty(n, n_groups, device=dev, dtype=torch.float32),
            torch.empty(n, n_groups, wpg, device=dev, dtype=torch.float32),
        )
        launch |= {"BD": max(launch["BD"], gs), "xq_ptr": x_i8[0], "xsx_ptr": x_i8[1], "xsum_ptr": x_i8[2]}
        launch |= {"cnt_ptr": workspace, "N_GROUPS": n_groups, "GS": gs, "WPG": wpg, "XQ": True, "ASM": not INTERPRET}
    _add3_layer_norm_kernel[(n,)](
        a, b, c, weight, weight if bias is None else bias, h, y, d, eps, HAS_BIAS=bias is not None, **launch
    )
    return h, y, x_i8
