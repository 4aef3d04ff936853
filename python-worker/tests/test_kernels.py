"""The decode kernels and `tardis::ffn_decode`: layout round trip, CPU op, fake impl, GPU vs float64."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from tardis.core.predictor import quantize_rtn
from tardis.kernels.blocks import PLANE_BASE, PLANE_SWEEP
from tardis.kernels.layout import pack_x_i8, predict_i8, quantize_x_i8, tile_predictor, untile_predictor
from tardis.kernels.op import ffn_decode, make_pack
from tardis.kernels.policy import decode_token_limit, fit_policy, policy_from_bench
from tardis.runtime.reference import tardis_ffn

HAS_CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None


def _layer(n: int, d: int, f: int, bits: int, gs: int, rate: float, dtype: torch.dtype, device: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(f, d, generator=g) / d**0.5
    q = quantize_rtn(w1, bits, gs, clip_search=False)
    x = torch.randn(n, d, generator=g)
    zhat = torch.randn(256, d, generator=g) @ q.dequantize().T
    lo_in, hi_in = torch.quantile(zhat, torch.tensor([rate / 2, 1 - rate / 2]), dim=0)
    lay = {
        "wf": torch.randn(d, d, generator=g) / d**0.5,
        "bf": 0.1 * torch.randn(d, generator=g),
        "b1": 0.1 * torch.randn(f, generator=g),
        "w1": w1,
        "w2t": torch.randn(f, d, generator=g) / f**0.5,
    }
    lay = {k: v.to(device=device, dtype=dtype) for k, v in lay.items()}
    lay |= {
        "lo_in": lo_in.contiguous().to(device),
        "hi_in": hi_in.contiguous().to(device),
        "slope": torch.rand(f, generator=g).to(device),
        "intercept": (0.05 * torch.randn(f, generator=g)).to(device),
    }
    return x.to(device=device, dtype=dtype), q, lay


def _reference64(x: torch.Tensor, q, lay: dict, act: str, flags: torch.Tensor | None = None) -> tuple:
    d64 = torch.float64
    kw = {k: v.to(d64) if k in ("wf", "bf", "b1", "w1", "w2t") else v for k, v in lay.items()}
    y, fl = tardis_ffn(
        x.to(d64), w1q=q.dequantize(d64).to(x.device), lo=kw["lo_in"], hi=kw["hi_in"], act=act, mode="predict", **kw
    )
    return y, fl


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize(("f", "d", "gs"), [(150, 200, 64), (70, 300, 128), (64, 128, 128)])
def test_tiled_layout_round_trips_to_the_canonical_format(bits: int, f: int, d: int, gs: int) -> None:
    q = quantize_rtn(torch.randn(f, d, generator=torch.Generator().manual_seed(bits + f)), bits, gs)
    t = tile_predictor(q)
    back = untile_predictor(t)
    assert torch.equal(back.packed, q.packed)
    assert torch.equal(back.scales, q.scales) and torch.equal(back.offsets, q.offsets)
    assert torch.equal(t.dequantize(), q.dequantize())


def test_cpu_op_matches_the_reference_and_counts_on_device() -> None:
    x, q, lay = _layer(3, 96, 80, 2, 32, 0.1, torch.float32, "cpu", seed=1)
    counts = torch.zeros(4, dtype=torch.int64)
    y = ffn_decode(x, make_pack(q, "cpu"), act="gelu", counts=counts, **lay)
    y_ref, flags = _reference64(x, q, lay, "gelu")
    assert float((y.double() - y_ref).norm() / y_ref.norm()) < 1e-5
    assert counts.tolist() == [int(flags.sum()), int(flags.any(0).sum()), 3, 1] and int(flags.sum()) > 0


def test_int8_x_reference_divides_as_the_kernel_does() -> None:
    # the kernel computes 127 / absmax and absmax / 127 as single IEEE divisions (div_rn); torch's
    # `127.0 / t` is t.reciprocal() * 127, an ulp off in about a quarter of the groups, which moves the
    # int8 of a value next to a rounding boundary
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2000, 128 * 100, generator=gen) * torch.rand(2000, 1, generator=gen) * 4
    q8, sx = quantize_x_i8(x, 128, 100)
    amax = x.view(2000, 100, 128).abs().amax(-1)
    inv = (127.0 / amax.double()).float()  # the correctly rounded fp32 quotient
    assert torch.equal(sx, (amax.double() / 127.0).float())
    assert torch.equal(q8, torch.round(x.view(2000, 100, 128) * inv[..., None]))
    assert not torch.equal(q8, torch.round(x.view(2000, 100, 128) * (127.0 / amax)[..., None]))  # it matters


@pytest.mark.parametrize(("d", "gs"), [(200, 64), (4544, 128)])
def test_int8_x_reference_rounds_per_group_and_sums_exactly(d: int, gs: int) -> None:
    g = torch.Generator().manual_seed(d)
    x = torch.randn(3, d, generator=g) * torch.linspace(0.1, 8.0, d)  # groups of very different ranges
    x[1, :gs] = 0.0  # an all-zero group
    n_groups = -(-d // gs)
    q8, sx = quantize_x_i8(x, gs, n_groups)
    xg = torch.zeros(3, n_groups * gs)
    xg[:, :d] = x
    xg = xg.view(3, n_groups, gs)
    assert float(q8.abs().max()) <= 127 and torch.equal(q8, q8.round())
    assert torch.equal(q8[1, 0], torch.zeros(gs))
    assert bool(((q8 * sx[..., None] - xg).abs() <= sx[..., None] * 0.5001 + 1e-7).all())
    # ties round half to even, as the kernel's cvt.rni: absmax 127 makes 127/absmax exactly 1
    ties = torch.zeros(1, gs)
    ties[0, :7] = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 127.0])
    assert quantize_x_i8(ties, gs, 1)[0][0, 0, :7].tolist() == [0.0, 2.0, 2.0, -0.0, -2.0, -2.0, 127.0]
    q = quantize_rtn(torch.randn(150, d, generator=g) / d**0.5, 2, gs, clip_search=False)
    t = tile_predictor(q)
    z8 = predict_i8(x, t)
    # the same sum written out: codes·scale against the rounded x, offsets against the exact x
    w = q.dequantize(torch.float64)
    off = q.offsets.double().repeat_interleave(gs, dim=1)[:, :d]
    xhat = (q8.double() * sx.double()[..., None]).view(3, -1)[:, :d]
    assert torch.allclose(z8, xhat @ (w - off).T + x.double() @ off.T, rtol=1e-9, atol=1e-9)
    # within the rounding bound of the float predictor
    bound = (w - off).abs() @ (sx.double().repeat_interleave(gs, dim=1)[:, :d] * 0.5).T
    assert bool(((z8 - x.double() @ w.T).abs() <= bound.T + 1e-6).all())


def test_the_op_under_torch_compile_matches_eager_and_counts_each_call() -> None:
    # What a torch.compile'd decode step does with the op: one opaque call (fake impl for tracing),
    # the device counters mutated in place exactly once per call.
    x, q, lay = _layer(2, 96, 80, 2, 32, 0.1, torch.float32, "cpu", seed=3)
    pack = make_pack(q, "cpu")
    live = torch.zeros(4, dtype=torch.int64)

    def step(v: torch.Tensor) -> torch.Tensor:
        return ffn_decode(v * 1.0, pack, act="gelu", counts=live, **lay) + 0.0

    eager = step(x)
    once = live.tolist()
    assert once[0] > 0 and once[2:] == [2, 1]
    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    for i in (2, 3):
        y = compiled(x)
        assert torch.equal(y, eager)
        assert live.tolist() == [i * c for c in once]


def test_fake_impl_gives_the_output_shape_without_computing() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, q, lay = _layer(2, 64, 48, 2, 32, 0.1, torch.float32, "cpu", seed=2)
    pack = make_pack(q, "cpu")
    counts = torch.zeros(4, dtype=torch.int64)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fx = mode.from_tensor(x)
        y = ffn_decode(fx, pack, act="gelu", counts=counts, **lay)
    assert y.shape == x.shape and y.dtype == x.dtype


def test_the_float32_output_mode_on_the_cpu_op_and_its_fake() -> None:
    # KernelPack.fp32_out: a caller that takes a float32 output (fp32_ok) gets the float32 sums (on the CPU: the
    # reference's bf16 output widened), the fake impl says so for tracing, and a caller that does not gets x's dtype;
    # set_fp32_out refuses a module without a pack and, turning the mode off, zeroes the counters a call left
    from torch._subclasses.fake_tensor import FakeTensorMode

    from tardis.kernels.op import set_fp32_out

    x, q, lay = _layer(2, 64, 48, 2, 32, 0.1, torch.bfloat16, "cpu", seed=4)
    holder = torch.nn.Module()
    holder.kernel_pack = make_pack(q, "cpu")
    pack = holder.kernel_pack
    counts = torch.zeros(4, dtype=torch.int64)
    plain = ffn_decode(x, pack, act="gelu", counts=counts, **lay)
    set_fp32_out(holder, True)
    wide = ffn_decode(x, pack, act="gelu", counts=counts, fp32_ok=True, **lay)
    assert plain.dtype == torch.bfloat16 and wide.dtype == torch.float32 and torch.equal(wide, plain.float())
    assert ffn_decode(x, pack, act="gelu", counts=counts, **lay).dtype == torch.bfloat16  # the caller did not ask
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        assert ffn_decode(mode.from_tensor(x), pack, act="gelu", counts=counts, fp32_ok=True, **lay).dtype == (
            torch.float32
        )
    pack.workspace[:2] = 7  # what a call without the finish kernel leaves (the list count)
    set_fp32_out(holder, False)
    assert not pack.fp32_out and int(pack.workspace.abs().sum()) == 0
    with pytest.raises(ValueError, match="Linear has no kernel pack"):
        set_fp32_out(torch.nn.Linear(2, 2), True)


def _fp32_out_sequence(device: str, d: int, f: int, dtype: torch.dtype, seed: int) -> list[bool]:
    # One workspace in the float32-output mode (out32 and reset_first on every call): batch 1 skips the finish kernel
    # and leaves its list count (the union) in the workspace, the next batch-1 call's int8 x kernel zeroes it first,
    # a batch-3 call (no int8 x kernel: a memset first; v1's up/down with column tickets) leaves the workspace zero.
    # Each call's float32 output against the float64 reference with the kernel's own flags. Returns the skips.
    from tardis.kernels.decode import DecodeLaunch

    _, q, lay = _layer(1, d, f, 2, 64, 0.1, dtype, device, seed)
    pack = make_pack(q, device)
    g = torch.Generator().manual_seed(seed + 1)
    skips = []
    for n in (1, 1, 3, 1):
        x = torch.randn(n, d, generator=g).to(device=device, dtype=dtype)
        counts = torch.zeros(4, dtype=torch.int64, device=device)
        torch.full((n * d * 4,), float("nan"), device=device)  # poison freed memory the outputs may reuse
        launch = DecodeLaunch(
            x, pred=pack.pred, act="gelu", workspace=pack.workspace, counts=counts, out32=True, reset_first=True, **lay
        )  # fmt: skip
        y, flags = launch.run()
        _check_fp32_call(x, lay, dtype, y, flags, counts, pack.workspace, launch.skips_finish)
        skips.append(launch.skips_finish)
    return skips


def _check_fp32_call(x, lay: dict, dtype: torch.dtype, y, flags, counts, workspace, skipped: bool) -> None:
    # one call in the float32-output mode: its output against float64 with the kernel's own flags, its counts, and
    # the workspace as the call left it (the union where it skipped the finish kernel, else zero)
    n = x.shape[0]
    assert y.dtype == torch.float32 and bool(torch.isfinite(y).all())
    y_ref = _reference_with_flags(x, lay, "gelu", flags.bool())
    err = float((y.double() - y_ref).norm() / y_ref.norm())
    assert err < (1e-2 if dtype == torch.bfloat16 else 1e-5), (n, err)
    union = int(flags.bool().any(0).sum())
    assert union > 0 and counts.tolist() == [int(flags.sum()), union, n, 1]
    assert int(workspace[0]) == (union if skipped else 0)
    assert int(workspace[1:].abs().sum()) == 0


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
def test_the_float32_output_mode_in_the_interpreter() -> None:
    assert _fp32_out_sequence("cpu", 300, 200, torch.float32, seed=60) == [True, True, False, True]


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(("d", "f"), [(4544, 18176), (777, 2050)])
def test_the_float32_output_mode_on_gpu(d: int, f: int) -> None:
    assert _fp32_out_sequence("cuda", d, f, torch.bfloat16, seed=d) == [True, True, False, True]


def _xq_kernel_words(device: str, n: int, d: int, gs: int, wpg: int, seed: int) -> None:
    # the op's int8 x kernel writes what layout.pack_x_i8 packs: words and scales bit for bit, the word sums to 1e-6
    from tardis.kernels.decode import _INTERPRET, _xq_kernel

    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=g) * torch.linspace(0.1, 6.0, d)).to(device)
    x[0, :gs] = 0.0  # an all-zero group
    groups = -(-d // gs)
    xq = torch.full((n, groups, wpg, 4), -1, dtype=torch.int32, device=device)
    xsx = torch.full((n, groups), float("nan"), device=device)
    xsum = torch.full((n, groups, wpg), float("nan"), device=device)
    _xq_kernel[(n * groups,)](x, xq, xsx, xsum, d, groups, GS=gs, WPG=wpg, ASM=not _INTERPRET, num_warps=1)
    words, sx, sums = pack_x_i8(x.cpu(), gs, wpg, groups)
    torch.testing.assert_close(xq.cpu(), words, rtol=0, atol=0)
    torch.testing.assert_close(xsx.cpu(), sx, rtol=0, atol=0)
    torch.testing.assert_close(xsum.cpu(), sums, rtol=1e-6, atol=1e-5)


def _int8_x_handoff_sequence(device: str, d: int, f: int, dtype: torch.dtype, seed: int) -> list[bool]:
    # A decoder's chain on one workspace in the float32-output mode: each call's x and its int8 words come from
    # the norm launch before it (add3_layer_norm_i8, which also zeroes the counters the call before left), so the
    # op runs no int8 x kernel. Batches 1, 1, 2, 1 (batch 1 skips the finish kernel and leaves the union in the
    # workspace). Each call's float32 output against float64 with the kernel's own flags, and against the same call
    # with the op's own int8 x kernel (flags identical, outputs to 1e-6). Returns the skips.
    from tardis.kernels.decode import DecodeLaunch

    if device == "cpu":  # Triton's interpreter runs the norm kernel on CPU tensors (the CPU op is torch)
        from tardis.kernels.norm_triton import launch_add3_layer_norm_i8 as norm_i8
    else:
        norm_i8 = torch.ops.tardis.add3_layer_norm_i8
    _, q, lay = _layer(1, d, f, 2, 64, 0.1, dtype, device, seed)
    pack = make_pack(q, device)
    own_ws = torch.zeros_like(pack.workspace)
    layout = (pack.pred.group_size, pack.pred.words_per_group, pack.pred.n_groups)
    g = torch.Generator().manual_seed(seed + 1)
    w = (1 + 0.2 * torch.randn(d, generator=g)).to(device=device, dtype=dtype)
    skips = []
    for n in (1, 1, 2, 1):
        a, b, c = (torch.randn(n, d, generator=g).to(device=device, dtype=dtype) for _ in range(3))
        _, x, *x_i8 = norm_i8(a, b, c, w, None, 1e-5, *layout, pack.workspace)
        counts = torch.zeros(4, dtype=torch.int64, device=device)
        launch = DecodeLaunch(
            x, pred=pack.pred, act="gelu", workspace=pack.workspace, counts=counts, out32=True, reset_first=True,
            x_i8=tuple(x_i8), **lay,
        )  # fmt: skip
        y, flags = launch.run()
        own = DecodeLaunch(
            x, pred=pack.pred, act="gelu", workspace=own_ws, counts=torch.zeros_like(counts), out32=True,
            reset_first=True, **lay,
        )  # fmt: skip
        y_own, flags_own = own.run()
        assert torch.equal(flags, flags_own)
        assert float((y - y_own).abs().max()) <= 1e-6 * float(y_own.abs().max())
        _check_fp32_call(x, lay, dtype, y, flags, counts, pack.workspace, launch.skips_finish)
        skips.append(launch.skips_finish)
    return skips


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
def test_int8_x_words_from_the_norm_in_the_interpreter() -> None:
    _xq_kernel_words("cpu", 3, 300, 64, 4, seed=61)
    _xq_kernel_words("cpu", 1, 200, 16, 1, seed=62)
    assert _int8_x_handoff_sequence("cpu", 300, 200, torch.float32, seed=63) == [True, True, False, True]


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(("d", "f"), [(4544, 18176), (777, 2050)])
def test_int8_x_words_from_the_norm_on_gpu(d: int, f: int) -> None:
    _xq_kernel_words("cuda", 2, d, 128, 8, seed=d)
    _xq_kernel_words("cuda", 1, d, 64, 4, seed=d + 1)
    assert _int8_x_handoff_sequence("cuda", d, f, torch.bfloat16, seed=d) == [True, True, False, True]


@pytest.mark.skipif(not HAS_TRITON, reason="needs Triton (the launcher's checks)")
def test_int8_x_words_are_refused_where_the_launch_does_not_take_them() -> None:
    from tardis.kernels.decode import DecodeLaunch

    x, q, lay = _layer(3, 200, 150, 2, 64, 0.1, torch.float32, "cpu", seed=64)
    pack = make_pack(q, "cpu")
    kw = {"pred": pack.pred, "act": "gelu", "workspace": pack.workspace, "counts": torch.zeros(4, dtype=torch.int64)}
    with pytest.raises(ValueError, match=r"the launch at batch 3 does not take int8 x \(takes_int8_x\)"):
        DecodeLaunch(x, x_i8=pack_x_i8(x, 64, 4, 4), **kw, **lay)
    with pytest.raises(ValueError, match=r"the launch at batch 1 does not take int8 x"):
        DecodeLaunch(x[:1], x_i8=pack_x_i8(x[:1], 64, 4, 4), kernels="v1", **kw, **lay)
    words, sx, sums = pack_x_i8(x[:1], 64, 4, 4)
    with pytest.raises(ValueError, match=r"x_i8 scales: expected shape \(1, 4\), got \(1, 3\)"):
        DecodeLaunch(x[:1], x_i8=(words, sx[:, :3].contiguous(), sums), **kw, **lay)
    with pytest.raises(ValueError, match=r"x_i8 words: expected dtype torch.int32"):
        DecodeLaunch(x[:1], x_i8=(words.long(), sx, sums), **kw, **lay)
    assert DecodeLaunch(x[:1], x_i8=(words, sx, sums), **kw, **lay).x_i8 is not None
    q3 = quantize_rtn(lay["w1"], 3, 64, clip_search=False)  # int3: no int8 x path
    with pytest.raises(ValueError, match=r"does not take int8 x"):
        DecodeLaunch(x[:1], x_i8=(words, sx, sums), **(kw | {"pred": make_pack(q3, "cpu").pred}), **lay)


def test_policy_switches_to_dense_past_the_break_even_union() -> None:
    curve = {1: 0.05, 8: 0.34, 16: 0.56, 64: 0.96}
    pol = fit_policy(curve, {1: (30.0, 90.0), 8: (70.0, 92.0), 16: (110.0, 95.0), 64: (200.0, 120.0)})
    assert pol.choose(curve) == {1: "tardis", 8: "tardis", 16: "dense", 64: "dense"}


def test_a_layers_decode_token_limit_comes_from_its_union_curve_and_the_bench() -> None:
    # ffn_bench rows for two shapes (only the layer's counts) → the break-even union → per layer the
    # largest batch whose measured union (and every smaller one's) stays below it
    rows = [
        {"d": 64, "f": 256, "union_frac": u, "tardis_us": t, "dense_us": 90.0}
        for u, t in ((0.05, 40.0), (0.10, 60.0), (0.19, 85.0), (0.34, 120.0), (0.60, 200.0))
    ] + [{"d": 32, "f": 128, "union_frac": 0.9, "tardis_us": 10.0, "dense_us": 90.0}]
    pol = policy_from_bench(rows, 64, 256)
    assert pol.max_union == 0.19
    assert decode_token_limit({"1": 0.05, "2": 0.09, "4": 0.17, "8": 0.3}, pol) == 4
    assert decode_token_limit({"1": 0.02, "2": 0.04, "4": 0.25, "8": 0.1}, pol) == 2  # the first miss ends it
    assert decode_token_limit({"1": 0.2}, pol) == 0
    assert decode_token_limit({"1": 0.01, "64": 0.1, "128": 0.15}, pol, cap=64) == 64
    with pytest.raises(ValueError, match="no rows for d=8, f=16"):
        policy_from_bench(rows, 8, 16)


def _kernel_case(
    device: str, n: int, d: int, f: int, bits: int, gs: int, dtype: torch.dtype, act: str, seed: int,
    kernels: str | None = None, plane_cfg: dict | None = None, trace: torch.Tensor | None = None,
):  # fmt: skip
    # trace: DecodeLaunch.set_trace's buffer (the launch is returned for the trace's checks)
    from tardis.kernels.decode import DecodeLaunch

    x, q, lay = _layer(n, d, f, bits, gs, 0.1, dtype, device, seed)
    pack = make_pack(q, device)
    counts = torch.zeros(4, dtype=torch.int64, device=device)
    torch.full((n * d * 4,), float("nan"), device=device)  # poison freed memory the outputs may reuse
    launch = DecodeLaunch(x, pred=pack.pred, act=act, workspace=pack.workspace, counts=counts, kernels=kernels, **lay)
    if plane_cfg is not None:
        plane_cfg = dict(plane_cfg)
        launch.small_updown = plane_cfg.pop("small_updown", launch.small_updown)
        launch.fused_updown = plane_cfg.pop("fused_updown", launch.fused_updown)
        launch.plane_cfg |= plane_cfg
    if trace is not None:
        launch.set_trace(trace)
    y, flags = launch.run()
    if launch.plane_cfg.get("I8") and launch.i8_ok and launch.kernels == "plane":  # int8 x: its own reference
        zhat = predict_i8(x, pack.pred) + lay["b1"].double()
        ref_flags = (zhat < lay["lo_in"].double()) | (zhat > lay["hi_in"].double())
        y_ref = _reference_with_flags(x, lay, act, ref_flags)
    else:
        y_ref, ref_flags = _reference64(x, q, lay, act)
        zhat = x.double() @ q.dequantize(torch.float64).to(device).T + lay["b1"].double()
    edge = torch.minimum((zhat - lay["lo_in"].double()).abs(), (zhat - lay["hi_in"].double()).abs())
    differ = flags.bool() != ref_flags
    assert bool((edge[differ] < 1e-2 * zhat.abs().mean()).all()), "a flag differs away from its threshold"
    if differ.any():  # recompute the reference with the kernel's flags at the edge cases
        y_ref = _reference_with_flags(x, lay, act, flags.bool())
    assert bool(torch.isfinite(y).all())
    err = float((y.double() - y_ref).norm() / y_ref.norm())
    assert err < {torch.bfloat16: 1e-2, torch.float16: 1e-3, torch.float32: 1e-5}[dtype], err
    # kernel 1 counts the flagged pairs, the union, the step's tokens and the step
    assert counts.tolist() == [int(flags.sum()), int(flags.bool().any(0).sum()), n, 1]
    assert int(pack.workspace.abs().sum()) == 0, "the kernels must leave their workspace zeroed"
    return launch, int(flags.bool().any(0).sum())


def _reference_with_flags(x: torch.Tensor, lay: dict, act: str, flags: torch.Tensor) -> torch.Tensor:
    from tardis.core.activations import activation

    d64 = torch.float64
    z = x.double() @ lay["w1"].double().T + lay["b1"].double()
    corr = (activation(act)(z) - lay["slope"].double() * z - lay["intercept"].double()) * flags
    return x.double() @ lay["wf"].double().T + lay["bf"].double() + corr.to(d64) @ lay["w2t"].double()


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("n", "d", "f", "bits", "gs", "act", "kernels"),
    [
        (1, 4544, 18176, 2, 128, "gelu", "plane"),
        (2, 4544, 18176, 2, 128, "gelu", "plane"),
        (3, 4544, 18176, 2, 128, "gelu", "plane"),
        (4, 4096, 16384, 2, 128, "gelu", "plane"),
        (3, 1000, 3000, 2, 128, "gelu_tanh", "plane"),
        (1, 777, 2050, 3, 128, "quick_gelu", "plane"),
        (2, 777, 2050, 4, 128, "gelu", "plane"),
        (4, 512, 1500, 4, 64, "relu", "plane"),
        (1, 4544, 18176, 2, 128, "gelu", "small"),
        (3, 1000, 3000, 2, 128, "gelu_tanh", "small"),
        (1, 777, 2050, 3, 128, "quick_gelu", "small"),
        (8, 4544, 18176, 2, 128, "gelu", "v1"),
        (16, 777, 2050, 3, 128, "quick_gelu", "v1"),
        (33, 512, 1500, 4, 64, "relu", "v1"),
        (64, 4096, 16384, 2, 128, "gelu", "v1"),
        (1, 4544, 18176, 2, 128, "gelu", "v1"),
        (4, 4544, 18176, 2, 128, "gelu", "v1"),
    ],
)
def test_kernels_match_float64_reference_on_gpu(
    n: int, d: int, f: int, bits: int, gs: int, act: str, kernels: str | None
) -> None:
    # "plane": plane-order predictor kernel + v1 up/down; "small": the v2 batch-1..4 kernels without
    # tl.dot; "v1": the tensor-core kernels
    seed = n + d if kernels != "v1" or n > 4 else 7 + n  # the seeds of the device runs in bench/NOTES.md
    _kernel_case("cuda", n, d, f, bits, gs, torch.bfloat16, act, seed=seed, kernels=kernels)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(("n", "kernels"), [(1, "plane"), (3, "small"), (8, "v1")])
def test_fp32_layers_get_fp32_products_on_gpu(n: int, kernels: str) -> None:
    # tl.dot would round fp32 operands to TF32 (≈ 1e-3): an fp32 model's kernels stay at fp32 accuracy
    _kernel_case("cuda", n, 777, 2050, 2, 128, torch.float32, "gelu", seed=31 + n, kernels=kernels)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(("n", "kernels"), [(1, "plane"), (3, "plane"), (8, "v1")])
def test_pdl_updown_launch_matches_float64_reference_on_gpu(n: int, kernels: str, monkeypatch) -> None:
    # the up/down kernels launched before the kernel ahead of them ends (griddepcontrol.wait in-kernel)
    from tardis.kernels import decode

    monkeypatch.setattr(decode, "PDL_UPDOWN", True)
    _kernel_case("cuda", n, 4544, 18176, 2, 128, torch.bfloat16, "gelu", seed=41 + n, kernels=kernels)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(("n", "d", "f", "pdl"), [(1, 4544, 18176, True), (2, 777, 2050, True), (1, 4544, 2240, False)])
def test_pdl_early_down_kernel_matches_float64_reference_on_gpu(
    n: int, d: int, f: int, pdl: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DOWN_EARLY: the small down kernel reads kernel 1's list and the W2ᵀ rows before its wait for the up kernel
    from tardis.kernels import decode

    monkeypatch.setattr(decode, "PDL_UPDOWN", pdl)
    monkeypatch.setattr(decode, "DOWN_EARLY", True)
    cfg = {"PRED_FIRST": True, "small_updown": True}
    _kernel_case("cuda", n, d, f, 2, 128, torch.bfloat16, "gelu", seed=51 + n, kernels="plane", plane_cfg=cfg)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(("n", "early"), [(1, False), (1, True), (2, False), (4, False)])
def test_pdl_kernel_1_behind_the_int8_x_kernel_matches_float64_reference_on_gpu(
    n: int, early: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # XQ_PDL: kernel 1 launched before _xq_kernel ends; its Wf programs start at once, its predictor programs
    # wait for the int8 x words in-kernel
    from tardis.kernels import decode

    monkeypatch.setattr(decode, "PDL_UPDOWN", True)
    monkeypatch.setattr(decode, "XQ_PDL", True)
    monkeypatch.setattr(decode, "DOWN_EARLY", early)
    cfg = {"I8": True, "PS": 4, "WS": 3}
    _kernel_case("cuda", n, 4544, 18176, 2, 128, torch.bfloat16, "gelu", seed=61 + n, kernels="plane", plane_cfg=cfg)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("n", "up", "down", "early", "pdl"),
    [(1, 0.15, 0.0, True, True), (1, 0.0, 0.23, True, True), (1, 0.1, 0.34, True, True), (1, 0.1, 0.23, False, True),
     (1, 0.1, 0.23, True, False), (2, 0.1, 0.23, True, True)],
)  # fmt: skip
def test_pdl_folded_rows_in_the_up_and_down_grids_on_gpu(
    n: int, up: float, down: float, early: bool, pdl: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # WF_UP_FRAC / WF_DOWN_FRAC at the Falcon-7B shape with batch 1's launch: the down grid's folded-row programs
    # wait for the up grid before they add into the rows kernel 1 zeroed
    _batch1_launch_case(
        monkeypatch, n, 18176, (91 + n,), PDL_UPDOWN=pdl, DOWN_EARLY=early, WF_UP_FRAC=up, WF_DOWN_FRAC=down
    )


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("n", "up", "pdl", "f"),
    [(1, 0.0, True, 18176), (1, 0.1, True, 18176), (2, 0.1, True, 18176), (1, 0.1, False, 18176), (1, 0.0, True, 300)],
)  # fmt: skip
def test_pdl_up_kernel_started_by_the_predictor_programs_on_gpu(
    n: int, up: float, pdl: bool, f: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # UP_SPIN at the Falcon-7B shape with batch 1's launch: the up programs poll kernel 1's finished predictor
    # programs while its folded rows still run (a race would show as a wrong output or a workspace left non-zero);
    # f = 300: a few predictor programs that finish long before the folded rows
    _batch1_launch_case(monkeypatch, n, f, (101 + n, 111 + n), PDL_UPDOWN=pdl, UP_SPIN=True, WF_UP_FRAC=up)


def _batch1_launch_case(monkeypatch: pytest.MonkeyPatch, n: int, f: int, seeds: tuple, **settings: object) -> None:
    # batch 1's plane launch with the small up/down kernels, the early down kernel and kernel 1 behind the int8 x
    # kernel, plus `settings` (decode's launch globals), at d = 4544 on the GPU, one case per seed
    from tardis.kernels import decode
    from tardis.kernels.blocks import PLANE_LAUNCH

    for name, value in ({"DOWN_EARLY": True, "XQ_PDL": True} | settings).items():
        monkeypatch.setattr(decode, name, value)
    cfg = PLANE_LAUNCH[1] | {"small_updown": True}
    for seed in seeds:
        _kernel_case("cuda", n, 4544, f, 2, 128, torch.bfloat16, "gelu", seed=seed, kernels="plane", plane_cfg=cfg)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("n", "down", "pdl", "f"),
    [(1, 0.0, True, 18176), (1, 0.23, True, 18176), (1, 0.0, False, 18176), (2, 0.0, True, 18176), (1, 0.0, True, 300)],
)  # fmt: skip
def test_pdl_union_rows_z_in_kernel_1_on_gpu(
    n: int, down: float, pdl: bool, f: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # UP_IN_K1 at the Falcon-7B shape with batch 1's launch: kernel 1's predictor programs compute the union rows'
    # z, and the down kernel follows kernel 1 directly (launched early with PDL, waiting in-kernel), with folded rows
    # in the down grid too; f = 300: a few predictor programs that finish long before the folded rows
    _batch1_launch_case(monkeypatch, n, f, (131 + n, 141 + n), PDL_UPDOWN=pdl, UP_IN_K1=True, WF_DOWN_FRAC=down)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("n", "down", "early", "pdl", "f", "ahead", "close"),
    [(1, 0.0, True, True, 18176, True, True), (1, 0.23, True, True, 18176, True, True),
     (1, 0.0, False, True, 18176, True, True), (1, 0.23, True, False, 18176, True, True),
     (2, 0.0, True, True, 18176, True, True), (1, 0.0, True, True, 300, True, True),
     (1, 0.23, True, True, 18176, True, False), (1, 0.23, True, True, 18176, False, True)],
)  # fmt: skip
def test_pdl_list_ahead_and_one_close_on_gpu(
    n: int, down: float, early: bool, pdl: bool, f: int, ahead: bool, close: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LIST_AHEAD and ONE_CLOSE at the Falcon-7B shape with batch 1's launch: the up kernel's list entries loaded
    # beside the count (stale past it: the list is poisoned with an out-of-range index), one relaxed atomic for a
    # down item's ticket and done count with the acquire fences only where an item casts its block or resets the
    # list (a race would show as a wrong output or a workspace left non-zero); with folded rows in the down grid,
    # without the early down kernel, without PDL
    _poison_list(monkeypatch)
    settings = {"PDL_UPDOWN": pdl, "DOWN_EARLY": early, "LIST_AHEAD": ahead, "ONE_CLOSE": close, "WF_DOWN_FRAC": down}
    settings["DOWN_FINISH"] = False  # ONE_CLOSE closes with the column tickets, which DOWN_FINISH has none of
    _batch1_launch_case(monkeypatch, n, f, (151 + n, 161 + n), **settings)


def _poison_list(monkeypatch: pytest.MonkeyPatch) -> None:
    # DecodeLaunch.run with the neuron list filled with an index past every layer's f first: entries past the count
    # must never be used
    from tardis.kernels import decode

    real_run = decode.DecodeLaunch.run

    def run(self: decode.DecodeLaunch) -> tuple[torch.Tensor, torch.Tensor]:
        self.idx.fill_(1 << 30)
        return real_run(self)

    monkeypatch.setattr(decode.DecodeLaunch, "run", run)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("cfg", PLANE_SWEEP)
@pytest.mark.parametrize(("n", "d", "f"), [(1, 4544, 2240), (2, 4544, 2240), (4, 4544, 2240)])
def test_plane_kernel_configurations_on_gpu(cfg: dict, n: int, d: int, f: int) -> None:
    plane_cfg = PLANE_BASE | cfg
    _kernel_case("cuda", n, d, f, 2, 128, torch.bfloat16, "gelu", seed=11 + n, kernels="plane", plane_cfg=plane_cfg)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(("n", "splits", "stages", "down_warps"), [(1, 2, 4, 8), (1, 8, 3, 4), (3, 4, 3, 8)])
def test_pipelined_small_up_kernel_on_gpu(
    monkeypatch: pytest.MonkeyPatch, n: int, splits: int, stages: int, down_warps: int
) -> None:
    # the small up kernel's K loop in cp.async stages (UP_STAGES), d in `splits` chunks, the small down kernel
    # with `down_warps` warps, Falcon-7B's shape
    from tardis.kernels import decode

    monkeypatch.setattr(decode, "UP_STAGES", stages)
    monkeypatch.setattr(decode, "UP_SPLITS", splits)
    monkeypatch.setattr(decode, "DOWN_WARPS", down_warps)
    cfg = {"PRED_FIRST": True, "small_updown": True}
    _kernel_case("cuda", n, 4544, 18176, 2, 128, torch.bfloat16, "gelu", seed=61 + n, kernels="plane", plane_cfg=cfg)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("d", "f", "pf", "finish"),
    [(4544, 18176, False, False), (4544, 18176, True, False), (777, 2050, False, False), (4544, 18176, False, True)],
)
def test_kernel_trace_stamps_each_phase_in_order_on_gpu(
    monkeypatch: pytest.MonkeyPatch, d: int, f: int, pf: bool, finish: bool
) -> None:
    # DecodeLaunch.set_trace at batch 1 (the committed PDL and early down kernel; with UP_PF_W2, with DOWN_FINISH):
    # the output is still the reference's, every program of the three kernels stamped its row, each program's stamps
    # are in order, every down item stamped all four, each column block was cast by exactly one item (not with
    # DOWN_FINISH: the finish kernel casts), and the down items' waits ended after the last up item had stored its
    # partials (PDL: the up grid had finished)
    from tardis.kernels import decode

    monkeypatch.setattr(decode, "UP_PF_W2", pf)
    monkeypatch.setattr(decode, "DOWN_FINISH", finish)
    tr = torch.zeros(3, 8192, 16, dtype=torch.int64, device="cuda")
    cfg = {"small_updown": True}
    launch, union = _kernel_case(
        "cuda", 1, d, f, 2, 128, torch.bfloat16, "gelu", seed=5 + d, kernels="plane", plane_cfg=cfg, trace=tr
    )  # fmt: skip
    assert launch.pdl and launch.down_early
    t = tr.cpu()
    k1, up, dn = t[0], t[1], t[2]
    n_k1 = int((k1[:, 0] > 0).sum())
    assert n_k1 > 0 and bool((k1[:n_k1, 0] > 0).all()) and not bool((k1[n_k1:] != 0).any())
    assert int(k1[:n_k1, 6].sum()) == launch.n_pred
    up_rows = up[:, 0] > 0
    assert bool((up[up_rows, 1] >= up[up_rows, 0]).all()) and bool((up[up_rows, 2] >= up[up_rows, 1]).all())
    n_up = int(up[up_rows, 6].max())
    assert n_up == -(-union // decode.UP_BLOCK_NEURONS) * launch.n_splits
    n_cols = -(-d // decode.DOWN_BLOCK_COLS)
    items = dn[:, 3] > 0
    n_items = -(-union // decode.DOWN_BLOCK_NEURONS) * n_cols
    assert int(items.sum()) == min(n_items, int((dn[:, 0] > 0).sum()))
    it = dn[items]
    for a, b in ((0, 1), (1, 2), (2, 3)):
        assert bool((it[:, b] >= it[:, a]).all()), (a, b)
        assert bool((it[:, 8 + b] >= it[:, 8 + a]).all()), ("clock", a, b)
    if finish:
        assert launch.finishes and int(it[:, 6].sum()) == 0
    elif n_items <= len(it):  # one item a program: each column block cast once
        assert int(it[:, 6].sum()) == n_cols
        assert sorted((it[:, 7] % n_cols).tolist()) == sorted(i % n_cols for i in range(n_items))
    assert int(it[:, 1].min()) >= int(up[:n_up, 2].max()) - 1000  # globaltimer: ns, one clock for all SMs


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("n", "d", "f", "early", "down", "tiles"),
    [(1, 4544, 18176, True, 0.0, (64, 512)), (1, 4544, 18176, False, 0.0, (64, 512)),
     (1, 777, 2050, True, 0.0, (64, 512)), (1, 4544, 18176, True, 0.23, (64, 512)),
     (1, 4544, 18176, True, 0.0, (32, 256)), (1, 777, 2050, True, 0.0, (32, 512))],
)  # fmt: skip
def test_down_finish_on_gpu(
    monkeypatch: pytest.MonkeyPatch, n: int, d: int, f: int, early: bool, down: float, tiles: tuple[int, int]
) -> None:
    # DOWN_FINISH at batch 1 with PDL: the finish kernel waits for the down grid (its adds into y32) before its
    # cast; with and without the early down kernel, with folded rows in the down grid, and with smaller down items
    from tardis.kernels import decode

    for name, value in (("DOWN_FINISH", True), ("DOWN_EARLY", early), ("WF_DOWN_FRAC", down),
                        ("DOWN_BLOCK_NEURONS", tiles[0]), ("DOWN_BLOCK_COLS", tiles[1])):  # fmt: skip
        monkeypatch.setattr(decode, name, value)
    cfg = {"small_updown": True}
    launch, _ = _kernel_case(
        "cuda", n, d, f, 2, 128, torch.bfloat16, "gelu", seed=d + 9, kernels="plane", plane_cfg=cfg
    )
    assert launch.finishes and launch.pdl


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
def test_kernel_trace_is_refused_without_a_gpu() -> None:
    # the stamps are inline PTX: Triton's interpreter cannot run them, and set_trace says so before any launch
    from tardis.kernels.decode import DecodeLaunch

    x, q, lay = _layer(1, 300, 200, 2, 64, 0.1, torch.float32, "cpu", 3)
    pack = make_pack(q, "cpu")
    launch = DecodeLaunch(x, pred=pack.pred, act="gelu", workspace=pack.workspace,
                          counts=torch.zeros(4, dtype=torch.int64), kernels="plane", **lay)  # fmt: skip
    with pytest.raises(ValueError, match="need a CUDA device"):
        launch.set_trace(torch.zeros(3, 64, 16, dtype=torch.int64))
    launch.set_trace(None)
    assert launch.trace is None


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("d", "f", "splits", "bk"), [(4544, 18176, 8, 128), (4544, 18176, 9, 512), (777, 2050, 8, 128)]
)
def test_up_kernel_w2_prefetch_on_gpu(monkeypatch: pytest.MonkeyPatch, d: int, f: int, splits: int, bk: int) -> None:
    # UP_PF_W2 (prefetch.global.L2 of the items' W2ᵀ rows) at batch 1 with the committed PDL and early down kernel
    from tardis.kernels import decode

    for key, value in {"UP_PF_W2": True, "UP_SPLITS": splits, "UP_SMALL_BLOCK_K": bk}.items():
        monkeypatch.setattr(decode, key, value)
    cfg = {"small_updown": True}
    _kernel_case("cuda", 1, d, f, 2, 128, torch.bfloat16, "gelu", seed=d + bk, kernels="plane", plane_cfg=cfg)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("d", "f", "neurons", "splits", "bk", "warps"),
    [(4544, 18176, 32, 18, 256, 4), (4544, 18176, 32, 9, 512, 8), (4544, 18176, 16, 9, 512, 4),
     (777, 2050, 16, 8, 128, 4)],
)  # fmt: skip
def test_one_step_small_up_items_on_gpu(
    monkeypatch: pytest.MonkeyPatch, d: int, f: int, neurons: int, splits: int, bk: int, warps: int
) -> None:
    # UP_SMALL_BLOCK_K / UP_WARPS: each small up item one step of bk columns (ONE: no accumulator loop), batch 1,
    # with the committed PDL and early down kernel
    from tardis.kernels import decode

    for key, value in {
        "UP_BLOCK_NEURONS": neurons,
        "UP_SPLITS": splits,
        "UP_SMALL_BLOCK_K": bk,
        "UP_WARPS": warps,
    }.items():
        monkeypatch.setattr(decode, key, value)
    cfg = {"small_updown": True}
    _kernel_case("cuda", 1, d, f, 2, 128, torch.bfloat16, "gelu", seed=81 + splits, kernels="plane", plane_cfg=cfg)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("n", "d", "f", "gs", "dtype", "split"),
    [
        (1, 777, 2050, 64, torch.bfloat16, 3),
        (2, 1000, 3000, 64, torch.float16, 1),
        (3, 4544, 18176, 128, torch.float16, 5),
        (4, 300, 130, 128, torch.bfloat16, 2),
        (1, 4544, 18176, 128, torch.bfloat16, 4),
    ],
)
def test_fp16x2_predictor_path_on_gpu(n: int, d: int, f: int, gs: int, dtype: torch.dtype, split: int) -> None:
    # H2 with both group sizes it takes (4 and 8 words per group), fp16 and bf16 x, a tail group of d,
    # a split that does not divide the groups; the small up/down kernels at odd n
    plane_cfg = {"H2": True, "SPLIT": split, "PRED_FIRST": True, "small_updown": n % 2 == 1}
    _kernel_case("cuda", n, d, f, 2, gs, dtype, "gelu", seed=5 + n, kernels="plane", plane_cfg=plane_cfg)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("n", "d", "f", "cfg"),
    [
        (1, 4544, 18176, {"PF2": True}),
        (2, 4544, 18176, {}),
        (3, 777, 2050, {"I8": True}),
        (4, 4096, 16384, {"PF2": True, "I8": True}),
        (1, 300, 130, {}),
    ],
)
def test_fused_updown_kernel_on_gpu(n: int, d: int, f: int, cfg: dict) -> None:
    # kernels 2 and 3 in one launch after the plane kernel: exact z, corrections, scatter and cast
    plane_cfg = {"PRED_FIRST": True, "fused_updown": True} | cfg
    _kernel_case("cuda", n, d, f, 2, 128, torch.bfloat16, "gelu", seed=21 + n, kernels="plane", plane_cfg=plane_cfg)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("n", "d", "f", "gs", "dtype", "cfg"),
    [
        (1, 4544, 18176, 128, torch.bfloat16, {"PF2": True}),
        (2, 777, 2050, 64, torch.float16, {"SPLIT": 3}),
        (3, 1000, 3000, 128, torch.bfloat16, {"PF2": True, "small_updown": True}),
        (4, 300, 130, 128, torch.bfloat16, {"SPLIT": 2, "PF4": True}),
        (1, 4544, 2240, 128, torch.bfloat16, {"T": 2, "num_warps": 8}),
        (2, 4544, 2240, 128, torch.bfloat16, {"PF2": True}),
        (4, 4544, 2240, 128, torch.bfloat16, {"PF2": True}),
    ],
)
def test_int8_x_predictor_path_on_gpu(n: int, d: int, f: int, gs: int, dtype: torch.dtype, cfg: dict) -> None:
    # I8 (dp4a against x rounded to int8 per group) with both group sizes it takes, fp16 and bf16 x, a
    # tail group of d, splits, two row tiles per program, 8 warps; checked against layout.predict_i8
    plane_cfg = {"I8": True, "PRED_FIRST": True} | cfg
    _kernel_case("cuda", n, d, f, 2, gs, dtype, "gelu", seed=9 + n, kernels="plane", plane_cfg=plane_cfg)


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
def test_down_column_block_narrower_than_the_tickets_is_refused_in_the_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the workspace holds one column ticket per TICKET_BLOCK_COLS columns: a narrower down launch (set at
    # run time from a JSON) would count into the predictor tiles' tickets, so it is refused by name
    from tardis.kernels import decode
    from tardis.kernels.blocks import TICKET_BLOCK_COLS

    monkeypatch.setattr(decode, "DOWN_BLOCK_COLS", TICKET_BLOCK_COLS // 2)
    with pytest.raises(ValueError, match="DOWN_BLOCK_COLS = 128: the workspace holds one column ticket per 256"):
        _kernel_case("cpu", 1, 300, 200, 2, 64, torch.float32, "gelu", seed=3, kernels="plane")


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
@pytest.mark.parametrize(
    ("n", "d", "f", "updown"),
    [
        (1, 700, 400, (8, 16, 36, 32, 256, 0, 4, 128, 4)),  # one 128-column step per up item (ONE), d not a
        # multiple of it
        (2, 600, 300, (16, 16, 18, 16, 256, 0, 4, 128, 4)),
        (1, 1100, 500, (8, 32, 8, 64, 512, 0, 4, 128, 4)),  # the default (v7): fewer column tickets than the
        # workspace has
        (3, 300, 200, (1, 16, 8, 32, 512, 0, 4, 128, 4)),  # one program per SM: every program loops over items
        (1, 1100, 500, (8, 32, 2, 64, 1024, 4, 8, 128, 4)),  # the up loop pipelined, 8 warps per down program
        (1, 1100, 500, (8, 32, 9, 64, 512, 0, 4, 256, 8)),  # items of one 256-column step (ONE), the last short
        (1, 2100, 500, (2, 16, 5, 64, 512, 0, 4, 512, 4)),  # one 512-column step an item, programs loop over items
        (1, 1100, 500, (8, 32, 4, 64, 512, 0, 4, 256, 4)),  # two 256-column steps an item (the loop, not ONE)
    ],
)
def test_up_down_launch_settings_in_the_interpreter(
    monkeypatch: pytest.MonkeyPatch, n: int, d: int, f: int, updown: tuple
) -> None:
    # the up/down launches bench/ffn_bench.py --updown-sweep times (programs per SM, neurons per up item,
    # d splits, neurons per down item, down columns, up stages, down warps, the small up kernel's step and warps)
    # give the reference's output and leave the workspace zero
    from tardis.kernels import decode
    from tardis.kernels.blocks import UPDOWN_LAUNCH_KEYS

    for key, value in zip(UPDOWN_LAUNCH_KEYS, updown, strict=True):
        monkeypatch.setattr(decode, key, value)
    _kernel_case("cpu", n, d, f, 2, 64, torch.float32, "gelu", seed=40 + n, kernels="plane")


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
@pytest.mark.parametrize(
    ("d", "f", "splits", "bk", "spin"),
    [(300, 200, 8, 128, False), (1100, 500, 3, 128, False), (2100, 500, 5, 512, False), (1100, 500, 4, 128, True)],
)
def test_up_kernel_w2_prefetch_in_the_interpreter(
    monkeypatch: pytest.MonkeyPatch, d: int, f: int, splits: int, bk: int, spin: bool
) -> None:
    # UP_PF_W2: the small up kernel's items first read their neurons' W2ᵀ rows over their columns (here loads whose
    # values are dropped, so an address far outside W2ᵀ faults; the last chunk short of the others); the output
    # and the workspace are unchanged; with one-step items (ONE) and with UP_SPIN's poll too
    from tardis.kernels import decode

    for key, value in {"UP_PF_W2": True, "UP_SPLITS": splits, "UP_SMALL_BLOCK_K": bk, "UP_SPIN": spin}.items():
        monkeypatch.setattr(decode, key, value)
    cfg = {"small_updown": True}
    _kernel_case("cpu", 1, d, f, 2, 64, torch.float32, "gelu", seed=d + splits, kernels="plane", plane_cfg=cfg)


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
@pytest.mark.parametrize(("n", "d", "f"), [(1, 300, 200), (3, 450, 330)])
def test_early_down_kernel_in_the_interpreter(monkeypatch: pytest.MonkeyPatch, n: int, d: int, f: int) -> None:
    # DOWN_EARLY's kernels (the list and W2ᵀ rows read first; the PDL waits are GPU-only) give the reference's
    # output and leave the workspace zero
    from tardis.kernels import decode

    monkeypatch.setattr(decode, "DOWN_EARLY", True)
    cfg = {"small_updown": True}
    _kernel_case("cpu", n, d, f, 2, 64, torch.float32, "gelu", seed=70 + n, kernels="plane", plane_cfg=cfg)


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
@pytest.mark.parametrize(
    ("n", "d", "f", "early", "up", "cfg"),
    [(1, 300, 200, True, 0.0, {}), (3, 450, 330, False, 0.0, {"PRED_FIRST": True}), (1, 1100, 500, True, 0.2, {}),
     (2, 600, 700, True, 0.0, {"SPLIT": 2}), (1, 1100, 500, True, 0.15, {"I8": True, "PS": 4, "WS": 3, "PG": 2})],
)  # fmt: skip
def test_up_kernel_started_by_the_predictor_programs_in_the_interpreter(
    monkeypatch: pytest.MonkeyPatch, n: int, d: int, f: int, early: bool, up: float, cfg: dict
) -> None:
    # UP_SPIN: kernel 1's predictor programs count themselves done, the up kernel polls that count (here already
    # complete: the interpreter runs one launch after another), the down kernel's last item resets it;
    # with split predictor tiles and with folded rows in the up grid too. The workspace check covers the reset.
    from tardis.kernels import decode

    monkeypatch.setattr(decode, "UP_SPIN", True)
    monkeypatch.setattr(decode, "DOWN_EARLY", early)
    monkeypatch.setattr(decode, "WF_UP_FRAC", up)
    cfg = cfg | {"small_updown": True}
    _kernel_case("cpu", n, d, f, 2, 64, torch.float32, "gelu", seed=90 + n, kernels="plane", plane_cfg=cfg)


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
@pytest.mark.parametrize(
    ("n", "d", "f", "down", "cfg"),
    [(1, 300, 200, 0.0, {}), (3, 1100, 330, 0.0, {"PRED_FIRST": True}), (1, 1100, 500, 0.5, {}),
     (2, 600, 700, 0.0, {"SPLIT": 2}), (1, 2100, 500, 0.3, {"I8": True, "PS": 4, "WS": 3, "PG": 2}),
     (4, 450, 900, 0.0, {"T": 2})],
)  # fmt: skip
def test_union_rows_z_in_kernel_1_in_the_interpreter(
    monkeypatch: pytest.MonkeyPatch, n: int, d: int, f: int, down: float, cfg: dict
) -> None:
    # UP_IN_K1: kernel 1's predictor programs compute their union rows' exact z (several steps of Z_ROWS rows
    # where a tile has more: rate 0.1 of 64 rows; d over one to three chunks of Z_BLOCK_K), and the down kernel
    # follows with no up kernel; with split tiles, two tiles a program, the int8-x predictor and folded rows in the
    # down grid. The up kernel's folded-row share (WF_UP_FRAC) has no grid then: its rows stay in kernel 1.
    from tardis.kernels import decode

    monkeypatch.setattr(decode, "UP_IN_K1", True)
    monkeypatch.setattr(decode, "WF_UP_FRAC", 0.2)
    monkeypatch.setattr(decode, "WF_DOWN_FRAC", down)
    calls: list[str] = []
    real_up = decode.DecodeLaunch.up
    monkeypatch.setattr(decode.DecodeLaunch, "up", lambda self, *a, **k: (calls.append("up"), real_up(self, *a, **k)))
    cfg = cfg | {"small_updown": True}
    _kernel_case("cpu", n, d, f, 2, 64, torch.float32, "gelu", seed=120 + n, kernels="plane", plane_cfg=cfg)
    assert calls == [], "UP_IN_K1 launches no up kernel"


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
@pytest.mark.parametrize(
    ("n", "d", "f", "early", "up", "down", "spin", "ahead", "close"),
    [(1, 300, 200, True, 0.0, 0.0, False, True, True), (3, 450, 330, False, 0.0, 0.0, False, True, True),
     (1, 1100, 900, True, 0.2, 0.5, False, True, True), (2, 600, 700, False, 0.1, 0.3, False, True, False),
     (1, 1100, 900, True, 0.2, 0.5, False, False, True), (1, 1100, 500, True, 0.15, 0.0, True, True, True)],
)  # fmt: skip
def test_list_ahead_and_one_close_in_the_interpreter(
    monkeypatch: pytest.MonkeyPatch, n: int, d: int, f: int, early: bool, up: float, down: float, spin: bool,
    ahead: bool, close: bool,
) -> None:  # fmt: skip
    # LIST_AHEAD: the up programs load their first item's list entries before the count arrives (the list poisoned
    # past the count with an out-of-range index), later items (the interpreter's grid is small) load theirs after
    # it; ONE_CLOSE: a down item's ticket and done count come from one atomic (the workspace check covers the
    # resets); with and without the early down kernel, with folded rows in both grids, and with UP_SPIN (whose up
    # kernel reads its list only after its poll)
    from tardis.kernels import decode

    for name, value in (("LIST_AHEAD", ahead), ("ONE_CLOSE", close), ("DOWN_EARLY", early), ("WF_UP_FRAC", up),
                        ("WF_DOWN_FRAC", down), ("UP_SPIN", spin), ("DOWN_FINISH", False)):  # fmt: skip
        monkeypatch.setattr(decode, name, value)
    _poison_list(monkeypatch)
    cfg = {"small_updown": True}
    _kernel_case("cpu", n, d, f, 2, 64, torch.float32, "gelu", seed=150 + n, kernels="plane", plane_cfg=cfg)


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
@pytest.mark.parametrize(
    ("n", "d", "f", "early", "up", "down", "spin", "k1z"),
    [(1, 300, 200, True, 0.0, 0.0, False, False), (3, 1100, 330, False, 0.0, 0.0, False, False),
     (1, 1100, 900, True, 0.2, 0.5, False, False), (2, 600, 700, True, 0.1, 0.3, False, False),
     (1, 1100, 500, True, 0.15, 0.0, True, False), (1, 700, 400, True, 0.0, 0.3, False, True)],
)  # fmt: skip
def test_down_finish_in_the_interpreter(
    monkeypatch: pytest.MonkeyPatch, n: int, d: int, f: int, early: bool, up: float, down: float, spin: bool,
    k1z: bool,
) -> None:  # fmt: skip
    # DOWN_FINISH: the down items only add into y32 (no tickets, done count or casts) and the finish kernel casts y32
    # into y (d not a multiple of its 512 columns) and resets the list count (the workspace check; UP_SPIN: and the
    # predictor programs' count); with and without the early down kernel, folded rows in both grids, UP_SPIN's up
    # kernel and UP_IN_K1 (no up grid)
    from tardis.kernels import decode

    for name, value in (("DOWN_FINISH", True), ("DOWN_EARLY", early), ("WF_UP_FRAC", up), ("WF_DOWN_FRAC", down),
                        ("UP_SPIN", spin), ("UP_IN_K1", k1z)):  # fmt: skip
        monkeypatch.setattr(decode, name, value)
    cfg = {"small_updown": True}
    launch, _ = _kernel_case("cpu", n, d, f, 2, 64, torch.float32, "gelu", seed=170 + n, kernels="plane", plane_cfg=cfg)
    assert launch.finishes


# folded rows moved into the up / down grids (WF_UP_FRAC, WF_DOWN_FRAC): (n, d, f, up, down, down columns, launch)
WF_MOVES = [
    (1, 1100, 500, 0.2, 0.5, 512, {}),  # 14 programs in the up grid, the last (partial) column block in the down grid
    (2, 600, 300, 0.0, 0.45, 256, {"BMF": 8}),  # the down grid's block of 88 rows: 11 programs
    (1, 300, 200, 0.5, 0.0, 512, {}),  # up only
    (1, 300, 200, 0.0, 1.0, 512, {}),  # every folded row in the down grid: kernel 1 runs only predictor programs
    (3, 1100, 330, 0.1, 0.25, 256, {"PRED_FIRST": True, "WS": 3}),
    (1, 1100, 500, 0.15, 0.3, 512, {"I8": True, "PS": 4, "WS": 3, "BMF": 32, "PG": 2, "PRED_FIRST": True}),
]


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
@pytest.mark.parametrize("early", [False, True])
@pytest.mark.parametrize(("n", "d", "f", "up", "down", "cols", "cfg"), WF_MOVES)
def test_folded_rows_in_the_up_and_down_grids_in_the_interpreter(
    monkeypatch: pytest.MonkeyPatch, n: int, d: int, f: int, up: float, down: float, cols: int, cfg: dict, early: bool
) -> None:
    # the folded rows the up grid stores and the down grid adds (into rows kernel 1 zeroed; the column tickets and
    # the list reset count them) give the reference's output and leave the workspace zero
    from tardis.kernels import decode

    monkeypatch.setattr(decode, "WF_UP_FRAC", up)
    monkeypatch.setattr(decode, "WF_DOWN_FRAC", down)
    monkeypatch.setattr(decode, "DOWN_BLOCK_COLS", cols)
    monkeypatch.setattr(decode, "DOWN_EARLY", early)
    cfg = cfg | {"small_updown": True}
    _kernel_case("cpu", n, d, f, 2, 64, torch.float32, "gelu", seed=80 + n, kernels="plane", plane_cfg=cfg)


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
def test_folded_row_split_rounds_to_programs_and_column_blocks_in_the_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DecodeLaunch.wf_split: down rows in whole column blocks from the last, up rows in whole kernel-1 programs (and
    # moved tiles); the launch of the moved tiles; no moves where the call does not run the small up/down kernels
    from tardis.kernels import decode

    x, q, lay = _layer(1, 4544, 640, 2, 128, 0.1, torch.float32, "cpu", 0)
    pack = make_pack(q, "cpu")
    counts = torch.zeros(4, dtype=torch.int64)
    launch = decode.DecodeLaunch(x, pred=pack.pred, act="gelu", workspace=pack.workspace, counts=counts, **lay)
    launch.small_updown, launch.plane_cfg = True, launch.plane_cfg | {"BMF": 32}
    assert launch.wf_split() == (4544, 4544)
    monkeypatch.setattr(decode, "WF_UP_FRAC", 0.1)
    monkeypatch.setattr(decode, "WF_DOWN_FRAC", 0.23)
    assert launch.wf_split() == (3584 - 480, 3584)  # 2 of 9 blocks of 512; 454 rows up to whole programs of 32
    # 4 column chunks of 1280 (5 steps of 256), 15 and 30 row blocks of 32
    assert launch._wf_tiles(3104, 3584) == {"wf0": 97, "n_wf": 60, "n_ks": 4, "kc": 5, "WF": True}
    assert launch._wf_tiles(3584, 4544)["n_wf"] == 120
    launch.plane_cfg["BMF"] = 48
    with pytest.raises(ValueError, match="WF_MOVED_ROWS = 32 and BMF = 48 must each divide DOWN_BLOCK_COLS = 512"):
        launch.wf_split()
    launch.plane_cfg["BMF"] = 8  # the up rows in whole tiles of 32
    monkeypatch.setattr(decode, "WF_UP_FRAC", 0.05)
    assert launch.wf_split() == (3584 - 256, 3584)
    launch.small_updown = False
    assert launch.wf_split() == (4544, 4544)


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
@pytest.mark.parametrize(
    ("n", "d", "f", "bits", "kernels", "t"),
    [
        (1, 200, 150, 2, None, None),
        (4, 200, 150, 3, None, None),
        (2, 200, 150, 2, "small", None),
        (3, 130, 70, 3, "small", None),
        (4, 96, 64, 4, "small", None),
        (5, 96, 64, 4, None, None),
        (1, 200, 150, 2, "v1", None),
        (1, 200, 150, 2, "plane", 1),
        (2, 200, 330, 2, "plane", 2),
        (3, 130, 70, 3, "plane", 4),
        (4, 96, 64, 4, "plane", 2),
        (2, 256, 200, 3, "plane", 1),
        (1, 50, 70, 2, "plane", 1),
        (2, 450, 130, 2, "plane", 1),
        (2, 450, 130, 2, "plane", {"T": 2, "PF2": True, "PRED_FIRST": True}),
        (1, 200, 150, 3, "plane", {"T": 1, "PF2": True}),
        (3, 300, 200, 4, "plane", {"T": 1, "PRED_FIRST": True}),
        (1, 450, 130, 2, "plane", {"SPLIT": 3, "PRED_FIRST": True}),
        (4, 450, 330, 3, "plane", {"SPLIT": 2, "T": 2}),
        (2, 200, 150, 2, "plane", {"SPLIT": 9}),
        (1, 300, 200, 2, "plane", {"small_updown": True}),
        (2, 1000, 300, 2, "plane", {"PF4": True, "SPLIT": 3}),
        (1, 450, 130, 3, "plane", {"PF4": True}),
        (3, 450, 130, 4, "plane", {"small_updown": True, "SPLIT": 2}),
        (1, 200, 150, 2, "plane", {"I8": True}),
        (3, 450, 330, 2, "plane", {"I8": True, "SPLIT": 3, "PF2": True}),
        (4, 300, 200, 2, "plane", {"I8": True, "T": 2, "PRED_FIRST": True}),
        (2, 130, 70, 2, "plane", {"I8": True, "PF4": True, "small_updown": True}),
        (4, 200, 150, 4, "plane", {"PRED_FIRST": True, "BMF": 8}),
        (1, 1100, 150, 2, "plane", {"fused_updown": True}),
        (2, 300, 200, 3, "plane", {"fused_updown": True, "I8": True}),
        (3, 2100, 330, 4, "plane", {"fused_updown": True, "T": 2}),
        (4, 96, 64, 2, "plane", {"fused_updown": True}),
        (2, 200, 150, 3, "small", {"fused_updown": True}),
        (1, 450, 130, 2, "plane", {"PS": 4, "WS": 3}),
        (3, 300, 200, 3, "plane", {"PS": 3, "WS": 4, "SPLIT": 2, "PRED_FIRST": True}),
        (2, 450, 330, 2, "plane", {"PS": 4, "I8": True, "T": 2}),
        (1, 300, 200, 4, "plane", {}),  # v9's batch-1 launch with a predictor I8 does not take: float path, stages
        (2, 450, 130, 3, "plane", {}),
        (1, 450, 130, 2, "plane", {"PS": 4, "PG": 2}),  # 7 full groups: three pairs and one alone
        (3, 300, 200, 2, "plane", {"PS": 3, "PG": 2, "I8": True, "SPLIT": 2}),
        (1, 450, 270, 2, "plane", {"PS": 4, "PG": 2, "I8": True, "T": 2, "BMF": 32}),  # 5 row tiles: a half-empty pair
        # the Wf part as column-chunk tiles (WK): y32 zeroed by the int8 x kernel (I8) or a memset
        (1, 1100, 150, 2, "plane", {"WK": 4, "I8": True, "PS": 4, "WS": 3, "BMF": 32, "PRED_FIRST": True}),
        (2, 450, 130, 2, "plane", {"WK": 2, "I8": True, "BMF": 16}),
        (3, 700, 200, 3, "plane", {"WK": 3, "WS": 3}),  # float predictor: the memset
        (1, 1100, 330, 4, "plane", {"WK": 4, "small_updown": True}),
        # the int8 x words as four 4-byte loads (XV off; on is the default)
        (2, 300, 200, 2, "plane", {"I8": True, "XV": False, "PS": 4, "PG": 2}),
        (3, 450, 130, 2, "plane", {"I8": True, "XV": False}),
    ],
)
def test_kernels_match_float64_reference_in_the_interpreter(n: int, d: int, f: int, bits: int, kernels, t) -> None:
    # The interpreter has no bf16 arithmetic: float32 checks the kernels' logic (None: the default choice;
    # t: the plane kernel's row tiles per program, or its launch options).
    plane_cfg = None if t is None else t if isinstance(t, dict) else {"T": t}
    _kernel_case("cpu", n, d, f, bits, 64, torch.float32, "gelu", seed=n, kernels=kernels, plane_cfg=plane_cfg)


def _gptq_case(device: str, f: int, d: int, g: int, bits: int, clip: bool, seed: int) -> None:
    # GPTQ's block kernel against the torch loop on the same W1 and Hessian
    from tardis.core.predictor import CLIP_RATIOS, gptq_blocks_torch, gptq_setup
    from tardis.kernels.gptq import gptq_blocks

    gen = torch.Generator().manual_seed(seed)
    w1 = (torch.randn(f, d, generator=gen) * 0.05).to(device)
    x = torch.randn(2000, d, generator=gen) @ (torch.randn(d, d, generator=gen) / d**0.5)
    h = (x.double().T @ x.double()).to(device)
    w, g, u, block = gptq_setup(w1, h, g)
    codes, scale, offset = gptq_blocks(w.clone(), u, bits, g, block, CLIP_RATIOS if clip else (1.0,))
    codes_r, scale_r, offset_r = gptq_blocks_torch(w.clone(), u, bits, g, block, clip)
    # the same arithmetic up to the order of float sums: a code may differ at a rounding tie, and GPTQ sends that
    # difference on to the later columns, so compare fractions and the quantity GPTQ minimises, not equality
    assert float((codes == codes_r).double().mean()) >= 0.99
    assert float((scale == scale_r).double().mean()) >= 0.98 and float((offset == offset_r).double().mean()) >= 0.98

    def hessian_error(c: torch.Tensor, s: torch.Tensor, o: torch.Tensor) -> float:
        deq = (c.view(f, -1, g) * s[..., None] + o[..., None]).flatten(1)[:, :d].double()
        e = w1.double() - deq
        return float(((e @ h) * e).sum())  # tr((W − Q) H (W − Q)ᵀ) = Σ over the calibration x of ‖(W − Q)·x‖²

    assert abs(hessian_error(codes, scale, offset) / hessian_error(codes_r, scale_r, offset_r) - 1) < 1e-2


@pytest.mark.skipif(
    not HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton and TRITON_INTERPRET=1"
)
@pytest.mark.parametrize(
    ("f", "d", "g", "bits", "clip"),
    [(40, 300, 32, 2, True), (37, 260, 128, 4, True), (50, 200, 48, 3, False), (16, 256, 64, 2, True)],
)
def test_gptq_block_kernel_in_the_interpreter(f: int, d: int, g: int, bits: int, clip: bool) -> None:
    # GPTQ's column loop as one launch per block against the torch loop: several groups a block (g = 32, 64), a
    # block narrower than its power of two (g = 48: 96 of 128), rows not a multiple of the program's 16, no clip
    _gptq_case("cpu", f, d, g, bits, clip, seed=f + d)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(("f", "d", "g", "bits"), [(1000, 777, 128, 2), (2050, 4544, 128, 2), (300, 500, 32, 3)])
def test_gptq_block_kernel_matches_the_torch_loop_on_gpu(f: int, d: int, g: int, bits: int) -> None:
    _gptq_case("cuda", f, d, g, bits, True, seed=f + d)
