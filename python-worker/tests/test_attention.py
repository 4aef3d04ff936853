"""`tardis::mqa_decode_attention`, `tardis::rope_kv_write` and `tardis::mqa_rope_attention` (the two as one): the CPU
ops against SDPA / HF's rotary embedding and static-cache update in float64, the fake impls, and the Triton kernels
against float64 (on the GPU, and in Triton's interpreter on the CPU)."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
from collections.abc import Iterator

import pytest
import torch
from sm90 import compile_sm90

from tardis.kernels.attention import (
    BLOCK_SLOTS,
    attention_ticket,
    length_mask,
    mqa_decode_attention,
    mqa_decode_reference,
    mqa_rope_attention,
    rope_kv_reference,
    rope_kv_write,
)

MERGE_UNROLL_BLOCKS = 16  # attention_triton's (not imported: Triton may be missing)
N_CANDIDATES = 8  # len(attention_triton.ATTENTION_CANDIDATES): the GPU tests run every one
# the candidates the interpreter runs (it is slow): the split cache with every row in one block program and with
# row groups of 16 (the committed launch; with blocks of 32 slots; merged by the block kernel), and the rows kernel
# at 16 rows (blocks of 64 slots) and at 128 (every row in one program)
INTERPRETER_CANDIDATES = (0, 2, 4, 5, 6, 7)

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


@contextlib.contextmanager
def _attention_launch(index: int) -> Iterator[dict]:
    """attention_triton.ATTENTION_LAUNCH set to its candidate `index` inside (the committed launch restored after)."""
    from tardis.kernels import attention_triton

    assert len(attention_triton.ATTENTION_CANDIDATES) == N_CANDIDATES
    saved = attention_triton.ATTENTION_LAUNCH
    attention_triton.ATTENTION_LAUNCH = dict(attention_triton.ATTENTION_CANDIDATES[index])
    try:
        yield attention_triton.ATTENTION_LAUNCH
    finally:
        attention_triton.ATTENTION_LAUNCH = saved


def _check_triton(
    device: str, b: int, h: int, n_slots: int, hd: int, mask: str, dtype: torch.dtype, launch_index: int
) -> None:
    from tardis.kernels import attention_triton
    from tardis.kernels.attention_triton import launch

    assert attention_triton.MERGE_UNROLL_BLOCKS == MERGE_UNROLL_BLOCKS  # CASES' last case takes the merge's loop
    q, k, v, m = _case(b, h, n_slots, hd, mask, dtype, seed=b * 100 + h, device=device)
    scale = 1 / math.sqrt(hd)
    with _attention_launch(launch_index):
        out = launch(q, k, v, m, scale, BLOCK_SLOTS)
    m64 = None if m is None else (m if m.dtype == torch.bool else m.double())
    ref = mqa_decode_reference(q.double(), k.double(), v.double(), m64, scale)
    err = float((out.double() - ref).abs().max() / ref.abs().max())
    assert err < (1e-5 if dtype == torch.float32 else 2e-2), err
    assert torch.isfinite(out).all()


@pytest.mark.skipif(not HAS_TRITON or not INTERPRET, reason="needs Triton and TRITON_INTERPRET=1")
@pytest.mark.parametrize("launch", INTERPRETER_CANDIDATES)
@pytest.mark.parametrize("case", CASES)
def test_mqa_decode_kernels_match_float64_in_the_interpreter(case: tuple, launch: int) -> None:
    _check_triton("cpu", *case, torch.float32, launch)


def _gpu_launches(cases: list) -> list[tuple]:
    """(case, candidate) pairs for the GPU tests: every candidate on the first case (Falcon-7B's decode step), the
    interpreter's on the others (each pair compiles its own kernels, so all of them everywhere takes minutes)."""
    return [(c, i) for j, c in enumerate(cases) for i in (range(N_CANDIDATES) if j == 0 else INTERPRETER_CANDIDATES)]


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("case", "launch"), _gpu_launches(CASES))
def test_mqa_decode_kernels_match_float64_on_gpu(case: tuple, dtype: torch.dtype, launch: int) -> None:
    _check_triton("cuda", *case, dtype, launch)


