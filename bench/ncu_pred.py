"""Launches for a hardware-counter profile of decode kernel 1 (one Falcon-7B layer, int2, batch 1).

Launch order (for `ncu -k regex:_stacked_plane_kernel --launch-skip 1 --launch-count 4`): the
predictor programs twice with the committed fp32-dequant configuration (v4), twice with int8 x and
dp4a (I8, after its x-rounding kernel, which the regex leaves out), then the Wf programs alone.

    cd python-worker && ncu --clock-control none -k regex:_stacked_plane_kernel --launch-skip 1 \\
        --launch-count 4 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \\
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
    v4 = {"PF2": True, "PRED_FIRST": True, "I8": False, "H2": False}
    for cfg in (v4, v4, v4 | {"I8": True}, v4 | {"I8": True}):
        lay["ws"].zero_()
        lc.plane_cfg |= cfg
        lc.stacked("pred")
    lc.plane_cfg |= v4
    lc.stacked("wf")
    torch.cuda.synchronize()
    print("launched: pred x2 (v4), pred x2 (I8), wf")


if __name__ == "__main__":
    main()
