"""What the Triton kernel modules share about the GPU under them: Triton's interpreter (no inline PTX there),
grid dependency control (Hopper's programmatic dependent launch) and round-half-to-even."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

try:  # grid dependency control: Triton ≥ 3.4
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - older Triton: no programmatic dependent launch
    gdc_launch_dependents = gdc_wait = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's interpreter: no inline PTX, no compile options


def pdl_supported(device: torch.device) -> bool:
    """Whether kernels on `device` can be launched with programmatic dependent launch (NVIDIA sm_90 and later,
    a Triton with griddepcontrol, not the interpreter)."""
    return bool(
        device.type == "cuda" and not INTERPRET and gdc_wait is not None and torch.version.hip is None
        and torch.cuda.get_device_capability(device)[0] >= 9
    )  # fmt: skip


@triton.jit
def round_half_even(v, ASM: tl.constexpr):
    # fp32 v rounded to the nearest integer, ties to even (torch.round), as one instruction on the GPU:
    # a separate rounding step, so the product before it is not contracted into an FMA with "+ 0.5"
    if ASM:
        r = tl.inline_asm_elementwise("cvt.rni.f32.f32 $0, $1;", "=f,f", [v], dtype=tl.float32, is_pure=True, pack=1)
    else:  # Triton's interpreter (numpy fp32, no contraction): adding 1.5·2^23 rounds |v| < 2^22 half to even
        r = (v + 12582912.0) - 12582912.0
    return r


@triton.jit
def stamp(gate):
    # (%globaltimer in ns, %clock64 in SM cycles), read once the int32 `gate` has arrived: both reads are predicated
    # on it, so neither can be issued before the instruction that produces it has completed. For kernel traces on
    # the GPU (no inline PTX in Triton's interpreter)
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $2, -2147483647; @p mov.u64 $0, %globaltimer; @!p mov.u64 $0, 0; "
        "@p mov.u64 $1, %clock64; @!p mov.u64 $1, 0; }",
        "=l,=l,r", [gate], dtype=(tl.int64, tl.int64), is_pure=False, pack=1,
    )  # fmt: skip


@triton.jit
def gpu_fence(v):
    # fence.acq_rel.gpu in every thread (v: any scalar, so the asm has an operand; not pure, so it stays)
    return tl.inline_asm_elementwise(
        "fence.acq_rel.gpu;\n\tmov.u32 $0, 0;", "=r,r", [v], dtype=tl.int32, is_pure=False, pack=1
    )