def _captured(step) -> torch.cuda.CUDAGraph:
    """step run once on a side stream (the warm-up: the kernels compile), then captured in a CUDA graph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    return g


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
@pytest.mark.parametrize("launch", [0, 2, 6])
def test_mqa_decode_op_in_a_cuda_graph_on_gpu(launch: int) -> None:
    q, k, v, m = _case(2, 71, 388, 64, "bool", torch.bfloat16, seed=9, device="cuda")
    with _attention_launch(launch):
        want = mqa_decode_attention(q, k, v, m)
        out = torch.empty_like(want)
        g = _captured(lambda: out.copy_(mqa_decode_attention(q, k, v, m)))
    out.zero_()
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, want, rtol=0, atol=0)


# ------------------------------------------------------------------------------------- rope_kv_write


def _rope_case(b: int, h: int, n_slots: int, hd: int, pos: int, dtype: torch.dtype, seed: int, device: str = "cpu"):
    """A fused projection qkv [B, 1, (H + 2)·hd], a rotary table's rows cos / sin [B, 1, hd] for position pos
    (HF's layout: the angle table repeated over both halves), a filled static-cache layer [B, 1, L, hd] twice (views
    of [B, 1, L + 1, hd]: the slot past them is a guard), its write position and a zero ticket."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(b, 1, (h + 2) * hd, generator=g) * 2
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.cat([pos * inv, pos * inv])[None, None, :].expand(b, 1, hd)
    keys = torch.randn(b, 1, n_slots + 1, hd, generator=g)  # one guard slot past the layer's L
    values = torch.randn(b, 1, n_slots + 1, hd, generator=g)
    t = [x.to(device=device, dtype=dtype) for x in (qkv, ang.cos(), ang.sin(), keys, values)]
    length = torch.tensor(pos, device=device)
    return (
        *t[:3],
        t[3][:, :, :n_slots],
        t[4][:, :, :n_slots],
        length,
        torch.zeros(1, dtype=torch.int32, device=device),
    )


def _guard_slot(t: torch.Tensor, n_slots: int) -> torch.Tensor:
    """The slot just past a cache layer view [B, 1, L, hd] of _rope_case's [B, 1, L + 1, hd] storage."""
    return t.as_strided((*t.shape[:2], 1, t.shape[-1]), t.stride(), t.storage_offset() + n_slots * t.shape[-1])


def _rope_kv_float64(qkv, cos, sin, keys, values, pos: int, h: int):
    """The float64 reference of a rope_kv_write call on the CPU, on copies of its inputs (keys / values as they were
    before it): (rotated queries, keys, values). A position past the cache writes nothing (HF's rotation alone)."""
    k64, v64 = keys.double().cpu(), values.double().cpu()
    qkv64, cos64, sin64 = (t.double().cpu() for t in (qkv, cos, sin))
    if pos < keys.shape[2]:
        b = qkv.shape[0]
        q64 = rope_kv_reference(qkv64.reshape(b, -1), cos64[:, 0], sin64[:, 0], k64, v64, torch.tensor(pos), h)
    else:
        q64 = _hf_rope_kv(qkv64, cos64, sin64, k64, v64, 0, h)[0]
    return q64, k64, v64


def _hf_rope_kv(qkv, cos, sin, keys, values, pos: int, h: int):
    """HF's decode step written out: Falcon's head split, transformers' apply_rotary_pos_emb and a static cache
    layer's index_copy (on copies)."""
    from transformers.models.falcon.modeling_falcon import apply_rotary_pos_emb

    b, hd = qkv.shape[0], keys.shape[-1]
    x = qkv.view(b, 1, h + 2, hd)
    q, k = apply_rotary_pos_emb(x[..., :-2, :].transpose(1, 2), x[..., -2:-1, :].transpose(1, 2), cos, sin)
    keys, values = keys.clone(), values.clone()
    keys.index_copy_(2, torch.tensor([pos]), k)
    values.index_copy_(2, torch.tensor([pos]), x[..., -1:, :].transpose(1, 2))
    return q[:, :, 0], keys, values


