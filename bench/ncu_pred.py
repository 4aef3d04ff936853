"""Launches for a hardware-counter profile of decode kernel 1 (one Falcon-7B layer, int2, batch 1).

Launch order (for `ncu -k regex:_stacked_plane_kernel --launch-skip 1 --launch-count 5`): the
predictor programs twice with the v4 fp32-dequant configuration (register prefetch), then with Triton's
cp.async pipeline (PS 4), then PS 4 with int8 x and dp4a (I8, after its x-rounding kernel, which the regex
leaves out), then the Wf programs alone, plain (16 rows a program) and pipelined (WS 3, 32 rows): `PROFILED`
below.

    cd python-worker && ncu --clock-control none -k regex:_stacked_plane_kernel --launch-skip 1 \\
        --launch-count 5 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \\
        --section SchedulerStats --section ComputeWorkloadAnalysis --section Occupancy python ../bench/ncu_pred.py

`updown` as the argument: kernel 1 once (it writes the list of flagged neurons), then the default up
and down kernels at batch 1 (the small ones while blocks.SMALL_UPDOWN_BATCH ≥ 1, else v1's) and the fused
up/down kernel on that list (5% outliers) — for `ncu -k "regex:_up_(small_)?kernel|_down_(small_)?kernel|_updown_kernel"
--launch-count 3 ... python ../bench/ncu_pred.py updown`.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python-worker"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ffn_bench import DT, SHAPES, launches, make_layer, set_thresholds

V4 = {"PF2": True, "PRED_FIRST": True, "I8": False, "H2": False, "PS": 0, "WS": 0, "BMF": 16}
# (name, launch overrides, part) in launch order; the first is a warm-up launch that --launch-skip 1 skips
PROFILED = (
    ("pred v4 (warm-up)", V4, "pred"),
    ("pred v4", V4, "pred"),
    ("pred PS4 (cp.async stages)", V4 | {"PS": 4}, "pred"),
    ("pred PS4 I8", V4 | {"PS": 4, "I8": True}, "pred"),
    ("wf", V4, "wf"),
    ("wf WS3, 32 rows (v9's batch-1 Wf part)", V4 | {"WS": 3, "BMF": 32}, "wf"),
)


def main() -> None:
    """Build the layer and launch kernel 1's parts in the documented order."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    d, f = SHAPES["falcon7b"]
    lay = make_layer(d, f, 2, 128, gen)
    set_thresholds(lay, 0.05, gen)
    x = torch.randn(1, d, device="cuda", generator=gen).to(DT)
    (lc,) = launches([lay], [x], "plane")
    if sys.argv[1:] == ["updown"]:
        lay["ws"].zero_()
        lc.stacked()
        count = lay["ws"][:1].clone()
        lc.up()
        lc.down()  # resets the list count
        lay["ws"][:1].copy_(count)
        lc.updown()
        torch.cuda.synchronize()
        print(f"launched: kernel 1, up, down, fused up/down over {int(count)} listed neurons")
        return
    for _, cfg, part in PROFILED:
        lay["ws"].zero_()
        lc.plane_cfg |= cfg
        lc.stacked(part)
    torch.cuda.synchronize()
    print("launched: " + ", ".join(name for name, _, _ in PROFILED))


if __name__ == "__main__":
    main()
