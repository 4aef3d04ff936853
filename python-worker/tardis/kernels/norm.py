"""The decode step's small row ops for the end-to-end bench's Falcon layer: `tardis::layer_norm_rows` (a layer norm
of each row, one program a row), `tardis::add3` (a + b + c with one rounding: a parallel-attention layer's MLP
output, attention output and residual) and `tardis::add3_layer_norm` (both: the layer's output and the next layer's
layer norm of it, one launch where there were two). At batch 1 PyTorch's layer norm kernel walks a 4544-wide row
with one small block (about 9 µs on an H100), and the layer's two residual adds are two launches; here they are one
program a row (up to sixteen warps, the whole row in registers) and one launch. CUDA: Triton; CPU: the same
arithmetic in torch (float32 accumulation, float64 in float64). The adds' first operand may also be the float32
sums of a bf16 / fp16 layer's MLP (`tardis::ffn_decode` with out32), rounded only in the sum.
`tardis::add3_layer_norm_i8` also writes the norm as the next FFN call's int8 x words (what the op's int8 x kernel
would write, a launch earlier)."""

from __future__ import annotations

import torch

from tardis.kernels.blocks import zero_counters
from tardis.kernels.layout import Int8X, pack_x_i8


def layer_norm_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """(x − mean) / √(var + eps) · weight + bias over the last dimension, in float32 (float64 in, float64 out)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    b = None if bias is None else bias.to(acc)
    return torch.nn.functional.layer_norm(x.to(acc), (x.shape[-1],), weight.to(acc), b, eps).to(x.dtype)


def _sum3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a + b + c summed in float32 (float64 in float64), rounded once to b's dtype."""
    acc = torch.float64 if b.dtype == torch.float64 else torch.float32
    return (a.to(acc) + b.to(acc) + c.to(acc)).to(b.dtype)


@torch.library.custom_op("tardis::layer_norm_rows", mutates_args=())
def _layer_norm_rows_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """The layer norm of each row of x [N, d] (weight / bias [d])."""
    if x.is_cuda:
        from tardis.kernels.norm_triton import launch_layer_norm  # Triton only where there is a GPU

        return launch_layer_norm(x, weight, bias, eps)
    return layer_norm_reference(x, weight, bias, eps)


