"""The FFN layer bench's pure parts (bench/ffn_bench.py imports the Triton kernels: run with Triton installed)."""

from __future__ import annotations

import random

import pytest
import torch
from bench_scripts import load

pytest.importorskip("triton")


def _records(layers: int, replays: int, seed: int) -> tuple[list[tuple[float, float, str]], list[list[float]]]:
    # kernel records of `replays` replays of `layers` layers, each layer xq → k1 → up (starts early, PDL) → down,
    # with jittered durations; returns them shuffled and each layer's true (start, end) offsets
    rng = random.Random(seed)
    recs, truth = [], []
    t = 100.0
    for _ in range(replays):
        for _ in range(layers):
            xq = (0.0, 1.5 + rng.random() * 0.2)
            k1 = (1.0, 27.0 + rng.random())
            up = (3.0 + rng.random(), k1[1] + 6.0 + rng.random())
            down = (k1[1] + 0.5, up[1] + 7.0 + rng.random())
            names = ("_xq_kernel", "_stacked_plane_kernel", "_up", "_down")
            for (a, b), name in zip((xq, k1, up, down), names, strict=True):
                recs.append((t + a, t + b, name))
            truth.append([xq[0], xq[1], k1[0], k1[1], up[0], up[1], down[0], down[1]])
            t += down[1] + 1.25
        t += 50.0  # between replays
    rng.shuffle(recs)
    return recs, truth