def test_rope_kv_cpu_op_is_hf_rotary_and_cache_update_in_float64() -> None:
    qkv, cos, sin, keys, values, length, ticket = _rope_case(3, 5, 12, 16, 7, torch.float64, seed=4)
    want_q, want_k, want_v = _hf_rope_kv(qkv, cos, sin, keys, values, 7, 5)
    q = rope_kv_write(qkv, cos, sin, keys, values, length, ticket, 5)
    torch.testing.assert_close(q, want_q, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(keys, want_k, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(values, want_v, rtol=0, atol=0)
    assert int(length) == 8 and int(ticket) == 0
    # by hand for one query head: the halves rotate by each pair's angle
    x = qkv[1, 0, 2 * 16 : 3 * 16]
    c, s = cos[1, 0, :8], sin[1, 0, :8]
    torch.testing.assert_close(q[1, 2], torch.cat([x[:8] * c - x[8:] * s, x[8:] * c + x[:8] * s]))


def test_rope_kv_inputs_are_checked_with_the_fix_named() -> None:
    qkv, cos, sin, keys, values, length, ticket = _rope_case(2, 4, 6, 16, 6, torch.float32, seed=5)
    with pytest.raises(ValueError, match=r"write position 6 is outside its 6 slots; build the static cache"):
        rope_kv_write(qkv, cos, sin, keys, values, length, ticket, 4)
    length.fill_(2)
    with pytest.raises(ValueError, match=r"multi-query layouts only"):
        rope_kv_write(qkv, cos, sin, keys, values, length, ticket, 5)
    with pytest.raises(ValueError, match=r"want both \[2, 1, L, 16\]"):
        rope_kv_write(qkv, cos, sin, keys.expand(2, 2, 6, 16), values, length, ticket, 4)
    with pytest.raises(ValueError, match=r"sin \(2, 1, 8\), want \[B, hd\]"):
        rope_kv_write(qkv, cos, sin[..., :8], keys, values, length, ticket, 4)
    with pytest.raises(ValueError, match=r"want int32 \[1\]"):
        rope_kv_write(qkv, cos, sin, keys, values, length, ticket.long(), 4)
    assert int(length) == 2 and int(ticket) == 0  # nothing written by a rejected call


def test_rope_kv_op_under_torch_compile_and_the_fake_impl() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    qkv, cos, sin, keys, values, length, ticket = _rope_case(2, 3, 9, 16, 4, torch.float32, seed=6)
    k2, v2, len2 = keys.clone(), values.clone(), length.clone()
    want = rope_kv_reference(qkv.reshape(2, -1), cos.reshape(2, 16), sin.reshape(2, 16), k2, v2, len2, 3)
    fn = torch.compile(lambda *a: rope_kv_write(*a, 3) * 2, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(fn(qkv, cos, sin, keys, values, length, ticket), 2 * want)
    torch.testing.assert_close(keys, k2, rtol=0, atol=0)  # the mutations reach the real cache under compile
    assert int(length) == 5
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = torch.ops.tardis.rope_kv_write(qkv.reshape(2, -1), cos[:, 0], sin[:, 0], keys, values, length, ticket, 3)
        assert out.shape == (2, 3, 16) and out.dtype == qkv.dtype


ROPE_CASES = [  # B, H, L, hd, pos
    (1, 71, 388, 64, 131),  # Falcon-7B's decode step
    (3, 7, 20, 64, 0),  # the first slot
    (4, 9, 13, 80, 12),  # a head size that is not a power of two; the last slot; one cos / sin row for the batch
    (2, 16, 10, 32, 10),  # a position past the cache: nothing written (the CPU path raises instead)
]


def _check_rope_kv(device: str, b: int, h: int, n_slots: int, hd: int, pos: int, dtype: torch.dtype) -> None:
    from tardis.kernels.attention_triton import launch_rope_kv

    qkv, cos, sin, keys, values, length, ticket = _rope_case(
        b, h, n_slots, hd, pos, dtype, seed=b * 10 + h, device=device
    )
    before_k, before_v = keys.clone(), values.clone()
    guard = [_guard_slot(t, n_slots).clone() for t in (keys, values)]
    for rnd in range(2):  # twice: the ticket must come back to zero, the position advance once a call
        length.fill_(pos)
        c, s = (t[:1, 0].expand(b, hd) for t in (cos, sin)) if b == 4 else (cos[:, 0], sin[:, 0])  # b = 4: one row
        q = launch_rope_kv(qkv.reshape(b, -1), c, s, keys, values, length, ticket, h)
        assert int(length) == pos + 1 and int(ticket) == 0, (rnd, int(length), int(ticket))
    want, k64, v64 = _rope_kv_float64(qkv, cos, sin, before_k, before_v, pos, h)
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    err = float((q.double().cpu() - want).abs().max() / want.abs().max())
    assert err < tol, err
    kerr = float((keys.double().cpu() - k64).abs().max() / k64.abs().max())
    assert kerr < tol, kerr
    torch.testing.assert_close(values.double().cpu(), v64, rtol=0, atol=0)  # copied, not rounded again
    for t, g in zip((keys, values), guard, strict=True):  # the slot past the cache: untouched
        torch.testing.assert_close(_guard_slot(t, n_slots), g, rtol=0, atol=0)


@pytest.mark.skipif(not HAS_TRITON or not INTERPRET, reason="needs Triton and TRITON_INTERPRET=1")
@pytest.mark.parametrize("case", ROPE_CASES)
def test_rope_kv_kernel_matches_float64_in_the_interpreter(case: tuple) -> None:
    _check_rope_kv("cpu", *case, torch.float32)


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", ROPE_CASES)
def test_rope_kv_kernel_matches_float64_on_gpu(case: tuple, dtype: torch.dtype) -> None:
    _check_rope_kv("cuda", *case, dtype)


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
def test_rope_kv_op_in_a_cuda_graph_advances_the_position_each_replay_on_gpu() -> None:
    qkv, cos, sin, keys, values, length, ticket = _rope_case(4, 71, 40, 64, 3, torch.bfloat16, seed=11, device="cuda")
    q = torch.empty(4, 71, 64, device="cuda", dtype=torch.bfloat16)
    g = _captured(lambda: q.copy_(rope_kv_write(qkv, cos, sin, keys, values, length, ticket, 71)))  # warm-up: slot 3
    length.fill_(10)
    keys[:, :, 10:13].zero_()
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    assert int(length) == 13 and int(ticket) == 0
    k_row = keys[:, 0, 3]  # the warm-up's key row: the same inputs give the same row at every replayed slot
    for slot in (10, 11, 12):
        torch.testing.assert_close(keys[:, 0, slot], k_row, rtol=0, atol=0)


# ------------------------------------------------------------------------------------- mqa_rope_attention


def _decode_mask(b: int, n_slots: int, pos: int, kind: str, dtype: torch.dtype, device: str) -> torch.Tensor | None:
    """A static cache's decode-row mask: slots up to pos attended (bool, or additive in dtype), or none."""
    keep = (torch.arange(n_slots) <= pos)[None, :].expand(b, n_slots)
    if kind == "bool":
        return keep.to(device)
    if kind == "additive":
        return torch.zeros(b, n_slots, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min).to(device)
    return None


def test_rope_attention_cpu_op_is_rope_kv_write_then_the_attention_in_float64() -> None:
    for kind in ("bool", "additive", "none"):
        qkv, cos, sin, keys, values, length, ticket = _rope_case(3, 5, 12, 16, 7, torch.float64, seed=21)
        k2, v2, len2 = keys.clone(), values.clone(), length.clone()
        mask = _decode_mask(3, 12, 7, kind, torch.float64, "cpu")
        out = mqa_rope_attention(qkv, cos, sin, keys, values, length, ticket, 5, mask)
        q = rope_kv_write(qkv, cos, sin, k2, v2, len2, ticket, 5)
        torch.testing.assert_close(out, mqa_decode_attention(q, k2[:, 0], v2[:, 0], mask), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(keys, k2, rtol=0, atol=0)
        torch.testing.assert_close(values, v2, rtol=0, atol=0)
        assert int(length) == int(len2) == 8


def test_rope_attention_inputs_are_checked_with_the_fix_named() -> None:
    qkv, cos, sin, keys, values, length, ticket = _rope_case(2, 4, 6, 16, 2, torch.float32, seed=5)
    with pytest.raises(ValueError, match=r"mqa_rope_attention: qkv .* multi-query layouts only"):
        mqa_rope_attention(qkv, cos, sin, keys, values, length, ticket, 5)
    with pytest.raises(ValueError, match=r"mqa_rope_attention: mask \(2, 5\), want \[B, L\] = \(2, 6\)"):
        mqa_rope_attention(qkv, cos, sin, keys, values, length, ticket, 4, torch.ones(2, 5, dtype=torch.bool))
    assert int(length) == 2 and int(ticket) == 0


def test_rope_attention_op_under_torch_compile_and_the_fake_impl() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    qkv, cos, sin, keys, values, length, ticket = _rope_case(2, 3, 9, 16, 4, torch.float32, seed=6)
    k2, v2, len2 = keys.clone(), values.clone(), length.clone()
    mask = _decode_mask(2, 9, 4, "bool", torch.float32, "cpu")
    want = mqa_rope_attention(qkv, cos, sin, k2, v2, len2, ticket.clone(), 3, mask)
    fn = torch.compile(lambda *a: mqa_rope_attention(*a, 3, mask) * 2, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(fn(qkv, cos, sin, keys, values, length, ticket), 2 * want)
    torch.testing.assert_close(keys, k2, rtol=0, atol=0)  # the mutations reach the real cache under compile
    assert int(length) == 5
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = torch.ops.tardis.mqa_rope_attention(
            qkv.reshape(2, -1), cos[:, 0], sin[:, 0], keys, values, length, ticket, mask, 3, 0.25
        )
        assert out.shape == (2, 3, 16) and out.dtype == qkv.dtype


ROPE_ATTENTION_CASES = [  # B, H, L, hd, pos, mask
    (1, 71, 388, 64, 131, "bool"),  # Falcon-7B's decode step (the write position inside the third block)
    (3, 7, 20, 64, 0, "additive"),  # the first slot
    (4, 9, 130, 80, 129, "none"),  # a head size that is not a power of two; the last slot, alone in its block
    (2, 16, 70, 32, 70, "bool"),  # a position past the cache: nothing written, the attention over the cache as is
]


def _mask64(mask: torch.Tensor | None) -> torch.Tensor | None:
    """A decode mask as the float64 reference takes it, on the CPU: bool kept, additive in float64."""
    return None if mask is None else (mask.cpu() if mask.dtype == torch.bool else mask.double().cpu())


def _assert_rope_outputs(out, keys, values, want, k64, v64, dtype) -> None:
    """The rope-attention op's output against the float64 reference `want`, and the cache it wrote: the rotated
    keys to rounding, the values copied, not rounded again."""
    err = float((out.double().cpu() - want).abs().max() / want.abs().max())
    assert err < (1e-5 if dtype == torch.float32 else 2e-2), err
    kerr = float((keys.double().cpu() - k64).abs().max() / k64.abs().max())
    assert kerr < (1e-6 if dtype == torch.float32 else 1e-2), kerr
    torch.testing.assert_close(values.double().cpu(), v64, rtol=0, atol=0)


def _check_rope_attention(
    device: str, b: int, h: int, n_slots: int, hd: int, pos: int, kind: str, dtype, launch_index: int
) -> None:
    with _attention_launch(launch_index):
        _check_rope_attention_launch(device, b, h, n_slots, hd, pos, kind, dtype)


def _check_rope_attention_launch(device: str, b: int, h: int, n_slots: int, hd: int, pos: int, kind: str, dtype):
    from tardis.kernels.attention_triton import launch_rope_attention

    qkv, cos, sin, keys, values, length, _ = _rope_case(
        b, h, n_slots, hd, pos, dtype, seed=b * 10 + h + 1, device=device
    )
    # room for the block kernel's merge counters (launch {"merge": "last"}), but for batch 4: too little, so that
    # launch falls back to the merge kernel
    ticket = attention_ticket(h, b - 1 if b == 4 else b, device)
    mask = _decode_mask(b, n_slots, pos, kind, dtype, device)
    before_k, before_v = keys.clone(), values.clone()
    guard = [_guard_slot(t, n_slots).clone() for t in (keys, values)]
    scale = 1 / math.sqrt(hd)
    for rnd in range(2):  # twice: the ticket must come back to zero, the position advance once a call
        length.fill_(pos)
        keys.copy_(before_k)
        values.copy_(before_v)
        out = launch_rope_attention(
            qkv.reshape(b, -1), cos[:, 0], sin[:, 0], keys, values, length, ticket, mask, h, scale, BLOCK_SLOTS
        )
        assert int(length) == pos + 1 and not ticket.any(), (rnd, int(length), ticket)
    q64, k64, v64 = _rope_kv_float64(qkv, cos, sin, before_k, before_v, pos, h)
    want = mqa_decode_reference(q64, k64[:, 0], v64[:, 0], _mask64(mask), scale)
    _assert_rope_outputs(out, keys, values, want, k64, v64, dtype)
    for t, g in zip((keys, values), guard, strict=True):  # the slot past the cache: untouched
        torch.testing.assert_close(_guard_slot(t, n_slots), g, rtol=0, atol=0)


@pytest.mark.skipif(not HAS_TRITON or not INTERPRET, reason="needs Triton and TRITON_INTERPRET=1")
@pytest.mark.parametrize("launch", INTERPRETER_CANDIDATES)
@pytest.mark.parametrize("case", ROPE_ATTENTION_CASES)
def test_rope_attention_kernels_match_float64_in_the_interpreter(case: tuple, launch: int) -> None:
    _check_rope_attention("cpu", *case, torch.float32, launch)


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("case", "launch"), _gpu_launches(ROPE_ATTENTION_CASES))
def test_rope_attention_kernels_match_float64_on_gpu(case: tuple, dtype: torch.dtype, launch: int) -> None:
    _check_rope_attention("cuda", *case, dtype, launch)


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
@pytest.mark.parametrize("launch", [0, 2, 6])
def test_rope_attention_op_in_a_cuda_graph_matches_the_two_ops_on_gpu(launch: int) -> None:
    with _attention_launch(launch):
        _rope_attention_graph_matches_the_two_ops()


def _rope_attention_graph_matches_the_two_ops() -> None:
    # replayed at a new position each time: the same outputs and cache as rope_kv_write then the attention
    b, h, n_slots, hd = 2, 71, 388, 64
    qkv, cos, sin, keys, values, length, ticket = _rope_case(
        b, h, n_slots, hd, 3, torch.bfloat16, seed=12, device="cuda"
    )
    k2, v2, len2, t2 = keys.clone(), values.clone(), length.clone(), ticket.clone()
    mask = torch.ones(b, n_slots, dtype=torch.bool, device="cuda")
    out = torch.empty(b, h, hd, device="cuda", dtype=torch.bfloat16)
    g = _captured(lambda: out.copy_(mqa_rope_attention(qkv, cos, sin, keys, values, length, ticket, h, mask)))  # slot 3
    rope_kv_write(qkv, cos, sin, k2, v2, len2, t2, h)  # the two-op path's warm-up step at slot 3
    length.fill_(10)
    len2.fill_(10)
    for _ in range(3):
        g.replay()
        q = rope_kv_write(qkv, cos, sin, k2, v2, len2, t2, h)
        want = mqa_decode_attention(q, k2[:, 0], v2[:, 0], mask)
        torch.cuda.synchronize()
        torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert int(length) == int(len2) == 13 and int(ticket) == 0
    torch.testing.assert_close(keys, k2, rtol=0, atol=0)
    torch.testing.assert_close(values, v2, rtol=0, atol=0)


# ------------------------------------------------------------------------------------- mqa_rope_attention by_length


def _rope_tables(n_pos: int, hd: int, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotary tables cos / sin [P, hd] of positions 0..P−1, computed as _rope_case's rows (so row pos is the
    same bits as _rope_case's cos / sin at pos)."""
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.arange(n_pos, dtype=torch.float64)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], -1)
    return ang.cos().to(device=device, dtype=dtype), ang.sin().to(device=device, dtype=dtype)


def _extra_mask(b: int, n_slots: int, pos: int, kind: str, dtype: torch.dtype, device: str, seed: int):
    """A mask on top of by_length's causal one: random slots dropped (each row keeps its own slot pos), bool or
    additive in dtype, or none."""
    if kind == "none":
        return None
    g = torch.Generator().manual_seed(seed)
    keep = (torch.rand(b, n_slots, generator=g) > 0.3) | (torch.arange(n_slots) == pos)[None, :]
    if kind == "bool":
        return keep.to(device)
    return torch.zeros(b, n_slots, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min).to(device)


def test_length_mask_is_the_static_cache_causal_mask_with_the_mask_on_top() -> None:
    keep = torch.tensor([[True, False, True, True, True], [False, True, True, True, False]])
    causal = torch.tensor([[True, True, True, False, False]] * 2)
    torch.testing.assert_close(length_mask(torch.tensor(2), 5, 2, None), causal)
    torch.testing.assert_close(length_mask(torch.tensor(2), 5, 2, keep), keep & causal)
    add = torch.zeros(2, 5).masked_fill(~keep, -1e9)
    want = add.masked_fill(~causal, float("-inf"))
    torch.testing.assert_close(length_mask(torch.tensor(2), 5, 2, add), want)


@pytest.mark.parametrize("kind", ["none", "bool", "additive"])
def test_rope_attention_by_length_cpu_is_the_rows_at_the_position_and_the_causal_mask(kind: str) -> None:
    # the tables read at the write position and the slots past it masked: the same as the rows op with those rows
    # and the causal mask (with the extra mask on top), bit for bit in float64; the slots past the position hold
    # random (stale) values, which the causal mask must keep out
    b, h, n_slots, hd, pos = 3, 5, 12, 16, 7
    qkv, cos, sin, keys, values, length, ticket = _rope_case(b, h, n_slots, hd, pos, torch.float64, seed=31)
    cos_t, sin_t = _rope_tables(n_slots + 3, hd, torch.float64, "cpu")
    torch.testing.assert_close(cos_t[pos].expand(b, 1, hd), cos, rtol=0, atol=0)
    extra = _extra_mask(b, n_slots, pos, kind, torch.float64, "cpu", seed=4)
    k2, v2, len2 = keys.clone(), values.clone(), length.clone()
    out = mqa_rope_attention(qkv, cos_t, sin_t, keys, values, length, ticket, h, extra, by_length=True)
    want = mqa_rope_attention(qkv, cos, sin, k2, v2, len2, ticket, h, length_mask(torch.tensor(pos), n_slots, b, extra))
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    torch.testing.assert_close(keys, k2, rtol=0, atol=0)
    assert int(length) == int(len2) == pos + 1
    # and the attention is over slots 0..pos only: the stale slots changed, the output did not
    keys[:, :, pos + 1 :] += 5
    values[:, :, pos + 1 :] -= 3
    length.fill_(pos)
    again = mqa_rope_attention(qkv, cos_t, sin_t, keys, values, length, ticket, h, extra, by_length=True)
    torch.testing.assert_close(again, out, rtol=0, atol=0)


def test_rope_attention_by_length_tables_are_checked_with_the_fix_named() -> None:
    qkv, cos, sin, keys, values, length, ticket = _rope_case(2, 4, 6, 16, 2, torch.float32, seed=5)
    short_cos, short_sin = _rope_tables(5, 16, torch.float32, "cpu")
    with pytest.raises(ValueError, match=r"cos \(5, 16\) with by_length, want a table \[P, 16\] .*\(P ≥ 6\)"):
        mqa_rope_attention(qkv, short_cos, short_sin, keys, values, length, ticket, 4, by_length=True)
    with pytest.raises(ValueError, match=r"cos \(2, 1, 16\) with by_length"):
        mqa_rope_attention(qkv, cos, sin, keys, values, length, ticket, 4, by_length=True)
    assert int(length) == 2 and int(ticket) == 0


def test_rope_attention_by_length_under_torch_compile() -> None:
    qkv, _, _, keys, values, length, ticket = _rope_case(2, 3, 9, 16, 4, torch.float32, seed=6)
    cos_t, sin_t = _rope_tables(9, 16, torch.float32, "cpu")
    k2, v2, len2 = keys.clone(), values.clone(), length.clone()
    want = mqa_rope_attention(qkv, cos_t, sin_t, k2, v2, len2, ticket.clone(), 3, by_length=True)
    fn = torch.compile(lambda *a: mqa_rope_attention(*a, 3, by_length=True) * 2, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(fn(qkv, cos_t, sin_t, keys, values, length, ticket), 2 * want)
    torch.testing.assert_close(keys, k2, rtol=0, atol=0)
    assert int(length) == 5


BY_LENGTH_CASES = [  # B, H, L, hd, pos, extra mask
    (1, 71, 388, 64, 131, "none"),  # Falcon-7B's decode step: 257 stale slots past the position
    (3, 7, 20, 64, 0, "additive"),  # the first slot: every other slot masked
    (4, 9, 130, 80, 128, "bool"),  # the last block holds the position's successor only
]
INTERPRETER_BY_LENGTH_LAUNCHES = (2, 5, 6)  # the committed launch, the block kernel's own merge, the rows kernel


def _check_rope_attention_by_length(
    device: str, b: int, h: int, n_slots: int, hd: int, pos: int, kind: str, dtype, launch_index: int
) -> None:
    from tardis.kernels.attention_triton import launch_rope_attention

    qkv, cos, sin, keys, values, length, _ = _rope_case(b, h, n_slots, hd, pos, dtype, seed=b * 10 + h + 3,
                                                        device=device)  # fmt: skip
    cos_t, sin_t = _rope_tables(n_slots + 1, hd, dtype, device)
    ticket = attention_ticket(h, b, device)
    extra = _extra_mask(b, n_slots, pos, kind, dtype, device, seed=pos)
    before_k, before_v = keys.clone(), values.clone()
    scale = 1 / math.sqrt(hd)
    with _attention_launch(launch_index):
        for _ in range(2):  # twice: the ticket back to zero, the position advanced once a call
            length.fill_(pos)
            keys.copy_(before_k)
            values.copy_(before_v)
            out = launch_rope_attention(
                qkv.reshape(b, -1), cos_t, sin_t, keys, values, length, ticket, extra, h, scale, BLOCK_SLOTS, True
            )
            assert int(length) == pos + 1 and not ticket.any(), (int(length), ticket)
    q64, k64, v64 = _rope_kv_float64(qkv, cos, sin, before_k, before_v, pos, h)
    mask64 = length_mask(torch.tensor(pos), n_slots, b, _mask64(extra))
    want = mqa_decode_reference(q64, k64[:, 0], v64[:, 0], mask64, scale)
    _assert_rope_outputs(out, keys, values, want, k64, v64, dtype)


@pytest.mark.skipif(not HAS_TRITON or not INTERPRET, reason="needs Triton and TRITON_INTERPRET=1")
@pytest.mark.parametrize("launch", INTERPRETER_BY_LENGTH_LAUNCHES)
@pytest.mark.parametrize("case", BY_LENGTH_CASES)
def test_rope_attention_by_length_kernels_match_float64_in_the_interpreter(case: tuple, launch: int) -> None:
    _check_rope_attention_by_length("cpu", *case, torch.float32, launch)


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("launch", range(N_CANDIDATES))
@pytest.mark.parametrize("case", BY_LENGTH_CASES)
def test_rope_attention_by_length_kernels_match_float64_on_gpu(case: tuple, dtype: torch.dtype, launch: int) -> None:
    _check_rope_attention_by_length("cuda", *case, dtype, launch)


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
def test_rope_attention_by_length_in_a_cuda_graph_matches_the_rows_and_mask_on_gpu() -> None:
    # replayed at a new position each time, the tables read at it: the same outputs and cache as the rows op with
    # the table's rows at that position and the causal mask built on the host
    b, h, n_slots, hd = 2, 71, 388, 64
    qkv, _, _, keys, values, length, ticket = _rope_case(b, h, n_slots, hd, 3, torch.bfloat16, seed=13, device="cuda")
    cos_t, sin_t = _rope_tables(n_slots, hd, torch.bfloat16, "cuda")
    k2, v2, len2, t2 = keys.clone(), values.clone(), length.clone(), ticket.clone()
    out = torch.empty(b, h, hd, device="cuda", dtype=torch.bfloat16)
    g = _captured(lambda: out.copy_(mqa_rope_attention(qkv, cos_t, sin_t, keys, values, length, ticket, h,
                                                       by_length=True)))  # fmt: skip
    mask = length_mask(len2, n_slots, b, None)  # the warm-up's step at slot 3 on the two-op side too
    mqa_rope_attention(qkv, cos_t[3], sin_t[3], k2, v2, len2, t2, h, mask)
    for pos in (10, 11, 12):
        length.fill_(pos)
        len2.fill_(pos)
        g.replay()
        mask = length_mask(len2, n_slots, b, None)
        want = mqa_rope_attention(qkv, cos_t[pos], sin_t[pos], k2, v2, len2, t2, h, mask)
        torch.cuda.synchronize()
        torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert int(length) == int(len2) == 13 and int(ticket) == 0
    torch.testing.assert_close(keys, k2, rtol=0, atol=0)


# ------------------------------------------------------------------------------------- offline compile

# the attention kernels' pointer arguments at Falcon-7B's decode step (bf16 model, bool mask as uint8)
_POINTERS = {
    "q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "mask_ptr": "*u8", "o_ptr": "*fp32", "ml_ptr": "*fp32",
    "qkv_ptr": "*bf16", "cos_ptr": "*bf16", "sin_ptr": "*bf16", "len_ptr": "*i64", "tk_ptr": "*i32",
    "cnt_ptr": "*i32", "out_ptr": "*bf16",
}  # fmt: skip


@pytest.mark.skipif(not HAS_TRITON or INTERPRET, reason="needs Triton without its interpreter (a compile for sm_90)")
@pytest.mark.parametrize("by_length", [False, True])
@pytest.mark.parametrize("launch", range(N_CANDIDATES))
def test_every_attention_launch_compiles_for_sm90_offline(launch: int, by_length: bool) -> None:
    # the rotary attention of Falcon-7B's decode step (71 heads of 64, 388 slots) as each candidate launches it,
    # with grid dependency control and the gpu-scope fence: what only a GPU run would otherwise compile
    from tardis.kernels import attention_triton as at

    cfg = at.ATTENTION_CANDIDATES[launch]
    common = {"HD": 64, "HDP": 64, "MASK": 0 if by_length else 1, "DOT_PREC": "tf32", "PDL": True, "ROPE": True,
              "BY_LENGTH": by_length}  # fmt: skip
    slots = cfg.get("slots", BLOCK_SLOTS)
    if cfg["rows"]:
        const = common | {"RB": cfg["rows"], "BL": slots, "STAGES": cfg.get("stages", 2)}
        compile_sm90(at._mqa_rows_kernel, const, cfg.get("warps", 4), _POINTERS)
        return
    n_blocks = -(-388 // slots)
    sp = max(2, 1 << (n_blocks - 1).bit_length())
    merge = {"SP": sp, "UNROLL": True}
    const = common | merge | {"BH": 128, "BL": slots, "RB": cfg.get("group", 128), "FENCE": True}
    compile_sm90(at._mqa_block_kernel, const | {"MERGE_LAST": cfg.get("merge") == "last"}, 4, _POINTERS)
    merge_const = {"HD": 64, "HDP": 64, "BH": 128, "RB": at.MERGE_ROWS, "PDL": True} | merge
    compile_sm90(at._mqa_merge_kernel, merge_const, 4, _POINTERS)
