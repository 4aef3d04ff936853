"""The Triton kernel of `tardis::decode_linear` (see gemv.py) and its launcher."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tardis.kernels.ptx import gdc_wait, pdl_supported

# the kernel's launch (the end-to-end bench may set it): BN output rows a program, BK columns a chunk of K; the
# fastest in the e2e bench's A/B on an H100 (v27: 31.7 µs for Falcon-7B's two projections, against 33.4 without
# PDL and stages, 38.9 for v24's BN 8 / BK 512 and 34.9 for cuBLAS)
GEMV_LAUNCH: dict[str, int] = {"BN": 4, "BK": 512, "num_warps": 4, "pdl": 1, "stages": 3}
# plausible launches for a sweep at Falcon-7B's shapes; "pdl": 1 launches with programmatic dependent launch where
# the GPU has it (sm_90+) and K ≥ BK: the grid starts before the one it follows has finished and loads its first
# chunk of weights (which do not depend on that grid) before it waits for x; "stages": S sets the loop over K's
# software pipelining (Triton's cp.async stages, S − 1 chunks of weights in flight ahead of the one being summed; 1:
# none), where without it the compiler chooses
GEMV_CANDIDATES: tuple[dict[str, int], ...] = (
    {"BN": 4, "BK": 1024, "num_warps": 4},
    {"BN": 8, "BK": 512, "num_warps": 4},
    {"BN": 8, "BK": 1024, "num_warps": 4},
    {"BN": 16, "BK": 512, "num_warps": 4},
    {"BN": 16, "BK": 256, "num_warps": 4},
    {"BN": 8, "BK": 512, "num_warps": 8},
    {"BN": 32, "BK": 256, "num_warps": 8},
    {"BN": 8, "BK": 512, "num_warps": 4, "pdl": 1},
    {"BN": 8, "BK": 1024, "num_warps": 4, "pdl": 1},
    {"BN": 4, "BK": 1024, "num_warps": 4, "pdl": 1},
    {"BN": 4, "BK": 512, "num_warps": 4, "pdl": 1},
    {"BN": 4, "BK": 1024, "num_warps": 4, "stages": 3},
    {"BN": 4, "BK": 512, "num_warps": 4, "pdl": 1, "stages": 3},
)


@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, N, K, swn,
    BN: tl.constexpr, BK: tl.constexpr, HAS_BIAS: tl.constexpr, PDL: tl.constexpr, STAGES: tl.constexpr,
):  # fmt: skip
    # program p: rows p·BN … p·BN + BN − 1 of y over the whole K; acc[BN, BK] in fp32 over the unmasked full chunks,
    # then one masked tail chunk, reduced over BK once and rounded once. PDL (K ≥ BK): the first chunk's weights
    # are loaded before the wait for the grid this one follows, and x only after it. STAGES: the loop over the full
    # chunks is pipelined with that many stages (1: not at all), None: as the compiler chooses
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    rm = rows < N
    rl = tl.where(rm, rows, N - 1)  # rows past N load row N − 1 (not stored)
    cols = tl.arange(0, BK)
    w_rows = w_ptr + rl.to(tl.int64)[:, None] * swn + cols[None, :]
    acc = tl.zeros((BN, BK), dtype=tl.float32)
    k_main = K // BK * BK
    start = 0
    if PDL:
        w0 = tl.load(w_rows)  # in flight through the wait (converted after it)
        gdc_wait()  # the previous grid (x's writer) finished and its writes visible: x may be read from here
        acc += w0.to(tl.float32) * tl.load(x_ptr + cols).to(tl.float32)[None, :]
        start = BK
    for k in tl.range(start, k_main, BK, num_stages=STAGES):  # STAGES None: the compiler's choice
        x = tl.load(x_ptr + k + cols).to(tl.float32)
        acc += tl.load(w_rows + k).to(tl.float32) * x[None, :]
    if k_main < K:
        km = k_main + cols < K
        x = tl.load(x_ptr + k_main + cols, mask=km, other=0.0).to(tl.float32)
        acc += tl.load(w_rows + k_main, mask=km[None, :], other=0.0).to(tl.float32) * x[None, :]
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + rl).to(tl.float32)
    tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=rm)


def launch_decode_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, launch: dict[str, int] | None = None
) -> torch.Tensor:
    """x [1, K]·weight [N, K]ᵀ + bias [N] → [1, N] (one dtype), with launch (BN, BK, num_warps, optional pdl and
    stages) or GEMV_LAUNCH."""
    if x.shape[0] != 1:
        raise ValueError(f"launch_decode_linear: x {tuple(x.shape)}, want one row [1, K]")
    n, k = weight.shape
    x = x.contiguous()
    weight = weight if weight.stride(-1) == 1 else weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    y = torch.empty(1, n, device=x.device, dtype=x.dtype)
    cfg = dict(launch or GEMV_LAUNCH)
    pdl = bool(cfg.pop("pdl", 0)) and k >= cfg["BK"] and pdl_supported(x.device)
    stages = cfg.pop("stages", None)
    _gemv_kernel[(triton.cdiv(n, cfg["BN"]),)](
        x, weight, weight if bias is None else bias, y, n, k, weight.stride(0), HAS_BIAS=bias is not None, PDL=pdl,
        STAGES=stages, **cfg, **({"launch_pdl": True} if pdl else {}),
    )  # fmt: skip
    return y
