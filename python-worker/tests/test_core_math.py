"""The method's pure functions against independent float64 references on seeded random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tardis.core.activations import activation
from tardis.core.fit import fit_lines
from tardis.core.fold import fold
from tardis.core.predictor import pack_codes, quantize_rtn, unpack_codes
from tardis.core.ranges import shortest_interval
from tardis.core.stats import FitSums, HistogramStats, MarginStats, MomentStats
from tardis.runtime.reference import dense_ffn, tardis_ffn


def test_shortest_interval_matches_brute_force_over_bins() -> None:
    gen = torch.Generator().manual_seed(11)
    counts = torch.randint(0, 20, (7, 40), generator=gen)
    edges = torch.sort(torch.rand(7, 41, generator=gen) * 10, dim=1).values
    lo, hi = shortest_interval(counts, edges, 0.8)
    for n in range(7):
        total, best = int(counts[n].sum()), (float("inf"), 0.0, 0.0)
        need = int(np.ceil(total * 0.8))
        for s in range(40):
            for e in range(s, 40):
                if int(counts[n, s : e + 1].sum()) >= need:
                    w = float(edges[n, e + 1] - edges[n, s])
                    if w < best[0]:
                        best = (w, float(edges[n, s]), float(edges[n, e + 1]))
                    break
        assert float(hi[n] - lo[n]) == pytest.approx(best[0])


def test_histogram_range_holds_the_coverage_and_is_near_the_exact_shortest_interval() -> None:
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(20000, 5, generator=gen) * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0]) + torch.tensor(
        [0, 1, -2, 0, 5.0]
    )
    z[:, 4] = torch.distributions.Gamma(2.0, 1.0).sample((20000,))  # skewed
    m = MomentStats.empty(5)
    m.update(z, z)
    h = HistogramStats.from_moments(m, 512)
    h.update(z, z)
    lo, hi = shortest_interval(h.counts, h.edges, 0.9)
    for n in range(5):
        inside = ((z[:, n] >= lo[n]) & (z[:, n] <= hi[n])).double().mean()
        assert inside >= 0.9
        srt = torch.sort(z[:, n].double()).values
        k = int(np.ceil(0.9 * 20000))
        exact = float((srt[k - 1 :] - srt[: 20000 - k + 1]).min())
        assert float(hi[n] - lo[n]) <= exact * 1.03 + 1e-6


def test_statistics_state_does_not_grow_with_the_number_of_tokens() -> None:
    f = 16
    m = MomentStats.empty(f)
    gen = torch.Generator().manual_seed(0)
    first = torch.randn(100, f, generator=gen)
    m.update(first, first)
    h = HistogramStats.from_moments(m, 64)
    sizes = []
    for _ in range(5):
        z = torch.randn(1000, f, generator=gen)
        h.update(z, z + 0.01)
        sizes.append(sum(t.numel() for t in (h.counts, h.rcounts, h.edges)))
    assert len(set(sizes)) == 1 and sizes[0] == f * (66 + 64 + 67)


def test_fit_lines_equals_least_squares_on_the_in_range_samples() -> None:
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(5000, 6, generator=gen) * 2
    h = activation("gelu")(z)
    lo, hi = torch.full((6,), -1.0), torch.linspace(0.5, 3.0, 6)
    s = FitSums.empty(6)
    s.update(z, h, lo, hi)
    a, c, sse = fit_lines(s)
    for n in range(6):
        sel = (z[:, n] >= lo[n]) & (z[:, n] <= hi[n])
        zz, hh = z[sel, n].double().numpy(), h[sel, n].double().numpy()
        A = np.stack([zz, np.ones_like(zz)], 1)
        (ra, rc), *_ = np.linalg.lstsq(A, hh, rcond=None)
        assert float(a[n]) == pytest.approx(ra, abs=1e-6)
        assert float(c[n]) == pytest.approx(rc, abs=1e-6)
        assert float(sse[n]) == pytest.approx(float(((hh - ra * zz - rc) ** 2).sum()), rel=1e-5, abs=1e-8)


def test_fold_with_identity_activation_is_exact() -> None:
    gen = torch.Generator().manual_seed(2)
    d, f = 24, 96
    w1, b1 = torch.randn(f, d, generator=gen, dtype=torch.float64), torch.randn(f, generator=gen, dtype=torch.float64)
    w2, b2 = torch.randn(d, f, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    wf, bf = fold(w1, b1, w2, b2, torch.ones(f, dtype=torch.float64), torch.zeros(f, dtype=torch.float64))
    x = torch.randn(10, d, generator=gen, dtype=torch.float64)
    assert torch.allclose(x @ wf.T + bf, (x @ w1.T + b1) @ w2.T + b2, atol=1e-10)


def _random_layer(gen: torch.Generator, d: int = 32, f: int = 128) -> dict[str, torch.Tensor]:
    w1 = torch.randn(f, d, generator=gen, dtype=torch.float64)
    b1 = torch.randn(f, generator=gen, dtype=torch.float64)
    w2t = torch.randn(f, d, generator=gen, dtype=torch.float64) / f**0.5
    b2 = torch.randn(d, generator=gen, dtype=torch.float64)
    lo = -torch.rand(f, generator=gen, dtype=torch.float64) * 2
    hi = torch.rand(f, generator=gen, dtype=torch.float64) * 2
    slope = torch.rand(f, generator=gen, dtype=torch.float64)
    intercept = torch.randn(f, generator=gen, dtype=torch.float64) * 0.1
    return {"w1": w1, "b1": b1, "w2t": w2t, "b2": b2, "lo": lo, "hi": hi, "slope": slope, "intercept": intercept}


def test_oracle_predictor_error_equals_the_in_range_line_misfit() -> None:
    gen = torch.Generator().manual_seed(7)
    p = _random_layer(gen)
    wf, bf = fold(p["w1"], p["b1"], p["w2t"].T, p["b2"], p["slope"], p["intercept"])
    x = torch.randn(50, 32, generator=gen, dtype=torch.float64) * 0.3
    y, _ = tardis_ffn(
        x, w1=p["w1"], b1=p["b1"], w2t=p["w2t"], wf=wf, bf=bf, w1q=p["w1"], lo_in=p["lo"], hi_in=p["hi"],
        lo=p["lo"], hi=p["hi"], slope=p["slope"], intercept=p["intercept"], act="gelu", mode="oracle",
    )  # fmt: skip
    dense = dense_ffn(x, p["w1"], p["b1"], p["w2t"], p["b2"], "gelu")
    # Independent: the error of each in-range neuron is W2[:, i]·(a_i z_i + c_i − gelu(z_i)).
    expected = torch.zeros_like(dense)
    for t in range(x.shape[0]):
        for i in range(p["w1"].shape[0]):
            z = float(x[t] @ p["w1"][i] + p["b1"][i])
            if float(p["lo"][i]) <= z <= float(p["hi"][i]):
                g = 0.5 * z * (1 + float(torch.erf(torch.tensor(z / 2**0.5, dtype=torch.float64))))
                expected[t] += p["w2t"][i] * (float(p["slope"][i]) * z + float(p["intercept"][i]) - g)
    assert torch.allclose(y - dense, expected, atol=1e-9)
    assert float(expected.abs().max()) > 1e-3  # the misfit is really there


def test_all_flagged_equals_dense_and_correction_is_exact_for_flagged_in_range_neurons() -> None:
    gen = torch.Generator().manual_seed(8)
    p = _random_layer(gen)
    wf, bf = fold(p["w1"], p["b1"], p["w2t"].T, p["b2"], p["slope"], p["intercept"])
    x = torch.randn(20, 32, generator=gen, dtype=torch.float64)
    common = dict(w1=p["w1"], b1=p["b1"], w2t=p["w2t"], wf=wf, bf=bf, w1q=p["w1"], lo=p["lo"], hi=p["hi"])
    y, flags = tardis_ffn(
        x,
        **common,
        lo_in=p["lo"],
        hi_in=p["hi"],
        slope=p["slope"],
        intercept=p["intercept"],
        act="gelu_tanh",
        mode="all",
    )
    assert bool(flags.all())
    assert torch.allclose(y, dense_ffn(x, p["w1"], p["b1"], p["w2t"], p["b2"], "gelu_tanh"), atol=1e-9)


def test_pack_and_unpack_round_trip_for_every_bit_width() -> None:
    gen = torch.Generator().manual_seed(1)
    for bits in (2, 3, 4):
        codes = torch.randint(0, 1 << bits, (9, 77), generator=gen)
        packed = pack_codes(codes, bits)
        assert packed.dtype == torch.int32 and packed.shape == (9, -(-77 // (32 // bits)))
        assert torch.equal(unpack_codes(packed, bits, 77), codes)


def test_rtn_quantization_error_shrinks_with_bits_and_codes_stay_in_range() -> None:
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(64, 200, generator=gen)
    errs = []
    for bits in (2, 3, 4):
        q = quantize_rtn(w, bits, 64)
        deq = q.dequantize()
        assert deq.shape == w.shape
        errs.append(float(((deq - w) ** 2).mean() / (w**2).mean()))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.02 and errs[0] < 0.2


def test_recall_margin_is_the_smallest_bin_edge_meeting_the_target() -> None:
    gen = torch.Generator().manual_seed(9)
    n, f = 4000, 3
    z = torch.randn(n, f, generator=gen)
    zhat = z + 0.3 * torch.randn(n, f, generator=gen)
    m = MomentStats.empty(f)
    m.update(z, zhat)
    ms = MarginStats.from_moments(m, 128)
    lo, hi = torch.full((f,), -1.2), torch.full((f,), 1.2)
    ms.update(z, zhat, lo, hi)
    delta = ms.margin_for_recall(0.99)
    counts = ms.counts_at(delta)
    for k in range(f):
        out = (z[:, k] < lo[k]) | (z[:, k] > hi[k])

        def misses(dl: float, k: int = k, out: torch.Tensor = out) -> int:
            flagged = (zhat[:, k] < lo[k] + dl) | (zhat[:, k] > hi[k] - dl)
            return int((out & ~flagged).sum())

        allowed = int(np.floor(0.01 * int(out.sum())))
        assert misses(float(delta[k])) <= allowed
        assert misses(float(delta[k] - ms.width[k])) > allowed or float(delta[k]) == 0.0
        assert int(counts.missed[k]) == misses(float(delta[k]))
        flagged = (zhat[:, k] < lo[k] + delta[k]) | (zhat[:, k] > hi[k] - delta[k])
        assert int(counts.flagged[k]) == int(flagged.sum())


def test_gptq_equals_rtn_for_a_diagonal_hessian_and_beats_it_on_correlated_inputs() -> None:
    from tardis.core.predictor import quantize_gptq

    gen = torch.Generator().manual_seed(12)
    w = torch.randn(48, 96, generator=gen)
    eye = quantize_gptq(w, torch.eye(96) * 3.0, 2, 32)
    rtn = quantize_rtn(w, 2, 32)
    assert torch.equal(eye.packed, rtn.packed) and torch.equal(eye.scales, rtn.scales)
    mix = torch.randn(96, 96, generator=gen)
    x = torch.randn(4000, 96, generator=gen) @ mix * 0.2 + torch.randn(4000, 96, generator=gen) * 0.05
    h = (x.double().T @ x.double()).float()
    held = torch.randn(1000, 96, generator=gen) @ mix * 0.2
    err = lambda q: float(((held @ (q.dequantize() - w).T) ** 2).mean())  # noqa: E731
    assert err(quantize_gptq(w, h, 2, 32)) < 0.8 * err(rtn)


def _gptq_columnwise(w: torch.Tensor, h: torch.Tensor, bits: int, g: int, damp: float = 0.01) -> torch.Tensor:
    """Float64 GPTQ codes [f, d_pad], every later column updated after each column (no blocks)."""
    from tardis.core.predictor import group_params

    f, d = w.shape
    dp = -(-d // g) * g
    wq = torch.zeros(f, dp, dtype=torch.float64)
    wq[:, :d] = w.double()
    hh = torch.zeros(dp, dp, dtype=torch.float64)
    hh[:d, :d] = h.double()
    diag = torch.diagonal(hh)
    dead = diag <= 0
    diag[dead] = 1.0
    diag += damp * float(diag[~dead].mean())
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hh)), upper=True)
    codes = torch.zeros(f, dp, dtype=torch.float64)
    for j in range(dp):
        if j % g == 0:
            scale, offset = (t.double() for t in group_params(wq[:, j : j + g].float(), bits, True))
        q = torch.clamp(torch.round((wq[:, j] - offset) / scale), 0, (1 << bits) - 1)
        codes[:, j] = q
        err = (wq[:, j] - (q * scale + offset)) / u[j, j]
        wq[:, j + 1 :] -= err.unsqueeze(1) * u[j, j + 1 :].unsqueeze(0)
    return codes


@pytest.mark.parametrize(("d", "g", "bits"), [(400, 32, 2), (300, 48, 3), (260, 128, 4)])
def test_blocked_gptq_gives_the_codes_of_column_by_column_gptq(d: int, g: int, bits: int) -> None:
    from tardis.core.predictor import quantize_gptq

    gen = torch.Generator().manual_seed(d + g)
    w = torch.randn(64, d, generator=gen) * 0.05
    mix = torch.randn(d, d, generator=gen) / d**0.5
    x = torch.randn(3000, d, generator=gen) @ mix + 0.1 * torch.randn(3000, d, generator=gen)
    h = (x.double().T @ x.double()).float()
    got = unpack_codes(quantize_gptq(w, h, bits, g).packed, bits, -(-d // g) * g).double()
    want = _gptq_columnwise(w, h, bits, g)
    # float32 blocks vs a float64 column loop: only codes at a rounding tie may differ
    assert float((got == want).double().mean()) >= 0.995


def _ls_lines(act: str, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares lines of act on a uniform grid over each [lo, hi] (float64)."""
    t = torch.linspace(0, 1, 401, dtype=torch.float64)
    z = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * t
    h = activation(act)(z)
    zm, hm = z.mean(1, keepdim=True), h.mean(1, keepdim=True)
    a = ((z - zm) * (h - hm)).sum(1) / ((z - zm) ** 2).sum(1)
    return a, (hm.squeeze(1) - a * zm.squeeze(1))


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "quick_gelu"])
@pytest.mark.parametrize("tolerance", [0.5, 1.0, 2.0])
def test_band_edges_are_the_first_points_where_the_misfit_exceeds_the_tolerance(act: str, tolerance: float) -> None:
    from tardis.core.band import BAND_REACH, inside_misfit, widen_to_band

    gen = torch.Generator().manual_seed(5)
    f = 40
    lo = (torch.rand(f, generator=gen, dtype=torch.float64) * 6 - 4).float()
    hi = (lo.double() + 0.2 + torch.rand(f, generator=gen, dtype=torch.float64) * 4).float()
    a, c = _ls_lines(act, lo.double(), hi.double())
    lo2, hi2 = widen_to_band(act, lo, hi, a.float(), c.float(), tolerance)
    assert bool((lo2 <= lo).all()) and bool((hi2 >= hi).all())
    fn = activation(act)
    for n in range(f):
        lo_n, u = float(lo[n]), float(hi[n])
        w = u - lo_n
        ai, ci = float(a.float()[n]), float(c.float()[n])
        inside = torch.linspace(lo_n, u, 20001, dtype=torch.float64)
        tau = tolerance * float((fn(inside) - ai * inside - ci).abs().max())
        assert float(
            inside_misfit(act, lo[n : n + 1], hi[n : n + 1], a.float()[n : n + 1], c.float()[n : n + 1])[0]
        ) == (pytest.approx(tau / tolerance, rel=1e-3))
        step = w * 1e-4
        for edge, sign, got in ((u, 1.0, float(hi2[n])), (lo_n, -1.0, float(lo2[n]))):
            z = edge + sign * torch.arange(1, int(BAND_REACH / 1e-4) + 1, dtype=torch.float64) * step
            bad = ((fn(z) - ai * z - ci).abs() > tau).nonzero()
            want = (
                float(z[int(bad[0]) - 1])
                if bad.numel() and int(bad[0]) > 0
                else (edge if bad.numel() else edge + sign * BAND_REACH * w)
            )
            # within the reference grid's step (and float32 storage)
            assert got == pytest.approx(want, abs=2 * step + 1e-6 * (1 + abs(want))), (act, n, edge, sign)


def test_band_is_the_range_for_exact_pieces_infinite_ranges_and_zero_tolerance() -> None:
    from tardis.core.band import widen_to_band

    lo = torch.tensor([float("-inf"), 0.0, -1.0])
    hi = torch.tensor([0.0, float("inf"), 2.0])
    a, c = torch.tensor([0.0, 1.0, 1.0]), torch.zeros(3)
    for act, tol, n in (("relu", 2.0, 2), ("identity", 2.0, 2), ("gelu", 0.0, 3)):
        lo2, hi2 = widen_to_band(act, lo[:n], hi[:n], a[:n], c[:n], tol)
        assert torch.equal(lo2, lo[:n]) and torch.equal(hi2, hi[:n]), act
    # ReLU on its positive piece with the exact line: no misfit inside, so no band beyond the range
    lo2, hi2 = widen_to_band("relu", torch.tensor([0.0]), torch.tensor([3.0]), torch.tensor([1.0]), torch.zeros(1), 4.0)
    assert (float(lo2), float(hi2)) == (0.0, 3.0)