def test_timeline_from_kernel_records_gives_each_kernels_median_start_and_end() -> None:
    fb = load("ffn_bench")
    recs, truth = _records(layers=8, replays=5, seed=3)
    tl = fb.timeline_from_kernels(recs, 8)
    assert tl["layers"] == 40
    assert [k["name"] for k in tl["kernels"]] == ["_xq_kernel", "_stacked_plane_kernel", "_up", "_down"]
    for j, k in enumerate(tl["kernels"]):
        for col, key in ((2 * j, "start_us"), (2 * j + 1, "end_us")):
            vals = sorted(row[col] for row in truth)
            assert k[key] == pytest.approx(vals[len(vals) // 2], abs=1e-9)
    # the period: layer start to the next one's within a replay (35 of the 40 layers have a next one)
    gaps = sorted(row[7] + 1.25 for i, row in enumerate(truth) if (i + 1) % 8)
    assert tl["period_us"] == pytest.approx(gaps[len(gaps) // 2], abs=1e-9)


def test_timeline_rejects_records_that_are_not_one_sequence_a_layer() -> None:
    fb = load("ffn_bench")
    recs, _ = _records(layers=4, replays=2, seed=5)
    with pytest.raises(ValueError, match="do not split into layers"):
        fb.timeline_from_kernels(recs[:-1], 4)  # a kernel record missing
    # layer 1's up kernel (record 6) under another name
    renamed = [(a, b, "_other" if i == 6 else n) for i, (a, b, n) in enumerate(sorted(recs))]
    with pytest.raises(ValueError, match="not one sequence a layer"):
        fb.timeline_from_kernels(renamed, 4)
    with pytest.raises(ValueError, match="do not split"):
        fb.timeline_from_kernels([], 4)


def test_pdl_ab_chooses_the_fastest_correct_variant_and_leaves_out_a_failing_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the A/B's choice logic with the GPU parts stubbed: each variant's time is a function of decode's settings
    # while it runs; LIST_AHEAD's variants raise (as a launch that does not compile would); ONE_CLOSE is the
    # fastest but wrong (its check's error above 1e-2); decode's settings are restored afterwards
    fb = load("ffn_bench")
    from tardis.kernels import decode

    def now() -> dict:
        return decode.launch_settings()

    def fake_time(_fns: list) -> float:
        st = now()
        if st["list_ahead"]:
            raise RuntimeError("no such launch")
        t = 50.0 - 4 * st["pdl_updown"] - 2 * st["down_early"] - 1 * st["xq_pdl"] - 0.5 * st["up_in_k1"]
        return t - 10 * st["one_close"]

    class Launch:
        run = staticmethod(lambda: None)
        ws = torch.zeros(1)

    monkeypatch.setattr(fb, "launches", lambda layers, xs, kset: [Launch()])
    monkeypatch.setattr(fb, "graph_time", fake_time)
    monkeypatch.setattr(fb, "check", lambda layer, n, gen: {"rel_err": 0.5 if now()["one_close"] else 1e-3})
    monkeypatch.setitem(fb.PLANE_LAUNCH, 1, fb.PLANE_LAUNCH[1] | {"I8": True})
    monkeypatch.setattr(decode, "SMALL_UPDOWN_BATCH", 1)
    before = decode.launch_settings()
    out = fb.pdl_ab([{"ws": torch.zeros(1)}], [torch.zeros(1)], 1, None, spin=False)
    assert decode.launch_settings() == before
    assert set(out["failed"]) == {"early_xq_ahead", "early_xq_ahead_close"}
    assert out["best"] == "early_xq_k1z" and out["settings"]["up_in_k1"] and out["settings"]["xq_pdl"]
    assert out["off_us"] == 50.0 and out["early_xq_us"] == 43.0 and out["early_xq_close_rel_err"] == 0.5


def test_interleaved_ab_rotates_the_replays_and_pairs_each_round_against_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the A/B's bookkeeping with the GPU parts stubbed: three launches at two rates; a replay's time is its launch's
    # own time plus a drift that grows with every replay (clocks ramping), which the rotation spreads over all three;
    # "b" is 1 µs faster than "a" except in every third round, "c" 2 µs slower
    fb = load("ffn_bench")
    order: list[tuple[float, str]] = []
    rounds = 6

    state = {"rate": 0.0, "variant": ""}  # the launch in force, as rate_variants sets it

    def fake_variants(d, f, args, gen, variants):
        for rate in args.rates:
            for v in variants:
                state["rate"], state["variant"] = rate, v
                yield [{"ws": torch.zeros(1)}], [torch.zeros(1)], rate, v

    class Launch:
        run = staticmethod(lambda: None)

    def fake_replay(g: tuple[float, str], n: int, reps: int = 30) -> float:
        rate, v = g
        k = sum(1 for r, _ in order if r == rate)
        order.append(g)
        own = {"a": 40.0, "b": 39.0 if (k // 3) % 3 else 41.5, "c": 42.0}[v]
        return own + 0.01 * k

    def fake_check(layer, n, gen):
        return {"rel_err": {"a": 1e-3, "b": 2e-3, "c": 3e-3}[state["variant"]]}

    monkeypatch.setattr(fb, "rate_variants", fake_variants)
    monkeypatch.setattr(fb, "launches", lambda layers, xs, kset: [Launch()] * 8)
    monkeypatch.setattr(fb, "capture", lambda fns: (state["rate"], state["variant"]))
    monkeypatch.setattr(fb, "replay_time", fake_replay)
    monkeypatch.setattr(fb, "check", fake_check)
    args = type("A", (), {"rates": [0.05, 0.1], "ab": ["a", "b", "c"], "ab_rounds": rounds})()
    out = fb.interleaved_ab("falcon7b", 8, 16, args, None)
    assert [r["rate"] for r in out] == [0.05, 0.1] and all(r["rounds"] == rounds for r in out)
    # each round starts one launch later: a b c, b c a, c a b, a b c, ...
    assert [v for r, v in order if r == 0.05][:9] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    v = out[0]["variants"]
    assert v["a"]["diff_us"] == 0.0 and v["a"]["rounds_faster"] == 0 and v["a"]["rel_err"] == 1e-3
    # "b" was faster in the rounds whose replay of it came in a k with (k // 3) % 3 != 0
    assert v["b"]["rounds_faster"] == 4 and v["b"]["diff_us"] == pytest.approx(-1.0, abs=0.05)
    assert v["c"]["rounds_faster"] == 0 and v["c"]["diff_us"] == pytest.approx(2.0, abs=0.05)
    assert v["c"]["us"] == pytest.approx(42.0, abs=0.2) and v["c"]["min_us"] < v["c"]["us"]


def test_trace_phases_reads_a_layers_stamps_from_kernel_1s_end() -> None:
    # a synthetic trace (ns; clock64 at 2 cycles a ns from another origin): kernel 1 ends at 10 000 (predictor
    # programs by 8 000), the up programs' waits end from 10 700, the last item stores at 15 000; three down items
    # wait until 16 000..16 400, take 600 ns to their corrections and 900 ns to their close (the casting one 1 500)
    fb = load("ffn_bench")
    tr = torch.zeros(3, 64, 16, dtype=torch.int64)
    base = 1_000_000
    for p, (end, pred) in enumerate([(8_000, 1), (7_500, 1), (9_000, 0), (10_000, 0)]):
        tr[0, p, 0] = base + end
        tr[0, p, 6] = pred
    for p in range(10):  # 4 item programs (items 0..3), 6 without
        start, wait = 2_000 + p, 10_700 + 10 * p
        end = 12_000 + 1_000 * p if p < 4 else wait
        tr[1, p, :3] = torch.tensor([start, wait, end]) + base
        tr[1, p, 6] = 4
    for p, (wait, close) in enumerate([(16_000, 900), (16_200, 900), (16_400, 1_500)]):
        g = torch.tensor([11_000, wait, wait + 600, wait + 600 + close]) + base
        tr[2, p, :4] = g
        tr[2, p, 8:12] = 2 * g + 777
        tr[2, p, 6] = int(close == 1_500)
        tr[2, p, 7] = p
    tr[2, 10, 0] = base + 11_000  # a program without items: a start only
    ph = fb.trace_phases(tr)
    assert ph["k1_pred_end_us"] == pytest.approx(-2.0) and ph["k1_wf_end_us"] == pytest.approx(0.0)
    assert ph["up_first_wait_us"] == pytest.approx(0.7) and ph["up_items"] == 4
    assert ph["up_last_end_us"] == pytest.approx(5.0)
    assert ph["down_items"] == 3 and ph["down_first_wait_us"] == pytest.approx(6.0)
    assert ph["down_first_start_us"] == pytest.approx(1.0) and ph["down_median_start_us"] == pytest.approx(1.0)
    assert ph["down_median_wait_us"] == pytest.approx(6.2)
    assert ph["down_corr_us"] == pytest.approx(0.6) and ph["down_close_us"] == pytest.approx(0.9)
    assert ph["down_cast_close_us"] == pytest.approx(1.5)
    assert ph["clock_ghz"] == pytest.approx(2.0)
    assert ph["down_corr_cyc_us"] == pytest.approx(0.6) and ph["down_close_cyc_us"] == pytest.approx(0.9)
    assert ph["down_last_close_us"] == pytest.approx(8.5) and ph["tail_us"] == pytest.approx(3.5)
    assert ph["timer_step_ns"] == 1.0  # the up programs' starts 2 000..2 009
    with pytest.raises(ValueError, match="no down items"):
        fb.trace_phases(torch.cat([tr[:2], torch.zeros(1, 64, 16, dtype=torch.int64)]))
    with pytest.raises(ValueError, match="no kernel-1 stamps"):
        fb.trace_phases(torch.zeros(3, 8, 16, dtype=torch.int64))
