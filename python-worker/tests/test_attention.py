"""`tardis::mqa_decode_attention`: the CPU op against SDPA and float64, the fake impl, and the Triton kernels
against float64 (on the GPU, and in Triton's interpreter on the CPU)."""

from __future__ import annotations

import importlib.util
import math
import os

import pytest
import torch

from tardis.kernels.attention import BLOCK_SLOTS, mqa_decode_attention, mqa_decode_reference

MERGE_UNROLL_BLOCKS = 16  # attention_triton's (not imported: Triton may be missing)

HAS_CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _case(b: int, h: int, n_slots: int, hd: int, mask: str, dtype: torch.dtype, seed: int, device: str = "cpu"):
    """q [B, H, hd], k / v [B, L, hd] as strided views of a [B, 1, L, hd] static cache (as HF hands them over)
    and a decode mask over the first `used` slots of each sequence (a different count per sequence)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, hd, generator=g) * 2
    cache_k = torch.randn(b, 1, n_slots, hd, generator=g)
    cache_v = torch.randn(b, 1, n_slots, hd, generator=g)
    used = torch.randint(1, n_slots + 1, (b,), generator=g)
    keep = torch.arange(n_slots)[None, :] < used[:, None]  # [B, L]
    m: torch.Tensor | None
    if mask == "bool":
        m = keep[:, None, None, :].expand(b, 1, 1, n_slots)[:, 0, -1]  # strided, as SDPA's 4-D mask's last row
    elif mask == "additive":
        m = torch.zeros(b, n_slots, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min)
    else:
        m = None
    t = [x.to(device=device, dtype=dtype) for x in (q, cache_k[:, 0], cache_v[:, 0])]
    return (*t, None if m is None else m.to(device))


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """PyTorch's SDPA on the multi-query step written the way HF runs it (k / v broadcast to every head)."""
    h = q.shape[1]
    am = None if mask is None else mask[:, None, None, :]
    kk, vv = (x[:, None].expand(-1, h, -1, -1) for x in (k, v))
    return torch.nn.functional.scaled_dot_product_attention(q[:, :, None], kk, vv, attn_mask=am)[:, :, 0]


@pytest.mark.parametrize("mask", ["bool", "additive", "none"])
def test_cpu_op_is_sdpa_and_float64(mask: str) -> None:
    q, k, v, m = _case(3, 7, 40, 16, mask, torch.float64, seed=1)
    out = mqa_decode_attention(q, k, v, m)
    torch.testing.assert_close(out, _sdpa(q, k, v, m), rtol=1e-12, atol=1e-12)
    # by hand: a softmax over the kept slots only
    i = 2
    used = int(m[i].sum()) if mask == "bool" else (int((m[i] == 0).sum()) if mask == "additive" else 40)
    w = torch.softmax(q[i] @ k[i, :used].T / math.sqrt(16), dim=-1)
    torch.testing.assert_close(out[i], w @ v[i, :used], rtol=1e-12, atol=1e-12)


def test_shapes_are_checked_with_the_fix_named() -> None:
    q, k, v, m = _case(2, 4, 10, 16, "bool", torch.float32, seed=2)
    with pytest.raises(ValueError, match=r"want q \[B, H, hd\] and k, v \[B, L, hd\]"):
        mqa_decode_attention(q, k[:, :, :8], v, m)
    with pytest.raises(ValueError, match=r"mask \(2, 9\), want \[B, L\] = \(2, 10\)"):
        mqa_decode_attention(q, k, v, m[:, :9])


def test_the_op_under_torch_compile_and_the_fake_impl() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    q, k, v, m = _case(2, 5, 20, 16, "additive", torch.float32, seed=3)
    fn = torch.compile(lambda a, b, c, d: mqa_decode_attention(a, b, c, d) * 2, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(fn(q, k, v, m), 2 * mqa_decode_reference(q, k, v, m, 0.25))
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = torch.ops.tardis.mqa_decode_attention(q, k, v, m, 0.25)
        assert out.shape == q.shape and out.dtype == q.dtype


CASES = [  # B, H, L, hd, mask
    (1, 71, 388, 64, "bool"),  # Falcon-7B's decode step on a 128 + 256 (+ 4) static cache
    (3, 7, 2 * BLOCK_SLOTS, 64, "additive"),  # whole blocks only
    (2, 16, 5, 32, "none"),  # fewer slots than one block
    (2, 9, BLOCK_SLOTS + 3, 80, "bool"),  # a head size that is not a power of two
    (1, 5, (MERGE_UNROLL_BLOCKS + 2) * BLOCK_SLOTS - 7, 32, "additive"),  # more blocks than the merge unrolls
]


def _check_triton(device: str, b: int, h: int, n_slots: int, hd: int, mask: str, dtype: torch.dtype) -> None:
    from tardis.kernels import attention_triton
    from tardis.kernels.attention_triton import launch

    assert attention_triton.MERGE_UNROLL_BLOCKS == MERGE_UNROLL_BLOCKS  # CASES' last case takes the merge's loop
    q, k, v, m = _case(b, h, n_slots, hd, mask, dtype, seed=b * 100 + h, device=device)
    scale = 1 / math.sqrt(hd)
    out = launch(q, k, v, m, scale, BLOCK_SLOTS)
    m64 = None if m is None else (m if m.dtype == torch.bool else m.double())
    ref = mqa_decode_reference(q.double(), k.double(), v.double(), m64, scale)
    err = float((out.double() - ref).abs().max() / ref.abs().max())
    assert err < (1e-5 if dtype == torch.float32 else 2e-2), err
    assert torch.isfinite(out).all()


@pytest.mark.skipif(not HAS_TRITON or not INTERPRET, reason="needs Triton and TRITON_INTERPRET=1")
@pytest.mark.parametrize("case", CASES)
def test_mqa_decode_kernels_match_float64_in_the_interpreter(case: tuple) -> None:
    _check_triton("cpu", *case, torch.float32)


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", CASES)
def test_mqa_decode_kernels_match_float64_on_gpu(case: tuple, dtype: torch.dtype) -> None:
    _check_triton("cuda", *case, dtype)


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
def test_mqa_decode_op_in_a_cuda_graph_on_gpu() -> None:
    q, k, v, m = _case(2, 71, 388, 64, "bool", torch.bfloat16, seed=9, device="cuda")
    want = mqa_decode_attention(q, k, v, m)
    out = torch.empty_like(want)
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        out.copy_(mqa_decode_attention(q, k, v, m))
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        out.copy_(mqa_decode_attention(q, k, v, m))
    out.zero_()
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, want, rtol=0, atol=0)
