"""`tardis::decode_linear`: the CPU op against float64 and torch's linear, the checks and the fake impl, and the
Triton kernel against float64 (in Triton's interpreter on the CPU, and on the GPU at Falcon-7B's shapes)."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from sm90 import compile_sm90

from tardis.kernels.gemv import decode_linear, decode_linear_reference

HAS_CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _inputs(m: int, n: int, k: int, dtype: torch.dtype, seed: int, device: str = "cpu"):
    """x [m, k], weight [n, k] at a linear layer's scale (1/√k), bias [n]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    w = torch.randn(n, k, generator=g) / k**0.5
    b = torch.randn(n, generator=g) * 0.1
    return [t.to(device=device, dtype=dtype) for t in (x, w, b)]


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got − ref| / max |ref| in float64, on the CPU."""
    ref = ref.double().cpu()
    return float((got.double().cpu() - ref).abs().max() / ref.abs().max())


def test_cpu_op_is_float64_reference_and_torch_linear() -> None:
    x, w, b = _inputs(3, 20, 48, torch.float64, seed=1)
    for bias in (b, None):
        torch.testing.assert_close(decode_linear(x, w, bias), decode_linear_reference(x, w, bias), rtol=0, atol=0)
    x, w, b = _inputs(2, 33, 100, torch.float32, seed=2)
    for bias in (b, None):
        torch.testing.assert_close(decode_linear(x, w, bias), torch.nn.functional.linear(x, w, bias),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip


def test_leading_shapes_are_kept() -> None:
    x, w, b = _inputs(1, 12, 40, torch.float32, seed=3)
    y = decode_linear(x.view(1, 1, 40), w, b)
    assert y.shape == (1, 1, 12)
    torch.testing.assert_close(y[0], decode_linear_reference(x, w, b), rtol=0, atol=0)
    assert decode_linear(x[0], w).shape == (12,)
    assert decode_linear(x.expand(2, 3, 40), w, b).shape == (2, 3, 12)


def test_inputs_are_checked_with_the_fix_named() -> None:
    x, w, b = _inputs(1, 8, 16, torch.float32, seed=4)
    with pytest.raises(ValueError, match=r"x \(1, 16\), weight \(8, 15\), bias \(8,\): want weight \[N, 16\]"):
        decode_linear(x, w[:, :15], b)
    with pytest.raises(ValueError, match=r"weight \(128,\), bias None: want weight \[N, 16\]"):
        decode_linear(x, w.flatten())
    with pytest.raises(ValueError, match=r"bias \(7,\): want weight \[N, 16\] and bias \[N\] or None"):
        decode_linear(x, w, b[:7])
    with pytest.raises(ValueError, match=r"x torch.float32, weight torch.bfloat16, bias None: want one dtype"):
        decode_linear(x, w.bfloat16())
    with pytest.raises(ValueError, match=r"bias torch.float64: want one dtype"):
        decode_linear(x, w, b.double())


def test_op_under_opcheck_torch_compile_and_the_fake_impl() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, w, b = _inputs(2, 24, 40, torch.float32, seed=5)
    for bias in (b, None):
        torch.library.opcheck(torch.ops.tardis.decode_linear.default, (x, w, bias))
    with FakeTensorMode(allow_non_fake_inputs=True):
        y = torch.ops.tardis.decode_linear(x, w, None)
        assert y.shape == (2, 24) and y.dtype == torch.float32
    fn = torch.compile(lambda a: decode_linear(a, w, b) * 2, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(fn(x.view(2, 1, 40)), 2 * decode_linear_reference(x, w, b).view(2, 1, 24))


def _ref64(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The reference in float64 on the CPU."""
    return decode_linear_reference(x.double().cpu(), w.double().cpu(), None if bias is None else bias.double().cpu())


def _check_kernel(device: str, n: int, k: int, launch: dict[str, int] | None, dtype: torch.dtype) -> None:
    from tardis.kernels.gemv_triton import launch_decode_linear

    x, w, b = _inputs(1, n, k, dtype, seed=n * 7 + k, device=device)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for bias in (b, None):
        got = launch_decode_linear(x, w, bias, launch)
        assert got.shape == (1, n) and got.dtype == dtype
        assert _rel_err(got, _ref64(x, w, bias)) < tol


