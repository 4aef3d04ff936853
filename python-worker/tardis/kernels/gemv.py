"""`tardis::decode_linear`: y = x·Wᵀ (+ bias) for a decode step, the end-to-end bench's Falcon attention
projections (QKV: W [4672, 4544]; dense: W [4544, 4544]; bf16, no bias). At batch 1 cuBLAS runs a split-K kernel
and a reduce kernel (two launches; the QKV projection 14.3 + 3.5 µs in an H200 decode step's profile, 2.4 TB/s of
the 4.2 TB/s copy ceiling); here it is one launch: each program
owns BN output rows over the whole K, accumulates in fp32 and rounds once. CUDA, one row: Triton; CUDA, more rows:
torch's linear; CPU: the reference (float32 accumulation, float64 in float64)."""

from __future__ import annotations

import torch

GEMV_MAX_ROWS = 1  # rows of x up to which CUDA launches the Triton kernel (more: torch's linear)


def decode_linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [M, K]·weight [N, K]ᵀ + bias [N] in float32 (float64 in, float64 out), rounded once to x's dtype."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = x.to(acc) @ weight.to(acc).T
    if bias is not None:
        y = y + bias.to(acc)
    return y.to(x.dtype)


@torch.library.custom_op("tardis::decode_linear", mutates_args=())
def _decode_linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [M, K]·weight [N, K]ᵀ + bias [N] → [M, N] (one dtype)."""
    if x.is_cuda:
        if x.shape[0] > GEMV_MAX_ROWS:
            return torch.nn.functional.linear(x, weight, bias)
        from tardis.kernels.gemv_triton import launch_decode_linear  # Triton only where there is a GPU

        return launch_decode_linear(x, weight, bias)
    return decode_linear_reference(x, weight, bias)


@_decode_linear_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty(x.shape[0], weight.shape[0])


def decode_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K]·weight [N, K]ᵀ (+ bias [N]) → [..., N], one dtype: torch's linear, one launch at batch 1."""
    k = x.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != k or (bias is not None and bias.shape != (weight.shape[0],)):
        raise ValueError(f"decode_linear: x {tuple(x.shape)}, weight {tuple(weight.shape)}, bias "
                         f"{None if bias is None else tuple(bias.shape)}: want weight [N, {k}] and bias [N] "
                         "or None")  # fmt: skip
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise ValueError(f"decode_linear: x {x.dtype}, weight {weight.dtype}, bias "
                         f"{None if bias is None else bias.dtype}: want one dtype")  # fmt: skip
    y = torch.ops.tardis.decode_linear(x.reshape(-1, k), weight, bias)
    return y.view(*x.shape[:-1], weight.shape[0])
