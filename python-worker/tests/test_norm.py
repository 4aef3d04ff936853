"""`tardis::layer_norm_rows`, `tardis::add3` and `tardis::add3_layer_norm`: the CPU ops against torch in float64,
the checks and the fake impls, and the Triton kernels against float64 (on the GPU, and in Triton's interpreter on
the CPU)."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from tardis.kernels.layout import pack_x_i8
from tardis.kernels.norm import add3, add3_layer_norm, add3_layer_norm_i8, layer_norm_reference, layer_norm_rows

HAS_CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _rows(n: int, d: int, dtype: torch.dtype, seed: int, device: str = "cpu"):
    """x [n, 1, d] with a per-row offset and scale (a mean far from zero, as residual streams have), weight, bias."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, d, generator=g) * torch.rand(n, 1, 1, generator=g) * 4 + torch.randn(n, 1, 1, generator=g) * 3
    w = 1 + torch.randn(d, generator=g) * 0.2
    b = torch.randn(d, generator=g) * 0.1
    return [t.to(device=device, dtype=dtype) for t in (x, w, b)]


def test_cpu_ops_are_torch_in_float64() -> None:
    x, w, b = _rows(3, 40, torch.float64, seed=1)
    torch.testing.assert_close(layer_norm_rows(x, w, b, 1e-5), torch.nn.functional.layer_norm(x, (40,), w, b, 1e-5))
    torch.testing.assert_close(
        layer_norm_rows(x, w, None, 1e-3), torch.nn.functional.layer_norm(x, (40,), w, None, 1e-3)
    )
    y, z = x.flip(0), x * 2
    torch.testing.assert_close(add3(x, y, z), x + y + z, rtol=1e-15, atol=1e-15)
    h, n = add3_layer_norm(x, y, z, w, b, 1e-5)
    torch.testing.assert_close(h, x + y + z, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(n, torch.nn.functional.layer_norm(h, (40,), w, b, 1e-5))


def test_add3_layer_norm_is_add3_then_layer_norm_on_the_rounded_sum() -> None:
    # bf16 on the CPU: the norm is of h as rounded, so the pair equals the two ops one after the other exactly
    x, w, b = _rows(5, 72, torch.bfloat16, seed=9)
    y, z = x.flip(0) * 0.5, -x * 0.25 + 1
    for bias in (b, None):
        h, n = add3_layer_norm(x, y, z, w, bias, 1e-5)
        assert h.shape == n.shape == x.shape and h.dtype == n.dtype == torch.bfloat16
        torch.testing.assert_close(h, add3(x, y, z), rtol=0, atol=0)
        torch.testing.assert_close(n, layer_norm_rows(h, w, bias, 1e-5), rtol=0, atol=0)


def test_a_float32_first_operand_is_summed_unrounded() -> None:
    # the MLP's float32 sums (tardis::ffn_decode with out32) beside bf16 attention and residual: one rounding, of
    # the sum, into the others' dtype; not the sum of a rounded first
    x, w, b = _rows(4, 56, torch.bfloat16, seed=11)
    a = x.float() * (1 + 1e-3) + 1e-3  # values bf16 cannot hold
    y, z = x.flip(0) * 0.5, -x * 0.25 + 1
    want = (a + y.float() + z.float()).to(torch.bfloat16)
    assert not torch.equal(want, add3(a.to(torch.bfloat16), y, z))
    torch.testing.assert_close(add3(a, y, z), want, rtol=0, atol=0)
    h, n = add3_layer_norm(a, y, z, w, b, 1e-5)
    assert h.dtype == n.dtype == torch.bfloat16
    torch.testing.assert_close(h, want, rtol=0, atol=0)
    torch.testing.assert_close(n, layer_norm_rows(want, w, b, 1e-5), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"add3: .* \(the first may also be float32 beside bf16 / fp16\)"):
        add3(a.half(), y, z)


def test_add3_layer_norm_i8_is_add3_layer_norm_with_the_norm_as_int8_x_words() -> None:
    # the CPU op: the pair as add3_layer_norm gives it, the norm packed by layout.pack_x_i8, the counters zeroed
    x, w, b = _rows(3, 200, torch.bfloat16, seed=12)
    a = x.float() * 1.001
    y, z = x.flip(0) * 0.5, -x * 0.25 + 1
    ws = torch.arange(1, 9, dtype=torch.int32)
    h, n, (words, sx, sums) = add3_layer_norm_i8(a, y, z, w, b, 1e-5, (64, 4, 4), ws)
    h2, n2 = add3_layer_norm(a, y, z, w, b, 1e-5)
    torch.testing.assert_close(h, h2, rtol=0, atol=0)
    torch.testing.assert_close(n, n2, rtol=0, atol=0)
    want = pack_x_i8(n[:, 0], 64, 4, 4)
    assert words.shape == (3, 4, 4, 4) and sx.shape == (3, 4) and sums.shape == (3, 4, 4)
    for got, ref in zip((words, sx, sums), want, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert ws.tolist() == [0, 0, 3, 4, 5, 6, 7, 8]
    # one word unpacked by hand: byte b of word (j, k) is the int8 of column (4b + k)·wpg + j of the group
    q = torch.round(n[0, 0, 64:128].float() * (127 / n[0, 0, 64:128].float().abs().max()))
    j, k = 3, 2
    byte = [(int(words[0, 1, j, k]) >> (8 * bb)) & 255 for bb in range(4)]
    assert [v - 256 if v > 127 else v for v in byte] == [int(q[(4 * bb + k) * 4 + j]) for bb in range(4)]
    with pytest.raises(ValueError, match=r"add3_layer_norm_i8: layout \(64, 4, 3\) for rows of 200: want"):
        add3_layer_norm_i8(a, y, z, w, b, 1e-5, (64, 4, 3), ws)
    with pytest.raises(ValueError, match=r"layout \(48, 3, 5\)"):
        add3_layer_norm_i8(a, y, z, w, b, 1e-5, (48, 3, 5), ws)
    with pytest.raises(ValueError, match=r"workspace torch.int64 \[8\] on cpu: want the next FFN's int32"):
        add3_layer_norm_i8(a, y, z, w, b, 1e-5, (64, 4, 4), ws.long())


def test_inputs_are_checked_with_the_fix_named() -> None:
    x, w, b = _rows(2, 16, torch.float32, seed=2)
    with pytest.raises(ValueError, match=r"weight \(15,\), bias \(16,\): want weight and bias \[16\]"):
        layer_norm_rows(x, w[:15], b, 1e-5)
    with pytest.raises(ValueError, match=r"add3: .* want one shape and dtype"):
        add3(x, x.double(), x)
    with pytest.raises(ValueError, match=r"add3: .* want one shape and dtype"):
        add3(x, x[:1], x)
    with pytest.raises(ValueError, match=r"add3_layer_norm: .* want one shape and dtype"):
        add3_layer_norm(x, x.double(), x, w, b, 1e-5)
    with pytest.raises(ValueError, match=r"add3_layer_norm: x \(2, 1, 16\), weight \(16,\), bias \(15,\)"):
        add3_layer_norm(x, x, x, w, b[:15], 1e-5)


def test_ops_under_torch_compile_and_the_fake_impls() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, w, b = _rows(2, 24, torch.float32, seed=3)
    fn = torch.compile(lambda a: add3(layer_norm_rows(a, w, b, 1e-5), a, a) * 2, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(fn(x), 2 * (layer_norm_reference(x, w, b, 1e-5) + 2 * x))
    with FakeTensorMode(allow_non_fake_inputs=True):
        assert torch.ops.tardis.layer_norm_rows(x[:, 0], w, b, 1e-5).shape == (2, 24)
        assert torch.ops.tardis.add3(x, x, x).shape == x.shape
        h, n = torch.ops.tardis.add3_layer_norm(x[:, 0], x[:, 0], x[:, 0], w, None, 1e-5)
        assert h.shape == n.shape == (2, 24)
    fn2 = torch.compile(lambda a: add3_layer_norm(a, a, a, w, b, 1e-5)[1] * 2, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(fn2(x), 2 * layer_norm_reference(3 * x, w, b, 1e-5))
    ws = torch.ones(4, dtype=torch.int32)
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = torch.ops.tardis.add3_layer_norm_i8(x[:, 0], x[:, 0], x[:, 0], w, b, 1e-5, 16, 1, 2, ws)
        assert [tuple(t.shape) for t in out] == [(2, 24), (2, 24), (2, 2, 1, 4), (2, 2), (2, 2, 1)]
        assert [t.dtype for t in out[2:]] == [torch.int32, torch.float32, torch.float32]
    fn3 = torch.compile(
        lambda a: add3_layer_norm_i8(a, a, a, w, b, 1e-5, (16, 1, 2), ws)[2][0] + 1, backend="aot_eager", fullgraph=True
    )
    torch.testing.assert_close(fn3(x), pack_x_i8(layer_norm_reference(3 * x[:, 0], w, b, 1e-5), 16, 1, 2)[0] + 1)
    assert ws.tolist() == [0, 0, 1, 1]


CASES = [(1, 4544), (3, 1000), (16, 64), (2, 4096)]  # n, d: Falcon-7B's width at batch 1, a width below a power of 2


def _check(device: str, n: int, d: int, dtype: torch.dtype) -> None:
    from tardis.kernels.norm_triton import launch_add3, launch_add3_layer_norm, launch_layer_norm

    x, w, b = _rows(n, d, dtype, seed=n * 7 + d, device=device)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for bias in (b, None):
        got = launch_layer_norm(x[:, 0], w, bias, 1e-5).double().cpu()
        ref = layer_norm_reference(
            x[:, 0].double().cpu(), w.double().cpu(), None if bias is None else b.double().cpu(), 1e-5
        )
        assert float((got - ref).abs().max() / ref.abs().max()) < tol
    y, z = x.flip(0) * 0.5, -x * 0.25
    ref = x.double().cpu() + y.double().cpu() + z.double().cpu()
    got = launch_add3(x, y, z)
    assert got.dtype == dtype and got.shape == x.shape
    assert float((got.double().cpu() - ref).abs().max() / ref.abs().max()) < (1e-6 if dtype == torch.float32 else 5e-3)
    for bias in (b, None):  # the pair: h as add3 gives it, and the norm of h as rounded
        h, nh = launch_add3_layer_norm(x[:, 0], y[:, 0], z[:, 0], w, bias, 1e-5)
        torch.testing.assert_close(h, got[:, 0], rtol=0, atol=0)
        ref = layer_norm_reference(h.double().cpu(), w.double().cpu(), None if bias is None else b.double().cpu(), 1e-5)
        assert float((nh.double().cpu() - ref).abs().max() / ref.abs().max()) < tol
    if dtype != torch.float32:  # a float32 first operand (the MLP's sums): as the CPU op sums it, bit for bit
        a = x.float() * (1 + 1e-3)
        h, nh = launch_add3_layer_norm(a[:, 0], y[:, 0], z[:, 0], w, b, 1e-5)
        h_cpu, nh_cpu = add3_layer_norm(a.cpu(), y.cpu(), z.cpu(), w.cpu(), b.cpu(), 1e-5)
        assert h.dtype == dtype
        torch.testing.assert_close(h.cpu(), h_cpu[:, 0], rtol=0, atol=0)
        assert float((nh.double().cpu() - nh_cpu[:, 0].double()).abs().max() / nh_cpu.double().abs().max()) < tol
        torch.testing.assert_close(launch_add3(a, y, z).cpu(), h_cpu, rtol=0, atol=0)


def _check_i8(device: str, n: int, d: int, dtype: torch.dtype) -> None:
    # the norm kernel's int8 x words: its pair as launch_add3_layer_norm's, bit for bit (but the norm of a row
    # narrower than one group); the words and scales of its norm as layout.pack_x_i8 packs them, bit for bit; the word
    # sums (another order of fp32 adds) to 1e-6; the workspace's first two words zeroed, the rest untouched. Layouts:
    # groups of 128 (Falcon-7B's last group partial), of 16, and of 128 over rows narrower than one group
    from tardis.kernels.norm_triton import launch_add3_layer_norm, launch_add3_layer_norm_i8

    x, w, b = _rows(n, d, dtype, seed=n * 5 + d, device=device)
    a = (x.float() * (1 + 1e-3))[:, 0] if dtype != torch.float32 else x[:, 0]
    y, z = x[:, 0].flip(0) * 0.5, -x[:, 0] * 0.25
    h_ref, n_ref = launch_add3_layer_norm(a, y, z, w, b, 1e-5)
    for gs, wpg in ((128, 8), (16, 1)):
        groups = -(-d // gs)
        ws = torch.arange(1, 7, dtype=torch.int32, device=device)
        h, nh, words, sx, sums = launch_add3_layer_norm_i8(a, y, z, w, b, 1e-5, gs, wpg, groups, ws)
        torch.testing.assert_close(h, h_ref, rtol=0, atol=0)
        # a row narrower than one group runs in a block of the group's width: its sums in another order
        exact = gs <= 1 << (d - 1).bit_length()
        torch.testing.assert_close(nh, n_ref, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-6)
        want = pack_x_i8(nh.cpu(), gs, wpg, groups)
        torch.testing.assert_close(words.cpu(), want[0], rtol=0, atol=0)
        torch.testing.assert_close(sx.cpu(), want[1], rtol=0, atol=0)
        torch.testing.assert_close(sums.cpu(), want[2], rtol=1e-6, atol=1e-6 * float(nh.float().abs().max()))
        assert ws.tolist() == [0, 0, 3, 4, 5, 6]


@pytest.mark.skipif(not HAS_TRITON or not INTERPRET, reason="needs Triton and TRITON_INTERPRET=1")
@pytest.mark.parametrize("case", CASES)
def test_the_norm_kernels_int8_x_words_in_the_interpreter(case: tuple) -> None:
    _check_i8("cpu", *case, torch.float32)


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", CASES)
def test_the_norm_kernels_int8_x_words_on_gpu(case: tuple, dtype: torch.dtype) -> None:
    _check_i8("cuda", *case, dtype)


@pytest.mark.skipif(not HAS_TRITON or not INTERPRET, reason="needs Triton and TRITON_INTERPRET=1")
@pytest.mark.parametrize("case", CASES)
def test_norm_kernels_match_float64_in_the_interpreter(case: tuple) -> None:
    _check("cpu", *case, torch.float32)


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", CASES)
def test_norm_kernels_match_float64_on_gpu(case: tuple, dtype: torch.dtype) -> None:
    _check("cuda", *case, dtype)


@pytest.mark.skipif(not HAS_TRITON, reason="needs Triton (its compiler; no GPU)")
def test_the_norm_kernels_compile_for_sm90_offline() -> None:
    # Falcon-7B's row (BD 8192, sixteen warps) for sm_90, without and with the int8 x words (XQ: the rounding as
    # one cvt.rni, the plain kernel untouched by it)
    from sm90 import compile_sm90

    from tardis.kernels import norm_triton

    ptr = dict.fromkeys(("a_ptr", "b_ptr", "c_ptr", "w_ptr", "bias_ptr", "h_ptr", "y_ptr"), "*bf16")
    ptr |= {
        "a_ptr": "*fp32",
        "xq_ptr": "*i32",
        "xsx_ptr": "*fp32",
        "xsum_ptr": "*fp32",
        "cnt_ptr": "*i32",
        "eps": "fp32",
    }
    kern = norm_triton._add3_layer_norm_kernel
    base = {"BD": 8192, "HAS_BIAS": True, "GS": 128, "WPG": 8, "ASM": True}
    plain = compile_sm90(kern, base | {"XQ": False}, 16, ptr)["ptx"]
    i8 = compile_sm90(kern, base | {"XQ": True}, 16, ptr)["ptx"]
    assert "cvt.rni.f32.f32" in i8 and "cvt.rni" not in plain