# n, k, launch: rows past N in the last program, a K tail after full chunks, K a multiple of BK
INTERP_CASES = [
    (37, 300, {"BN": 8, "BK": 128, "num_warps": 4}),
    (37, 300, {"BN": 16, "BK": 64, "num_warps": 4}),
    (64, 256, {"BN": 8, "BK": 128, "num_warps": 4}),
    (64, 256, {"BN": 16, "BK": 64, "num_warps": 4}),
]


@pytest.mark.skipif(not HAS_TRITON or not INTERPRET, reason="needs Triton and TRITON_INTERPRET=1")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", INTERP_CASES)
def test_gemv_kernel_matches_float64_in_the_interpreter(case: tuple, dtype: torch.dtype) -> None:
    _check_kernel("cpu", *case, dtype)


@pytest.mark.skipif(not HAS_TRITON or not INTERPRET, reason="needs Triton and TRITON_INTERPRET=1")
def test_every_gemv_candidate_in_the_interpreter() -> None:
    from tardis.kernels.gemv_triton import GEMV_CANDIDATES, GEMV_LAUNCH

    assert GEMV_LAUNCH in GEMV_CANDIDATES
    for launch in GEMV_CANDIDATES:  # two programs, the second part past N; three full chunks (the loop) and a tail
        _check_kernel("cpu", 2 * launch["BN"] - 3, 3 * launch["BK"] + 100, launch, torch.float32)


@pytest.mark.skipif(not HAS_TRITON or INTERPRET, reason="needs Triton without its interpreter (a compile for sm_90)")
def test_every_gemv_candidate_compiles_for_sm90_offline() -> None:
    # as the launcher specializes Falcon-7B's projections (pointers, N, K and the row stride multiples of 16): a
    # launch with stages streams its weights through cp.async, and one with pdl waits on the grid it follows
    from tardis.kernels import gemv_triton

    pointers = dict.fromkeys(("x_ptr", "w_ptr", "b_ptr", "y_ptr"), "*bf16")
    kern = gemv_triton._gemv_kernel
    for launch in gemv_triton.GEMV_CANDIDATES:
        cfg = dict(launch)
        const = {"HAS_BIAS": True, "PDL": bool(cfg.pop("pdl", 0)), "STAGES": cfg.pop("stages", None)}
        asm = compile_sm90(kern, const | cfg, cfg["num_warps"], pointers, (*pointers, "N", "K", "swn"))
        assert ("cp.async" in asm["ptx"]) == ((const["STAGES"] or 0) > 1), launch
        assert ("griddepcontrol.wait" in asm["ptx"]) == const["PDL"], launch


FALCON_SHAPES = [(4672, 4544), (4544, 4544)]  # N, K: Falcon-7B's fused QKV and dense projections


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
@pytest.mark.parametrize("shape", FALCON_SHAPES)
def test_every_gemv_candidate_matches_float64_on_gpu(shape: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    from tardis.kernels import gemv_triton

    n, k = shape
    x, w, b = _inputs(1, n, k, torch.bfloat16, seed=n + k, device="cuda")
    for launch in gemv_triton.GEMV_CANDIDATES:
        monkeypatch.setattr(gemv_triton, "GEMV_LAUNCH", launch)
        for bias in (b, None):
            got = decode_linear(x.view(1, 1, k), w, bias)
            assert got.shape == (1, 1, n) and got.dtype == torch.bfloat16
            assert _rel_err(got[0], _ref64(x, w, bias)) < 1e-2, launch


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_more_rows_are_torch_linear_on_gpu() -> None:
    x, w, b = _inputs(4, 4672, 4544, torch.bfloat16, seed=6, device="cuda")
    for bias in (b, None):
        torch.testing.assert_close(decode_linear(x, w, bias), torch.nn.functional.linear(x, w, bias), rtol=0, atol=0)
