"""The Triton kernels of `tardis::layer_norm_rows`, `tardis::add3` and `tardis::add3_layer_norm` (see norm.py) and
their launchers."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

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
def _add3_layer_norm_kernel(
    a_ptr, b_ptr, c_ptr, w_ptr, bias_ptr, h_ptr, y_ptr, D, eps, BD: tl.constexpr, HAS_BIAS: tl.constexpr
):  # fmt: skip
    # program r: row r whole; h = a + b + c rounded once, then the layer norm of h as rounded (what add3 and then
    # layer_norm_rows give)
    r = tl.program_id(0)
    cols = tl.arange(0, BD)
    m = cols < D
    offs = r * D + cols
    h = _sum3(a_ptr, b_ptr, c_ptr, offs, m).to(h_ptr.dtype.element_ty)
    tl.store(h_ptr + offs, h, mask=m)
    y = _normed(h.to(tl.float32), cols, m, w_ptr, bias_ptr, D, eps, HAS_BIAS)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=m)


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
    n, d = a.shape
    a, b, c = (t.contiguous() for t in (a, b, c))
    h, y = torch.empty_like(b), torch.empty_like(b)
    _add3_layer_norm_kernel[(n,)](
        a, b, c, weight, weight if bias is None else bias, h, y, d, eps, HAS_BIAS=bias is not None, **_row_launch(d)
    )
    return h, y