@_layer_norm_rows_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("tardis::add3", mutates_args=())
def _add3_op(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a + b + c (one shape; b's dtype, a's too or float32), summed in float32 and rounded once (float64 in
    float64)."""
    if a.is_cuda:
        from tardis.kernels.norm_triton import launch_add3

        return launch_add3(a, b, c)
    return _sum3(a, b, c)


@_add3_op.register_fake
def _(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(b)


@torch.library.custom_op("tardis::add3_layer_norm", mutates_args=())
def _add3_layer_norm_op(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """h = a + b + c (rows [N, d], rounded once) and the layer norm of h as rounded: what add3 then
    layer_norm_rows give, in one launch."""
    if a.is_cuda:
        from tardis.kernels.norm_triton import launch_add3_layer_norm

        return launch_add3_layer_norm(a, b, c, weight, bias, eps)
    h = _sum3(a, b, c)
    return h, layer_norm_reference(h, weight, bias, eps)


@_add3_layer_norm_op.register_fake
def _(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(b), torch.empty_like(b)


@torch.library.custom_op("tardis::add3_layer_norm_i8", mutates_args=("workspace",))
def _add3_layer_norm_i8_op(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float,
    group_size: int, words_per_group: int, n_groups: int, workspace: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """add3_layer_norm, and the norm as the next `tardis::ffn_decode` call's int8 x words (layout.pack_x_i8);
    zeroes that call's list count and items done in workspace (blocks.zero_counters)."""
    if a.is_cuda:
        from tardis.kernels.norm_triton import launch_add3_layer_norm_i8

        return launch_add3_layer_norm_i8(a, b, c, weight, bias, eps, group_size, words_per_group, n_groups, workspace)
    h = _sum3(a, b, c)
    y = layer_norm_reference(h, weight, bias, eps)
    zero_counters(workspace)
    return h, y, *pack_x_i8(y, group_size, words_per_group, n_groups)


@_add3_layer_norm_i8_op.register_fake
def _(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float,
    group_size: int, words_per_group: int, n_groups: int, workspace: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    n = a.shape[0]
    return (
        torch.empty_like(b), torch.empty_like(b), a.new_empty(n, n_groups, words_per_group, 4, dtype=torch.int32),
        a.new_empty(n, n_groups, dtype=torch.float32), a.new_empty(n, n_groups, words_per_group, dtype=torch.float32),
    )  # fmt: skip


def _check_norm_params(op: str, d: int, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if weight.shape != (d,) or (bias is not None and bias.shape != (d,)):
        raise ValueError(f"{op}: x {tuple(x.shape)}, weight {tuple(weight.shape)}, bias "
                         f"{None if bias is None else tuple(bias.shape)}: want weight and bias [{d}]")  # fmt: skip


def _check_three(op: str, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> None:
    a_ok = a.dtype == b.dtype or (a.dtype == torch.float32 and b.dtype in (torch.bfloat16, torch.float16))
    if not (a.shape == b.shape == c.shape and b.dtype == c.dtype and a_ok):
        raise ValueError(f"{op}: {tuple(a.shape)} {a.dtype}, {tuple(b.shape)} {b.dtype}, {tuple(c.shape)} {c.dtype}: "
                         "want one shape and dtype (the first may also be float32 beside bf16 / fp16)")  # fmt: skip


def layer_norm_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """A layer norm over x's last dimension (any leading shape) with weight / bias of that size."""
    d = x.shape[-1]
    _check_norm_params("layer_norm_rows", d, x, weight, bias)
    return torch.ops.tardis.layer_norm_rows(x.reshape(-1, d), weight, bias, float(eps)).view(x.shape)


def add3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a + b + c of one shape and dtype (a may also be float32 beside bf16 / fp16), rounded once to b's dtype."""
    _check_three("add3", a, b, c)
    return torch.ops.tardis.add3(a, b, c)


def add3_layer_norm(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, layer_norm(h)) with h = a + b + c rounded once (one shape and dtype, a may also be float32 beside bf16 /
    fp16; h in b's dtype; weight / bias of the last dimension's size): add3 and layer_norm_rows in one launch, the
    same values."""
    _check_three("add3_layer_norm", a, b, c)
    d = a.shape[-1]
    _check_norm_params("add3_layer_norm", d, a, weight, bias)
    h, y = torch.ops.tardis.add3_layer_norm(a.reshape(-1, d), b.reshape(-1, d), c.reshape(-1, d), weight, bias,
                                            float(eps))  # fmt: skip
    return h.view(a.shape), y.view(a.shape)


def add3_layer_norm_i8(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float,
    layout: tuple[int, int, int], workspace: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, Int8X]:  # fmt: skip
    """add3_layer_norm for rows a, b, c [N, d] (as there, a may be float32 beside bf16 / fp16), and its norm also as
    the int8 x words of the next FFN call (`tardis.kernels.op.ffn_decode(..., x_i8=)`), whose predictor groups
    `layout` = (group size, words a group, groups) gives (TardisFFN.int8_x_layout); zeroes that call's counters,
    workspace[:2] (its kernel pack's workspace). → (h, norm, (words, s_x, sums)), the norm's rows [N, d]."""
    _check_three("add3_layer_norm_i8", a, b, c)
    d = a.shape[-1]
    _check_norm_params("add3_layer_norm_i8", d, a, weight, bias)
    gs, wpg, n_groups = layout
    if gs != 16 * wpg or gs & (gs - 1) or n_groups != -(-d // gs):
        raise ValueError(f"add3_layer_norm_i8: layout {layout} for rows of {d}: want (16·w, w, ⌈d / 16w⌉) with w a "
                         "power of two (TardisFFN.int8_x_layout)")  # fmt: skip
    if workspace.dtype != torch.int32 or workspace.numel() < 2 or workspace.device != a.device:
        raise ValueError(f"add3_layer_norm_i8: workspace {workspace.dtype} [{workspace.numel()}] on "
                         f"{workspace.device}: want the next FFN's int32 kernel-pack workspace on the rows' "
                         "device")  # fmt: skip
    h, y, xq, xsx, xsum = torch.ops.tardis.add3_layer_norm_i8(
        a.reshape(-1, d), b.reshape(-1, d), c.reshape(-1, d), weight, bias, float(eps), gs, wpg, n_groups, workspace
    )
    return h.view(a.shape), y.view(a.shape), (xq, xsx, xsum)
