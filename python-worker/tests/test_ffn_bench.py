"""The FFN layer bench's pure parts (bench/ffn_bench.py imports the Triton kernels: run with Triton installed)."""

from __future__ import annotations

import random

import pytest
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
