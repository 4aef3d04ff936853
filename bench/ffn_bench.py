"""FFN decode benchmark on one GPU: checks TARDIS against a float64 reference, then times it.

Dense baseline as vLLM runs it (cuBLAS bf16 `W2·gelu(W1·x + b1) + b2`), TARDIS through
`tardis::ffn_decode`, each over ≥ 8 distinct layers in one CUDA graph (so no layer's weights stay in
L2). Thresholds are set per neuron from quantiles of ẑ on random x so the predictor flags the wanted
fraction of (token, neuron) pairs; tokens are independent, so the union over a batch is the
pessimistic 1 − (1 − p)^B. Besides the fixed rates (--rates), `--rate-from` adds the fallback rate a
calibration measured (an e2e_hf.py JSON or a variant's manifest.json). Prints a table last; writes
JSON to $OUT (or --out).

    cd python-worker && python ../bench/ffn_bench.py --shapes falcon7b --out /tmp/ffn.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python-worker"))

from tardis.kernels import decode
from tardis.kernels.blocks import (
    PLANE_BASE,
    PLANE_LAUNCH,
    PLANE_SWEEP,
    UPDOWN_LAUNCH_KEYS,
    workspace_size,
    zero_counters,
)
from tardis.kernels.layout import TiledPredictor, predict_i8
from tardis.kernels.op import KernelPack, ffn_decode
from tardis.kernels.policy import fit_policy

SHAPES = {
    "falcon7b": (4544, 18176),
    "bloom7b1": (4096, 16384),
    "falcon40b": (8192, 32768),
}
BATCHES = (1, 2, 4, 8, 16, 32, 64)
RATES = (0.01, 0.05, 0.10, 0.20)
# up/down launch knobs swept by --updown-sweep (blocks.UPDOWN_LAUNCH_KEYS, in that order): programs per SM
# of their persistent grids, listed neurons per up item, d split in about this many chunks, listed neurons per
# down item, output columns per down item (at least blocks.TICKET_BLOCK_COLS: the workspace holds that many
# column tickets), pipeline stages of the small up kernel's K loop (0: none), warps per small down program,
# the small up kernel's step along d (columns) and its warps per program.
# At B = 1 and 5% each program of the default does about one item, a serial chain of memory round trips.
UPDOWN_CONFIGS = (
    (8, 32, 8, 64, 512, 0, 4, 128, 4),  # the default (v7: the fastest of this sweep on an H100)
    (16, 32, 8, 64, 512, 0, 4, 128, 4),
    # v9: 8 warps per small down program (4 spill at 64 x 512), so larger down items fit (H200: slower; the other
    # 8-warp launches and v9's pipelined up loops (UP_STAGES 3) were slower on both cards in every sweep up to v19's
    # and left it: their rows are in those runs' JSON)
    (8, 32, 8, 64, 1024, 0, 8, 128, 4),
    # v16: down items of half the bytes at 4 warps (offline sm_90: 167 registers, no spill; 64 x 512 at 4 warps
    # takes 255 and spills 19 words), and up items of two K steps (d in 18 chunks: v8 on the H200, 6.5 vs 7.4 µs)
    (8, 32, 8, 64, 256, 0, 4, 128, 4),
    (8, 32, 8, 32, 512, 0, 4, 128, 4),
    (8, 32, 18, 64, 512, 0, 4, 128, 4),
    (8, 32, 18, 64, 256, 0, 4, 128, 4),
    # v19: the small up kernel's items in one step of 256 or 512 columns (d in 18 or 9 chunks; 8 warps hold a
    # 32 x 512 fp32 tile): a whole item's W1 rows in flight at once instead of one 8 KB step per round trip
    (8, 32, 18, 64, 512, 0, 4, 256, 4),
    (8, 16, 18, 64, 512, 0, 4, 256, 4),
    (8, 32, 9, 64, 512, 0, 4, 512, 8),
    (8, 16, 9, 64, 512, 0, 4, 512, 4),
    (8, 32, 18, 32, 512, 0, 4, 256, 4),
)


def updown_name(cfg: tuple) -> str:
    """A short name of an up/down launch, e.g. p8_u16x36_d32x256 (_st3: the up loop in 3 pipeline stages; _w8: 8
    warps per small down program; _k512: the small up kernel's step along d, if not 128; _uw8: its warps, if
    not 4)."""
    p, un, us, dn, dc, st, dw, uk, uw = cfg
    name = f"p{p}_u{un}x{us}_d{dn}x{dc}" + (f"_st{st}" if st > 1 else "") + (f"_w{dw}" if dw != 4 else "")
    return name + (f"_k{uk}" if uk != 128 else "") + (f"_uw{uw}" if uw != 4 else "")


def set_updown(cfg: tuple) -> None:
    """Make `cfg` the up/down launch of every DecodeLaunch built from now on (decode's module globals)."""
    for key, value in zip(UPDOWN_LAUNCH_KEYS, cfg, strict=True):
        setattr(decode, key, value)


def plane_launch(over: dict) -> dict:
    """A whole plane launch: blocks.PLANE_BASE with the overrides `over`."""
    return PLANE_BASE | over


def plane_name(over: dict) -> str:
    """A short name of a plane launch configuration, e.g. T1_w4_pf_p2_h2_wpf_s4_r128."""
    c = plane_launch(over)
    name = f"T{c['T']}_w{c['num_warps']}" + "_pf" * c["PRED_FIRST"] + "_x" * c["XPF"] + "_p2" * c["PF2"]
    name += "_p4" * c["PF4"] + "_h2" * c["H2"] + "_wpf" * c["WPF"] + "_i8" * c["I8"]
    name += f"_f{c['BMF']}" if c["BMF"] != PLANE_BASE["BMF"] else ""
    name += (f"_ps{c['PS']}" if c["PS"] > 1 else "") + (f"_ws{c['WS']}" if c["WS"] > 1 else "")
    name += f"_g{c['PG']}" if c["PG"] > 1 else ""
    name += f"_k{c['WK']}" if c["WK"] > 1 else ""
    name += "_xs" if c["I8"] and not c["XV"] else ""
    return name + (f"_s{c['SPLIT']}" if c["SPLIT"] > 1 else "") + (f"_r{c['maxnreg']}" if c["maxnreg"] else "")


DT = torch.bfloat16


def random_predictor(f: int, d: int, bits: int, gs: int, w1: torch.Tensor) -> TiledPredictor:
    """An RTN-like predictor of w1 built on the GPU (codes from the per-group min/max), tiled layout."""
    from tardis.kernels.layout import BLOCK_ROWS, _next_pow2, pack_plane_tiles

    per_word = 32 // bits
    n_groups = -(-d // gs)
    wpg = _next_pow2(-(-gs // per_word))
    f_pad = -(-f // BLOCK_ROWS) * BLOCK_ROWS
    w = torch.zeros(f_pad, n_groups * gs, device=w1.device)
    w[:f, :d] = w1.float()
    g = w.view(f_pad, n_groups, gs)
    lo, hi = g.amin(-1), g.amax(-1)
    qmax = (1 << bits) - 1
    scale = ((hi - lo) / qmax).half().float().clamp_min(1e-8)
    off = lo.half().float()
    codes = torch.clamp(torch.round((g - off[..., None]) / scale[..., None]), 0, qmax).to(torch.int64)
    return TiledPredictor(
        pack_plane_tiles(codes, bits, wpg, BLOCK_ROWS),
        scale.half().T.contiguous(),
        off.half().T.contiguous(),
        bits,
        gs,
        d,
        f,
        BLOCK_ROWS,
    )


def make_layer(d: int, f: int, bits: int, gs: int, gen: torch.Generator) -> dict:
    """Random bf16 layer weights, folded stand-ins and a predictor (all on the GPU)."""
    dev = "cuda"
    w1 = (torch.randn(f, d, device=dev, generator=gen) / d**0.5).to(DT)
    w2t = (torch.randn(f, d, device=dev, generator=gen) / f**0.5).to(DT)
    return {
        "w1": w1,
        "b1": (0.1 * torch.randn(f, device=dev, generator=gen)).to(DT),
        "w2t": w2t,
        "w2": w2t.T.contiguous(),
        "b2": (0.1 * torch.randn(d, device=dev, generator=gen)).to(DT),
        "wf": (torch.randn(d, d, device=dev, generator=gen) / d**0.5).to(DT),
        "bf": (0.1 * torch.randn(d, device=dev, generator=gen)).to(DT),
        "slope": torch.rand(f, device=dev, generator=gen),
        "intercept": 0.05 * torch.randn(f, device=dev, generator=gen),
        "pred": random_predictor(f, d, bits, gs, w1),
        "ws": torch.zeros(workspace_size(d, f), dtype=torch.int32, device=dev),
        "counts": torch.zeros(4, dtype=torch.int64, device=dev),  # the op's [flagged, union, tokens, steps]
    }


def set_thresholds(layer: dict, rate: float, gen: torch.Generator) -> None:
    """lo_in/hi_in from quantiles of ẑ on random x so each (token, neuron) is flagged with prob. rate."""
    d = layer["w1"].shape[1]
    xs = torch.randn(512, d, device="cuda", generator=gen).to(DT).float()
    zhat = xs @ layer["pred"].dequantize(torch.float32).T + layer["b1"].float()
    qs = torch.tensor([rate / 2, 1 - rate / 2], device="cuda")
    lo, hi = torch.quantile(zhat, qs, dim=0)
    layer["lo_in"], layer["hi_in"] = lo.contiguous(), hi.contiguous()


def run_tardis(layer: dict, x: torch.Tensor, fp32: bool = False) -> torch.Tensor:
    """One TARDIS layer through the custom op; fp32: in the float32-output mode (KernelPack.fp32_out: the op's
    float32 sums, and at batch 1 no finish kernel), which leaves the workspace's counters set: zero_counters after."""
    return ffn_decode(
        x, KernelPack(layer["pred"], layer["ws"], fp32_out=fp32), wf=layer["wf"], bf=layer["bf"], b1=layer["b1"],
        lo_in=layer["lo_in"], hi_in=layer["hi_in"], w1=layer["w1"], w2t=layer["w2t"], slope=layer["slope"],
        intercept=layer["intercept"], act="gelu", counts=layer["counts"], fp32_ok=fp32,
    )  # fmt: skip


FP32_BATCHES = (1,)  # the float32 output is timed too where it drops the finish kernel (the int8 x kernel's batch)
FP32_CHECK_CALLS = 3  # consecutive calls in the mode on one workspace before the checked one (counters carried over)


def check_fp32(layer: dict, n: int, gen: torch.Generator) -> dict:
    """The float32-output mode's relative error vs float64 on fresh x, on the last of FP32_CHECK_CALLS + 1 calls
    in a row (each must zero the counters the one before left); the counters are zeroed after."""
    x = torch.randn(n, layer["w1"].shape[1], device="cuda", generator=gen).to(DT)
    try:
        for _ in range(FP32_CHECK_CALLS):
            run_tardis(layer, torch.randn_like(x), fp32=True)
        y = run_tardis(layer, x, fp32=True)
    finally:
        zero_counters(layer["ws"])
    y_ref = reference(layer, x)[0]
    err = float((y.double() - y_ref).norm() / y_ref.norm())
    return {"rel_err_fp32": err, "ok_fp32": bool(torch.isfinite(y).all()) and err < 1e-2 and y.dtype == torch.float32}


def run_dense(layer: dict, x: torch.Tensor) -> torch.Tensor:
    """The dense FFN as vLLM runs it: cuBLAS GEMMs and a GELU."""
    return F.linear(F.gelu(F.linear(x, layer["w1"], layer["b1"])), layer["w2"], layer["b2"])


def reference(layer: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple]:
    """float64 TARDIS output, its flags, ẑ (for flags near a threshold) and the output's flag-independent
    parts (`reference_with`); ẑ as the op's launch at this batch computes it (x rounded to int8 per group
    where its plane launch has I8)."""
    d64 = torch.float64
    x64 = x.to(d64)
    n = x.shape[0]
    if n <= decode.PLANE_BATCH and PLANE_LAUNCH[n].get("I8"):
        zhat = predict_i8(x, layer["pred"]) + layer["b1"].to(d64)
    else:
        zhat = x64 @ layer["pred"].dequantize(torch.float64).T + layer["b1"].to(d64)
    flags = (zhat < layer["lo_in"].to(d64)) | (zhat > layer["hi_in"].to(d64))
    z = x64 @ layer["w1"].to(d64).T + layer["b1"].to(d64)
    parts = (
        x64 @ layer["wf"].to(d64).T + layer["bf"].to(d64),  # Wf·x + bf
        F.gelu(z) - layer["slope"].to(d64) * z - layer["intercept"].to(d64),  # every neuron's correction
    )
    return reference_with(layer, parts, flags), flags, zhat, parts


def reference_with(layer: dict, parts: tuple, flags: torch.Tensor) -> torch.Tensor:
    """float64 TARDIS output from `reference`'s parts with the given flags [n, f] (bool)."""
    folded, corr = parts
    return folded + (corr * flags) @ layer["w2t"].to(torch.float64)


def check(layer: dict, n: int, gen: torch.Generator) -> dict:
    """Relative error vs float64 on fresh x through the op. Also, from a direct launch (which returns the
    kernel's flags): the error against float64 with the kernel's own flags (the arithmetic alone), and the
    flags that differ from the reference's, with the largest relative distance of their ẑ from a threshold
    (≈ 1e-7: rounding; larger: a wrong predictor sum)."""
    x = torch.randn(n, layer["w1"].shape[1], device="cuda", generator=gen).to(DT)
    torch.cuda.empty_cache()
    y = run_tardis(layer, x)
    y_ref, flags, zhat, parts = reference(layer, x)
    margin = torch.minimum((zhat - layer["lo_in"].double()).abs(), (zhat - layer["hi_in"].double()).abs())
    rel_margin = margin / zhat.abs().mean()
    near = int((rel_margin < 1e-3).sum())
    err = float((y.double() - y_ref).norm() / y_ref.norm())
    ok = bool(torch.isfinite(y).all()) and err < 1e-2
    y2, kflags = launches([layer], [x], decode.default_kernels(n))[0].run()
    kflags = kflags.bool()
    wrong = kflags != flags
    y_own = reference_with(layer, parts, kflags)
    return {
        "rel_err": err,
        "ok": ok,
        "ref_flags": int(flags.sum()),
        "near_threshold": near,
        "kernel_flags": int(kflags.sum()),
        "flags_differing": int(wrong.sum()),
        "differing_max_rel_margin": float(rel_margin[wrong].max()) if bool(wrong.any()) else 0.0,
        "rel_err_own_flags": float((y2.double() - y_own).norm() / y_own.norm()),
    }


def pdl_ab(layers: list[dict], xs: list[torch.Tensor], n: int, gen: torch.Generator, spin: bool = True) -> dict:
    """The whole layer (the launches in force) timed with the up/down kernels launched without and with
    programmatic dependent launch; with PDL plus kernel 1 launched behind the int8 x kernel (`XQ_PDL`: its Wf
    programs start before the x words are done; where this batch's launch runs I8); and with PDL plus the early
    small down kernel (`DOWN_EARLY`: it reads kernel 1's list and its W2ᵀ rows before waiting for the up kernel;
    where this batch runs the small up/down kernels), alone and with `XQ_PDL`; and the last of those with the up kernel
    started by kernel 1's predictor programs (`UP_SPIN`, with SPIN_GRIDS programs per SM in the up grid; not with
    spin=False); and, where this batch runs the small up/down kernels, the last of those with kernel 1's predictor
    programs computing their union rows' z instead of an up kernel (`UP_IN_K1`, key suffix `_k1z`), with the up
    kernel's list entries loaded beside the count (`LIST_AHEAD`, `_ahead`), with one closing atomic per down item
    (`ONE_CLOSE`, `_close`), with both (`_ahead_close`), and with the up kernel prefetching the W2ᵀ rows into L2
    (`UP_PF_W2`, `_pfw2`), and with the down items' casts left to a finish kernel (`DOWN_FINISH`, `_finish`; also
    with the smaller down items of FINISH_DOWN_TILES, `_finish_d32x256`: the up/down launch is part of `settings`).
    Each PDL variant is also checked through the op; `best`
    is the fastest correct one, and `settings` its decode.launch_settings() keys; a variant other than "off" / "on"
    that raises is recorded in `failed` and left out. decode's flags are left as they were."""
    before = decode.launch_settings()
    us, errs = {}, {}
    i8 = bool(PLANE_LAUNCH[min(n, decode.SMALL_MAX_BATCH)].get("I8"))  # the launch these batches run now
    small = n <= decode.SMALL_UPDOWN_BATCH
    off = PDL_OFF | {"up_spin_programs_per_sm": before["up_spin_programs_per_sm"]}
    on = off | {"pdl_updown": True}
    variants = {"off": off, "on": on}
    variants |= {"xq": on | {"xq_pdl": True}} if i8 else {}
    variants |= {"early": on | {"down_early": True}} if small else {}
    variants |= {"early_xq": on | {"down_early": True, "xq_pdl": True}} if small and i8 else {}
    base = "early_xq" if i8 else "early"
    if small:
        b = variants[base]
        if spin:
            variants |= {f"{base}_spin{g}": b | {"up_spin": True, "up_spin_programs_per_sm": g} for g in SPIN_GRIDS}
        variants[f"{base}_k1z"] = b | {"up_in_k1": True}  # kernel 1 does the up kernel's work
        variants[f"{base}_ahead"] = b | {"list_ahead": True}
        variants[f"{base}_close"] = b | {"one_close": True}
        variants[f"{base}_ahead_close"] = b | {"list_ahead": True, "one_close": True}
        variants[f"{base}_pfw2"] = b | {"up_pf_w2": True}  # the up kernel prefetches the down kernel's W2ᵀ rows
        variants[f"{base}_finish"] = b | {"down_finish": True}  # no column tickets: a finish kernel casts y
        for bj, bc in FINISH_DOWN_TILES:  # and smaller down items (fewer registers; their adds cost no round trips)
            tiles = before["updown_launch"] | {"DOWN_BLOCK_NEURONS": bj, "DOWN_BLOCK_COLS": bc}
            variants[f"{base}_finish_d{bj}x{bc}"] = b | {"down_finish": True, "updown_launch": tiles}
    for settings in variants.values():  # each variant sets the whole up/down launch (the ones before it may not)
        settings.setdefault("updown_launch", before["updown_launch"])
    failed: dict[str, str] = {}  # variants that did not compile or run (left out of the choice)
    try:
        for key, settings in variants.items():
            decode.apply_launch_settings(settings)
            try:
                ls = launches(layers, xs, "plane")
                for lc in ls:
                    lc.ws.zero_()
                t = graph_time([lc.run for lc in ls])
                if settings["pdl_updown"]:
                    layers[0]["ws"].zero_()
                    errs[key] = check(layers[0], n, gen)["rel_err"]
                us[key] = t
            except Exception as e:  # one broken option must not take the others' A/B with it
                if key in ("off", "on"):
                    raise
                failed[key] = f"{type(e).__name__}: {str(e)[:300]}"
                print(f"  PDL B={n} {key}: failed: {failed[key]}", flush=True)
    finally:
        decode.apply_launch_settings(before)
    best = min((k for k in us if k == "off" or errs[k] < 1e-2), key=lambda k: us[k])
    out = {"off_us": us["off"], "on_us": us["on"], "rel_err": errs["on"], "best": best, "better": best != "off"}
    out["failed"] = failed
    for key in us.keys() - {"off", "on"}:
        out |= {f"{key}_us": us[key], f"{key}_rel_err": errs[key]}
    chosen = variants[best]
    out["settings"] = chosen  # the chosen flags (earlier runs' JSON also copied them into keys of their own)
    return out


SPIN_GRIDS = (1, 2, 4)  # up-grid programs per SM timed with UP_SPIN by pdl_ab
# (DOWN_BLOCK_NEURONS, DOWN_BLOCK_COLS) timed with DOWN_FINISH by pdl_ab. Offline sm_90 compile at 4 warps: 64 x 512
# 255 registers and 21 spilled words (2 programs a SM), 32 x 512 165, 32 x 256 96 (5 a SM); v20's trace at 10% (H100):
# 270 down items of 64 x 512 start in two waves (the median item's wait ends 3.8 µs after the first's)
FINISH_DOWN_TILES = ((32, 512), (32, 256))
# the launch settings (decode.launch_settings() keys) pdl_ab varies, all off: its "off" variant
PDL_OFF = dict.fromkeys(
    ("pdl_updown", "down_early", "xq_pdl", "up_spin", "up_in_k1", "list_ahead", "one_close", "up_pf_w2", "down_finish"),
    False,
)


# (WF_UP_FRAC, WF_DOWN_FRAC) pairs timed by wf_moves_ab: folded rows computed in the up / down kernels' grids
WF_MOVES = ((0.0, 0.0), (0.1, 0.0), (0.2, 0.0), (0.0, 0.12), (0.0, 0.23), (0.0, 0.34), (0.1, 0.23), (0.05, 0.12))


def wf_moves_ab(layers: list[dict], xs: list[torch.Tensor], n: int, gen: torch.Generator) -> dict:
    """The whole layer (the launches in force) with part of the folded rows run by the up and the down kernels'
    grids instead of kernel 1 (WF_MOVES; where this batch runs the small up/down kernels), each checked through the
    op; `best` is the fastest correct pair. decode's settings are left as they were."""
    before = (decode.WF_UP_FRAC, decode.WF_DOWN_FRAC)
    us, errs = {}, {}
    try:
        for up, down in WF_MOVES:
            decode.WF_UP_FRAC, decode.WF_DOWN_FRAC = up, down
            key = f"u{up:g}_d{down:g}"
            ls = launches(layers, xs, "plane")
            for lc in ls:
                lc.ws.zero_()
            us[key] = graph_time([lc.run for lc in ls])
            layers[0]["ws"].zero_()
            errs[key] = check(layers[0], n, gen)["rel_err"]
    finally:
        decode.WF_UP_FRAC, decode.WF_DOWN_FRAC = before
    best = min((k for k in us if errs[k] < 1e-2), key=lambda k: us[k])
    pair = dict(zip(us, WF_MOVES, strict=True))[best]
    return {"us": us, "rel_err": errs, "best": best, "best_up": pair[0], "best_down": pair[1]}


WF_MOVES_RATE2 = 0.10  # the second outlier rate the folded-row moves are timed at (issue 4's two targets)


def wf_moves_both(at_rate: dict, at_rate2: dict) -> dict:
    """The pair of WF_MOVES with the least summed time over two wf_moves_ab results (only pairs correct in both)."""
    ok = [k for k in at_rate["us"] if at_rate["rel_err"][k] < 1e-2 and at_rate2["rel_err"][k] < 1e-2]
    best = min(ok, key=lambda k: at_rate["us"][k] + at_rate2["us"][k])
    pair = dict(zip(at_rate["us"], WF_MOVES, strict=True))[best]
    return {"best": best, "best_up": pair[0], "best_down": pair[1]}


def capture(fns: list) -> torch.cuda.CUDAGraph:
    """A CUDA graph that calls every fn once (each run twice on a side stream first), replayed three times."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            for fn in fns:
                fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for fn in fns:
            fn()
    for _ in range(3):
        g.replay()
    return g


def graph_time(fns: list, reps: int = 30) -> float:
    """Median µs of one replay of a CUDA graph that calls every fn once, divided by len(fns)."""
    return replay_time(capture(fns), len(fns), reps)


def upper_median(v: list[float]) -> float:
    """The middle value of v (of an even count, the upper of the two middle ones)."""
    return sorted(v)[len(v) // 2]


def replay_time(g: torch.cuda.CUDAGraph, n: int, reps: int = 30) -> float:
    """Median µs of one replay of the captured graph g, divided by n (the calls it makes)."""
    times = []
    for _ in range(reps):
        a, b = (
            torch.cuda.Event(enable_timing=True),
            torch.cuda.Event(enable_timing=True),
        )
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000 / n)
    return upper_median(times)


def timeline_from_kernels(kernels: list[tuple[float, float, str]], n_layers: int) -> dict:
    """Per-layer kernel timeline from kernel records (start µs, end µs, name) of graph replays that each run
    `n_layers` layers with the same kernels: each kernel's median start and end, in µs from its layer's first
    kernel start, in launch order; "period": the median from one layer's first start to the next's (a replay's
    last layer has none); "layers": how many layers were read. A ValueError if the records do not split into
    layers of one kernel sequence (a kernel missing or out of order)."""
    ks = sorted(kernels)
    first = [i for i, k in enumerate(ks) if k[2] == ks[0][2]]  # each layer starts with the same kernel
    per = first[1] if len(first) > 1 else len(ks)  # kernels a layer
    if not ks or len(ks) % per or (len(ks) // per) % n_layers:
        raise ValueError(f"{len(ks)} kernel records do not split into layers of {n_layers} a replay")
    names = [k[2] for k in ks[:per]]
    if any(k[2] != names[i % per] for i, k in enumerate(ks)):
        bad = next(i for i, k in enumerate(ks) if k[2] != names[i % per])
        raise ValueError(f"the kernel records are not one sequence a layer: {names}, then {ks[bad][2]} at {bad}")
    layers = [ks[i : i + per] for i in range(0, len(ks), per)]
    starts: list[list[float]] = [[] for _ in range(per)]
    ends: list[list[float]] = [[] for _ in range(per)]
    periods = []
    for i, lay in enumerate(layers):
        t0 = lay[0][0]
        for j, (a, b, _) in enumerate(lay):
            starts[j].append(a - t0)
            ends[j].append(b - t0)
        if (i + 1) % n_layers:  # not the replay's last layer
            periods.append(layers[i + 1][0][0] - t0)

    return {
        "kernels": [
            {"name": names[j], "start_us": upper_median(starts[j]), "end_us": upper_median(ends[j])} for j in range(per)
        ],
        "period_us": upper_median(periods) if periods else None,
        "layers": len(layers),
    }


def layer_timeline(g: torch.cuda.CUDAGraph, n_layers: int, replays: int = 20) -> dict:
    """timeline_from_kernels of the captured graph g of n_layers layers, from the profiler's kernel records of
    `replays` replays (the profiler's own cost shows in "period_us" against replay_time)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            g.replay()
        torch.cuda.synchronize()
    recs = [
        (float(e.time_range.start), float(e.time_range.end), e.name)
        for e in prof.events()
        if e.device_type == DeviceType.CUDA
    ]
    return timeline_from_kernels(recs, n_layers)


def print_timeline(title: str, tl: dict) -> None:
    """One line: each kernel's median start and end in µs from its layer's first kernel start, then the period."""
    parts = " | ".join(f"{k['name'].strip('_')} {k['start_us']:.1f}-{k['end_us']:.1f}" for k in tl["kernels"])
    period = f"{tl['period_us']:.1f}" if tl["period_us"] is not None else "-"
    print(f"  {title}: {parts} | next layer {period} (us from the layer's first kernel start)", flush=True)


# launches timed by --timeline without --kernel-times (each over the committed launch): name -> settings
TIMELINE_VARIANTS: dict[str, dict] = {
    "committed": {},
    "pdl_off": PDL_OFF,
    # v19: the small up kernel's items in one 512-column step (faster alone, not in the e2e model's layers)
    "up_one_step": {"updown_launch": {"UP_BLOCK_NEURONS": 16, "UP_SPLITS": 9, "UP_SMALL_BLOCK_K": 512}},
    # v19: the up kernel's items prefetch their W2ᵀ rows into L2 for the down kernel (v20, H100: slower)
    "up_pf_w2": {"up_pf_w2": True},
    # v20: no column tickets in the down kernel, a finish kernel casts y32 into y (committed since v21; "tickets": the
    # down kernel's column tickets and casts as before), also with smaller down items
    "tickets": {"down_finish": False},
    "down_finish_d32x256": {"down_finish": True, "updown_launch": {"DOWN_BLOCK_NEURONS": 32, "DOWN_BLOCK_COLS": 256}},
    # v21 (--ab): the finish kernel with a third of the folded rows in the down grid (the v21 H100 sweep's choice), and
    # with the one-step up items
    "down_finish_wf34": {"down_finish": True, "wf_down_frac": 0.34},
    "down_finish_up_one_step": {
        "down_finish": True,
        "updown_launch": {"UP_BLOCK_NEURONS": 16, "UP_SPLITS": 9, "UP_SMALL_BLOCK_K": 512},
    },
}


def rate_variants(
    d: int, f: int, args: argparse.Namespace, gen: torch.Generator, variants: Iterable[str]
) -> Iterator[tuple[list[dict], list[torch.Tensor], float, str]]:  # fmt: skip
    """args.layers random d x f layers and batch-1 inputs; yields (layers, xs, rate, variant) for each rate of
    args.rates and each TIMELINE_VARIANTS name in `variants`, with that launch applied and the layers' workspaces
    zeroed; the launch in force before is back after each."""
    layers = [make_layer(d, f, args.bits, args.group_size, gen) for _ in range(args.layers)]
    xs = [torch.randn(1, d, device="cuda", generator=gen).to(DT) for _ in layers]
    committed = decode.launch_settings()
    for rate in args.rates:
        for lay in layers:
            set_thresholds(lay, rate, gen)
        for variant in variants:
            decode.apply_launch_settings(TIMELINE_VARIANTS[variant])
            try:
                for lay in layers:
                    lay["ws"].zero_()
                yield layers, xs, rate, variant
            finally:
                decode.apply_launch_settings(committed)


def timelines(name: str, d: int, f: int, args: argparse.Namespace, gen: torch.Generator) -> list[dict]:
    """layer_timeline of batch 1 at each of args.rates for each TIMELINE_VARIANTS launch, with its replay_time."""
    out = []
    for layers, xs, rate, variant in rate_variants(d, f, args, gen, TIMELINE_VARIANTS):
        try:
            fns = [lc.run for lc in launches(layers, xs, "plane")]
            row: dict[str, Any] = {"shape": name, "batch": 1, "rate": rate, "variant": variant}
            g = capture(fns)
            row["all_us"] = replay_time(g, len(fns))
            row["timeline"] = layer_timeline(g, len(fns))
            layers[0]["ws"].zero_()  # the op's check needs a zero workspace
            row["rel_err"] = check(layers[0], 1, gen)["rel_err"]
            print_timeline(f"{name} B=1 {rate:.0%} {variant} ({row['all_us']:.1f} us a layer)", row["timeline"])
        except (RuntimeError, ValueError) as e:
            row = {"shape": name, "batch": 1, "rate": rate, "variant": variant, "error": str(e)[:300]}
            print(f"  {name} B=1 {rate:.0%} {variant}: {e}", flush=True)
        out.append(row)
    return out


def interleaved_ab(name: str, d: int, f: int, args: argparse.Namespace, gen: torch.Generator) -> list[dict]:
    """Batch 1 at each of args.rates: one CUDA graph per TIMELINE_VARIANTS launch of args.ab over the same layers,
    replayed in turn (each round starts one variant later) args.ab_rounds times, so drift and the order of replays
    fall on every variant alike. Per variant: the median over rounds of each round's median µs a layer, and against
    the first variant the median paired difference and the rounds in which it was faster; its rel_err (check)."""
    out = []
    graphs: list[tuple[str, torch.cuda.CUDAGraph, list]] = []  # the launches stay alive with their graph
    errs: dict[str, float] = {}
    for layers, xs, rate, variant in rate_variants(d, f, args, gen, args.ab):
        errs[variant] = check(layers[0], 1, gen)["rel_err"]
        for lay in layers:
            lay["ws"].zero_()  # the check's op left its list counts at zero, the graph's warm-up needs them so too
        lcs = launches(layers, xs, "plane")
        graphs.append((variant, capture([lc.run for lc in lcs]), lcs))
        if len(graphs) < len(args.ab):
            continue
        per: dict[str, list[float]] = {v: [] for v, _, _ in graphs}
        for r in range(args.ab_rounds):
            k = r % len(graphs)
            for v, g, lcs in graphs[k:] + graphs[:k]:
                per[v].append(replay_time(g, len(lcs), reps=10))
        first = graphs[0][0]
        row: dict[str, Any] = {"shape": name, "batch": 1, "rate": rate, "rounds": args.ab_rounds, "variants": {}}
        for v, ts in per.items():
            diffs = [t - t0 for t, t0 in zip(ts, per[first], strict=True)]
            row["variants"][v] = {
                "us": upper_median(ts), "min_us": min(ts), "rel_err": errs[v],
                "diff_us": upper_median(diffs), "rounds_faster": sum(x < 0 for x in diffs),
            }  # fmt: skip
        shown = " | ".join(
            f"{v} {x['us']:.1f} ({x['diff_us']:+.1f}, faster in {x['rounds_faster']}/{args.ab_rounds}, "
            f"err {x['rel_err']:.1e})" for v, x in row["variants"].items()
        )  # fmt: skip
        print(f"  ab {name} B=1 {rate:.0%} (us a layer; paired median vs {first}): {shown}", flush=True)
        out.append(row)
        graphs = []
    return out


def trace_phases(tr: torch.Tensor) -> dict:
    """One layer's phases from a DecodeLaunch trace (int64 [3, rows, 16], see DecodeLaunch.set_trace), in µs from
    kernel 1's last program end (globaltimer): when kernel 1's predictor and folded-row programs ended, when the
    first up program's wait ended (PDL's release after kernel 1), when the last up item stored its partials, when
    the down items started and when their waits ended (first, median), their corrections and closes (median
    durations, from globaltimer and, as cycles, from clock64 over the clock rate both give), the last close, and
    tail_us: the last close after the last up item. timer_step_ns: the smallest step between two globaltimer stamps
    (its resolution, if stamps are dense enough). A ValueError for a trace without kernel-1 stamps or down items."""
    t = tr.to(torch.float64)
    k1, up, dn = t[0], t[1], t[2]
    k1_rows = k1[:, 0] > 0
    if not bool(k1_rows.any()):
        raise ValueError("the trace has no kernel-1 stamps")
    t0 = float(k1[k1_rows, 0].max())
    pred = k1_rows & (k1[:, 6] == 1)
    wf = k1_rows & (k1[:, 6] == 0)
    up_rows = up[:, 0] > 0
    n_up = int(up[up_rows, 6].max()) if bool(up_rows.any()) else 0
    up_items = up_rows & (torch.arange(len(up), dtype=torch.float64) < n_up)
    items = dn[:, 3] > 0
    if not bool(items.any()):
        raise ValueError("the trace has no down items")

    def us(v: torch.Tensor | float) -> float:
        return float(v) / 1000.0

    def med(v: torch.Tensor) -> float:
        return float(v.median())

    d = dn[items]
    span_ns = d[:, 3] - d[:, 0]
    span_cyc = d[:, 11] - d[:, 8]
    long = span_ns > 2000
    ghz = med(span_cyc[long] / span_ns[long]) if bool(long.any()) else float("nan")
    stamps = torch.cat([k1[k1_rows, 0], up[up_rows, :3].flatten(), d[:, :4].flatten()])
    stamps = stamps[stamps > 0].unique()
    steps = stamps[1:] - stamps[:-1]
    up_end = float(up[up_items, 2].max()) if bool(up_items.any()) else float("nan")
    return {
        "k1_pred_end_us": us(k1[pred, 0].max() - t0) if bool(pred.any()) else None,
        "k1_wf_end_us": us(k1[wf, 0].max() - t0) if bool(wf.any()) else None,
        "up_first_wait_us": us(up[up_rows, 1].min() - t0),
        "up_items": n_up,
        "up_last_end_us": us(up_end - t0),
        "down_items": int(items.sum()),
        "down_first_start_us": us(d[:, 0].min() - t0),
        "down_median_start_us": us(med(d[:, 0]) - t0),
        "down_first_wait_us": us(d[:, 1].min() - t0),
        "down_median_wait_us": us(med(d[:, 1]) - t0),
        "down_corr_us": us(med(d[:, 2] - d[:, 1])),
        "down_close_us": us(med(d[:, 3] - d[:, 2])),
        "down_cast_close_us": us(med(d[d[:, 6] == 1, 3] - d[d[:, 6] == 1, 2])) if bool((d[:, 6] == 1).any()) else None,
        "down_corr_cyc_us": med(d[:, 10] - d[:, 9]) / ghz / 1000.0,
        "down_close_cyc_us": med(d[:, 11] - d[:, 10]) / ghz / 1000.0,
        "down_last_close_us": us(d[:, 3].max() - t0),
        "tail_us": us(d[:, 3].max() - up_end),
        "clock_ghz": ghz,
        "timer_step_ns": float(steps.min()) if len(steps) else None,
    }


TRACE_KEYS = (
    "k1_pred_end_us", "k1_wf_end_us", "up_first_wait_us", "up_last_end_us", "down_first_start_us",
    "down_median_start_us", "down_first_wait_us", "down_median_wait_us", "down_corr_us", "down_close_us",
    "down_cast_close_us", "down_corr_cyc_us", "down_close_cyc_us", "down_last_close_us", "tail_us", "clock_ghz",
    "timer_step_ns", "up_items", "down_items",
)  # fmt: skip


TRACE_VARIANTS = ("committed", "tickets", "down_finish_d32x256")  # the TIMELINE_VARIANTS --tail-trace stamps


def tail_traces(name: str, d: int, f: int, args: argparse.Namespace, gen: torch.Generator) -> list[dict]:
    """Batch 1 at each of args.rates with the committed launch (DOWN_FINISH), with the down kernel's column tickets
    instead ("tickets") and with DOWN_FINISH's 32 x 256 down items: every layer of the graph stamps its kernels'
    phases (DecodeLaunch.set_trace); the medians of trace_phases over the layers of 20 replays, and the layer's time
    with and without the stamps."""
    out = []
    for layers, xs, rate, variant in rate_variants(d, f, args, gen, TRACE_VARIANTS):
        row: dict = {"shape": name, "batch": 1, "rate": rate, "variant": variant}
        try:
            lcs = launches(layers, xs, "plane")
            row["all_us"] = graph_time([lc.run for lc in lcs])
            rows = max(lcs[0].sms * decode.PROGRAMS_PER_SM, d // 8 + f // 64)
            buf = torch.zeros(len(lcs), 3, rows, 16, dtype=torch.int64, device="cuda")
            for lc, b in zip(lcs, buf, strict=True):
                lc.set_trace(b)
            g = capture([lc.run for lc in lcs])
            row["traced_us"] = replay_time(g, len(lcs))
            per: list[dict] = []
            for _ in range(20):
                buf.zero_()
                g.replay()
                torch.cuda.synchronize()
                per += [trace_phases(b) for b in buf.cpu()]
            for key in TRACE_KEYS:
                vals = [p[key] for p in per if p[key] is not None]
                row[key] = upper_median(vals) if vals else None
            row["layers_traced"] = len(per)
            shown = " ".join(f"{k.removesuffix('_us')} {row[k]:.2f}" for k in TRACE_KEYS[:15] if row[k] is not None)
            print(f"  trace {name} B=1 {rate:.0%} {variant} ({row['all_us']:.1f} us a layer, "
                  f"{row['traced_us']:.1f} traced; us from kernel 1's end): {shown}; clock "
                  f"{row['clock_ghz']:.2f} GHz, timer step {row['timer_step_ns']} ns", flush=True)  # fmt: skip
        except (RuntimeError, ValueError) as e:
            row["error"] = str(e)[:300]
            print(f"  trace {name} B=1 {rate:.0%} {variant}: {e}", flush=True)
        out.append(row)
    return out


def copy_ceiling() -> float:
    """TB/s of a 4 GB device copy (bytes read + written)."""
    a = torch.empty(2**30, dtype=torch.float32, device="cuda").normal_()
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    ts = []
    for _ in range(10):
        e0, e1 = (
            torch.cuda.Event(enable_timing=True),
            torch.cuda.Event(enable_timing=True),
        )
        e0.record()
        b.copy_(a)
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) / 1000)
    del a, b
    return 2 * 4 * 2**30 / sorted(ts)[5] / 1e12


def bench_shape(
    name: str, d: int, f: int, args: argparse.Namespace, gen: torch.Generator, on_row: Callable[[dict], None]
) -> None:
    """All batches and rates for one shape; each row goes to `on_row` as soon as it is measured."""
    layers = [make_layer(d, f, args.bits, args.group_size, gen) for _ in range(args.layers)]
    pred_bytes = sum(t.numel() * t.element_size() for t in (layers[0]["pred"].words, layers[0]["pred"].scales))
    pred_bytes += layers[0]["pred"].offsets.numel() * 2
    dense_bytes = 2 * f * d * 2
    for n in args.batches:
        xs = [torch.randn(n, d, device="cuda", generator=gen).to(DT) for _ in layers]
        t_dense = graph_time([lambda lay=lay, x=x: run_dense(lay, x) for lay, x in zip(layers, xs, strict=True)])
        for rate in args.rates:
            for lay in layers:
                set_thresholds(lay, rate, gen)
            chk = check(layers[0], n, gen)
            fns = [lambda lay=lay, x=x: run_tardis(lay, x) for lay, x in zip(layers, xs, strict=True)]
            for lay in layers:
                lay["counts"].zero_()
            t0 = graph_time(fns, reps=args.reps)
            # every call ran (graph_time: 2 warm-ups, the capture runs nothing, 3 + reps replays), each once per layer:
            # kernel 1 counted its tokens and steps (v9 and before divided by 1 + this many calls)
            calls = 2 + 3 + args.reps
            counted = torch.stack([lay["counts"] for lay in layers]).sum(0).tolist()
            if counted[2:] != [calls * len(layers) * n, calls * len(layers)]:
                raise RuntimeError(f"the op counted {counted[2:]} tokens and steps, expected "
                                   f"{[calls * len(layers) * n, calls * len(layers)]}")  # fmt: skip
            union = counted[1] / counted[3]
            flagged = counted[0] / counted[2]
            t_bytes = d * d * 2 + pred_bytes + union * 2 * d * 2
            r = {
                "shape": name, "d": d, "f": f, "batch": n, "rate": rate, "bits": args.bits,
                "dense_us": t_dense, "tardis_us": t0, "speedup": t_dense / t0,
                "union_frac": union / f, "flag_frac": flagged / f,
                "tardis_TBps": t_bytes / t0 / 1e6, "dense_TBps": dense_bytes / t_dense / 1e6,
                "byte_ideal_speedup": dense_bytes / t_bytes, **chk,
            }  # fmt: skip
            if n in FP32_BATCHES:  # the same layers with the float32 output (no finish kernel), same run
                fns32 = [lambda lay=lay, x=x: run_tardis(lay, x, fp32=True) for lay, x in zip(layers, xs, strict=True)]
                try:
                    r |= check_fp32(layers[0], n, gen)
                    r["tardis_fp32_us"] = graph_time(fns32, reps=args.reps)
                    r["speedup_fp32"] = t_dense / r["tardis_fp32_us"]
                except Exception as e:  # an extra column: its failure is recorded, the table goes on
                    r["fp32_error"] = f"{type(e).__name__}: {str(e)[:300]}"
                    r.pop("tardis_fp32_us", None)
                    print(f"  fp32 output B={n}: {r['fp32_error']}", flush=True)
                finally:
                    for lay in layers:
                        zero_counters(lay["ws"])
            on_row(r)
            fp32 = f" fp32 {r['tardis_fp32_us']:.1f} x{r['speedup_fp32']:.2f}" if "tardis_fp32_us" in r else ""
            print(f"{name} B={n} p={rate:.4g} dense {t_dense:.1f} tardis {t0:.1f} x{r['speedup']:.2f}{fp32} "
                  f"union {r['union_frac']:.3f} err {r['rel_err']:.1e}", flush=True)  # fmt: skip
    del layers
    torch.cuda.empty_cache()


def launches(layers: list[dict], xs: list[torch.Tensor], kset: str) -> list:
    """One DecodeLaunch per layer (its own x), with the launch settings in force now."""
    from tardis.kernels.decode import DecodeLaunch

    return [
        DecodeLaunch(
            x,
            wf=lay["wf"],
            bf=lay["bf"],
            pred=lay["pred"],
            b1=lay["b1"],
            lo_in=lay["lo_in"],
            hi_in=lay["hi_in"],
            w1=lay["w1"],
            w2t=lay["w2t"],
            slope=lay["slope"],
            intercept=lay["intercept"],
            act="gelu",
            workspace=lay["ws"],
            counts=lay["counts"],
            kernels=kset,
        )
        for lay, x in zip(layers, xs, strict=True)
    ]


def print_sweep(title: str, shown: dict[str, str], errs: dict[str, float], best: str) -> None:
    """One line of a launch sweep: each launch's time(s), its relative error, the fastest correct one."""
    errors = " ".join(f"{k} {v:.1e}" for k, v in errs.items())
    print(
        f"  {title}: " + " ".join(f"{k} {v}" for k, v in shown.items()) + f"; rel. err {errors}; best {best}",
        flush=True,
    )


def updown_sweep(
    layers: list[dict],
    xs: list[torch.Tensor],
    t_copy: float,
    n: int,
    gen: torch.Generator,
) -> dict:
    """Time up and down alone for each UPDOWN_CONFIGS launch (kernel 1 of each launch writes its neuron
    list first), and check each through the op; returns {"us": {name: {"up", "down"}}, "rel_err": {...},
    "best": name}."""
    default = tuple(getattr(decode, k) for k in UPDOWN_LAUNCH_KEYS)
    times: dict[str, dict[str, float]] = {}
    errs: dict[str, float] = {}
    for cfg in UPDOWN_CONFIGS:
        set_updown(cfg)
        try:
            ls = launches(layers, xs, "plane")
            counts = [torch.zeros(1, dtype=torch.int32, device="cuda") for _ in ls]
            for lc, s in zip(ls, counts, strict=True):  # new launches have their own (empty) neuron lists:
                lc.ws.zero_()  # kernel 1 writes each one's list and count
                lc.stacked()
                s.copy_(lc.ws[:1])
            up = graph_time([lc.up for lc in ls])  # leaves this launch's partials for the down timing
            fns = [lambda lc=lc, s=s: (lc.ws[:1].copy_(s), lc.down()) for lc, s in zip(ls, counts, strict=True)]
            times[updown_name(cfg)] = {"up": up, "down": graph_time(fns) - t_copy}
            for lay in layers:
                lay["ws"].zero_()
            errs[updown_name(cfg)] = check(layers[0], n, gen)["rel_err"]
        finally:
            set_updown(default)
    valid = [c for c in UPDOWN_CONFIGS if errs[updown_name(c)] < 1e-2]
    best = min(valid, key=lambda c: sum(times[updown_name(c)].values()))
    shown = {k: f"{v['up']:.1f}+{v['down']:.1f}" for k, v in times.items()}
    print_sweep(f"up/down sweep B={n} (up + down)", shown, errs, updown_name(best))
    return {
        "us": times,
        "rel_err": errs,
        "best": updown_name(best),
        "best_cfg": dict(zip(UPDOWN_LAUNCH_KEYS, best, strict=True)),
    }


def kernel_times(
    name: str, d: int, f: int, args: argparse.Namespace, gen: torch.Generator, on_row: Callable[[dict], None]
) -> None:
    """Each kernel alone (graph of `args.layers` layers, one launch each): v1 (tl.dot), small, plane.

    Kernel 1 is timed with a workspace memset before it (the list count must restart), kernel 3 with
    a 4-byte copy restoring the count; both are timed alone and subtracted.
    """
    rate = 0.05
    layers = [make_layer(d, f, args.bits, args.group_size, gen) for _ in range(args.layers)]
    for lay in layers:
        set_thresholds(lay, rate, gen)
    pred_bytes = sum(t.numel() * t.element_size() for t in (layers[0]["pred"].words, layers[0]["pred"].scales))
    pred_bytes += layers[0]["pred"].offsets.numel() * 2
    t_zero = graph_time([lambda lay=lay: lay["ws"].zero_() for lay in layers])
    saved = [torch.zeros(1, dtype=torch.int32, device="cuda") for _ in layers]
    t_copy = graph_time([lambda lay=lay, s=s: lay["ws"][:1].copy_(s) for lay, s in zip(layers, saved, strict=True)])
    for n in [b for b in args.batches if b <= 4]:
        xs = [torch.randn(n, d, device="cuda", generator=gen).to(DT) for _ in layers]
        for kset in args.kernel_sets.split(","):
            ls = launches(layers, xs, kset)
            row = {
                "shape": name,
                "batch": n,
                "rate": rate,
                "kernels": kset,
            }
            g = capture([lc.run for lc in ls])
            row["all_us"] = replay_time(g, len(ls))
            if args.timeline and kset == "plane":  # when each kernel of a layer starts and ends (the launch in force)
                try:
                    row["timeline"] = layer_timeline(g, len(ls))
                    print_timeline(f"timeline {name} B={n} {rate:.0%}", row["timeline"])
                except (RuntimeError, ValueError) as e:  # no kernel records: the table goes on without it
                    row["timeline"] = {"error": str(e)[:300]}
                    print(f"  timeline {name} B={n}: {e}", flush=True)
            for part in ("all", "wf", "pred"):
                fns = [lambda lc=lc, p=part: (lc.ws.zero_(), lc.stacked(p)) for lc in ls]
                row[f"k1_{part}_us"] = graph_time(fns) - t_zero
            for lc, s in zip(ls, saved, strict=True):  # the count left by the last kernel-1 replay
                s.copy_(lc.ws[:1])
            union = sum(int(s) for s in saved) / len(saved)
            if kset == "plane":  # v1's up/down here (the default at this batch may be the small ones)
                for lc in ls:
                    lc.small_updown = False
            row["k2_up_us"] = graph_time([lc.up for lc in ls])
            if kset == "plane":  # the small up kernel (no tl.dot), while the list count is still set
                for lc in ls:
                    lc.small_updown = True
                row["k2_up_small_us"] = graph_time([lc.up for lc in ls])
                for lc in ls:
                    lc.small_updown = False
            fns = [lambda lc=lc, s=s: (lc.ws[:1].copy_(s), lc.down()) for lc, s in zip(ls, saved, strict=True)]
            row["k3_down_us"] = graph_time(fns) - t_copy
            if kset == "plane":  # the small down kernel (reads the small up's partials)
                for lc, s in zip(ls, saved, strict=True):
                    lc.small_updown = True
                    lc.ws[:1].copy_(s)
                    lc.up()
                fns = [lambda lc=lc, s=s: (lc.ws[:1].copy_(s), lc.down()) for lc, s in zip(ls, saved, strict=True)]
                row["k3_down_small_us"] = graph_time(fns) - t_copy
                for lc in ls:
                    lc.small_updown = lc.n <= decode.SMALL_UPDOWN_BATCH
                small_better = row["k2_up_small_us"] + row["k3_down_small_us"] < row["k2_up_us"] + row["k3_down_us"]
                if args.plane_best and small_better and n - 1 == decode.SMALL_UPDOWN_BATCH:
                    decode.SMALL_UPDOWN_BATCH = n  # the whole-layer runs below use the small up/down here
                elif args.plane_best and not small_better and n == decode.SMALL_UPDOWN_BATCH:
                    decode.SMALL_UPDOWN_BATCH = n - 1  # ... or v1's
                # the fused up/down kernel (kernels 2 and 3 in one launch), timed and checked through the op
                fns = [lambda lc=lc, s=s: (lc.ws[:1].copy_(s), lc.updown()) for lc, s in zip(ls, saved, strict=True)]
                row["k23_fused_us"] = graph_time(fns) - t_copy
                before = decode.FUSED_UPDOWN_BATCH
                decode.FUSED_UPDOWN_BATCH = n
                layers[0]["ws"].zero_()
                row["k23_fused_rel_err"] = check(layers[0], n, gen)["rel_err"]
                decode.FUSED_UPDOWN_BATCH = before
                pair = min(row["k2_up_us"] + row["k3_down_us"], row["k2_up_small_us"] + row["k3_down_small_us"])
                fused_better = row["k23_fused_us"] < pair and row["k23_fused_rel_err"] < 1e-2
                if args.plane_best and fused_better and n - 1 == decode.FUSED_UPDOWN_BATCH:
                    decode.FUSED_UPDOWN_BATCH = n  # the whole-layer runs below use the fused kernel here
            row["union_frac"] = union / f
            row["k1_wf_TBps"] = d * d * 2 / row["k1_wf_us"] / 1e6
            row["k1_pred_TBps"] = pred_bytes / row["k1_pred_us"] / 1e6
            row["k1_all_TBps"] = (d * d * 2 + pred_bytes) / row["k1_all_us"] / 1e6
            row["k2_TBps"] = union * d * 2 / row["k2_up_us"] / 1e6
            row["k3_TBps"] = union * d * 2 / row["k3_down_us"] / 1e6
            if kset == "plane" and args.updown_sweep:  # before the plane sweep: its checks use the default k1
                row["updown_sweep"] = updown_sweep(layers, xs, t_copy, n, gen)
                if args.plane_best and n == 1:  # the up/down launch is one for every batch: B = 1's choice
                    set_updown(tuple(row["updown_sweep"]["best_cfg"].values()))
            if kset == "plane":  # kernel-1 configurations (PLANE_SWEEP)
                sweep, errs, checks = {}, {}, {}
                default = dict(PLANE_LAUNCH[n])
                for cfg in PLANE_SWEEP:
                    PLANE_LAUNCH[n] = plane_launch(cfg)  # the op's configuration
                    layers[0]["ws"].zero_()  # the timings above leave list counts behind; the op needs zero
                    checks[plane_name(cfg)] = check(layers[0], n, gen)
                    errs[plane_name(cfg)] = checks[plane_name(cfg)]["rel_err"]
                    PLANE_LAUNCH[n] = default
                    for lc in ls:
                        lc.plane_cfg |= plane_launch(cfg)
                    fns = [lambda lc=lc: (lc.ws.zero_(), lc.stacked("all")) for lc in ls]
                    sweep[plane_name(cfg)] = graph_time(fns) - t_zero
                    fns = [lambda lc=lc: (lc.ws.zero_(), lc.stacked("pred")) for lc in ls]
                    sweep[plane_name(cfg) + "_pred"] = graph_time(fns) - t_zero
                    fns = [lambda lc=lc: (lc.ws.zero_(), lc.stacked("wf")) for lc in ls]
                    sweep[plane_name(cfg) + "_wf"] = graph_time(fns) - t_zero
                row["k1_sweep_us"] = sweep
                row["k1_sweep_rel_err"] = errs
                row["k1_sweep_checks"] = checks  # flags against the reference's: which differ, how near
                for k, c in checks.items():
                    if c["rel_err"] >= 1e-2 or c["flags_differing"]:
                        print(
                            f"  {k}: err {c['rel_err']:.1e}, with its own flags {c['rel_err_own_flags']:.1e}; "
                            f"{c['flags_differing']} flags differ (largest rel. margin "
                            f"{c['differing_max_rel_margin']:.1e}), {c['near_threshold']} near a threshold",
                            flush=True,
                        )
                valid = [c for c in PLANE_SWEEP if errs[plane_name(c)] < 1e-2]  # a wrong kernel is never "best"
                best = min(valid, key=lambda c: sweep[plane_name(c)])
                row["k1_best"] = plane_name(best)
                if args.plane_best:  # the whole-layer runs below use the fastest configuration
                    PLANE_LAUNCH[n] = plane_launch(best)
                shown = {k: f"{v:.1f}" for k, v in sweep.items()}
                print_sweep(f"plane k1 sweep B={n} (all / pred only / wf only)", shown, errs, row["k1_best"])
                for lc in ls:
                    lc.ws.zero_()
            if kset == "plane":  # the whole layer with the launches now in force, up/down without and with PDL
                try:
                    row["pdl"] = pdl_ab(layers, xs, n, gen, spin=not args.no_up_spin)
                    pa = row["pdl"]
                    labels = {"xq": "with kernel 1 behind the x words", "early": "with the early down kernel",
                              "early_xq": "with both"}  # fmt: skip
                    spun = "and the up kernel started by the predictor programs"
                    for b, w in (("early_xq", "both"), ("early", "the early down kernel")):
                        labels |= {f"{b}_spin{g}": f"with {w} {spun} ({g} a SM)" for g in SPIN_GRIDS}
                        labels[f"{b}_k1z"] = f"with {w} and the union rows' z in kernel 1 (no up kernel)"
                        labels[f"{b}_ahead"] = f"with {w} and the up kernel's list entries beside the count"
                        labels[f"{b}_close"] = f"with {w} and one closing atomic per down item"
                        labels[f"{b}_ahead_close"] = f"with {w}, the list entries ahead and one closing atomic"
                        labels[f"{b}_pfw2"] = f"with {w} and the up kernel prefetching the W2ᵀ rows"
                        labels[f"{b}_finish"] = f"with {w} and the finish kernel casting y"
                        for bj, bc in FINISH_DOWN_TILES:
                            labels[f"{b}_finish_d{bj}x{bc}"] = f"with {w}, the finish kernel and {bj} x {bc} down items"
                    extra = "".join(
                        f", {pa[k + '_us']:.1f} {label} (err {pa[k + '_rel_err']:.1e})"
                        for k, label in labels.items() if k + "_us" in pa
                    )  # fmt: skip
                    print(f"PDL B={n}: layer {pa['off_us']:.1f} us without, {pa['on_us']:.1f} with "
                          f"(err {pa['rel_err']:.1e}){extra}; best: {pa['best']}", flush=True)  # fmt: skip
                except RuntimeError as e:  # e.g. a driver that cannot capture PDL launches into a graph
                    row["pdl"] = {"error": str(e)[:400], "better": False}
                    print(f"PDL B={n}: failed: {e}", flush=True)
                if args.plane_best and n == 1:  # one choice for every batch: B = 1's (all off if the A/B failed)
                    decode.apply_launch_settings(row["pdl"].get("settings", PDL_OFF))
            if kset == "plane" and n <= decode.SMALL_UPDOWN_BATCH and n > decode.FUSED_UPDOWN_BATCH:
                # folded rows moved into the up / down grids, with the PDL choice just made: the down grid's
                # work grows with the rate, so the pair is timed at 5% and at 10% and chosen for both
                row["wf_moves"] = wm = wf_moves_ab(layers, xs, n, gen)
                at_rate = [(lay["lo_in"], lay["hi_in"]) for lay in layers]
                for lay in layers:
                    set_thresholds(lay, WF_MOVES_RATE2, gen)
                row["wf_moves_rate2"] = wm2 = wf_moves_ab(layers, xs, n, gen)
                for lay, (lo, hi) in zip(layers, at_rate, strict=True):  # the 5% thresholds back, as they were
                    lay["lo_in"], lay["hi_in"] = lo, hi
                row["wf_moves_best"] = both = wf_moves_both(wm, wm2)
                for label, w in ((f"{rate:g}", wm), (f"{WF_MOVES_RATE2:g}", wm2)):
                    print(f"folded rows moved B={n} at {label}: " + " ".join(f"{k} {v:.1f}" for k, v in w["us"].items())
                          + f"; best {w['best']}", flush=True)  # fmt: skip
                print(f"folded rows moved B={n}: best at both rates {both['best']}", flush=True)
                if args.plane_best and n == 1:
                    decode.WF_UP_FRAC, decode.WF_DOWN_FRAC = both["best_up"], both["best_down"]
            on_row(row)
            print(
                f"kernels {name} B={n} {row['kernels']:5}: all {row['all_us']:6.1f} | k1 {row['k1_all_us']:6.1f} "
                f"(wf {row['k1_wf_us']:5.1f} pred {row['k1_pred_us']:5.1f}) {row['k1_all_TBps']:.2f} TB/s | "
                f"up {row['k2_up_us']:5.1f} down {row['k3_down_us']:5.1f} "
                f"(small {row.get('k2_up_small_us', 0):5.1f} {row.get('k3_down_small_us', 0):5.1f}, "
                f"fused {row.get('k23_fused_us', 0):5.1f}) "
                f"| union {row['union_frac']:.3f} "
                f"(memset {t_zero:.1f}, copy {t_copy:.1f} subtracted)",
                flush=True,
            )
    del layers
    torch.cuda.empty_cache()


def measured_rate(path: str) -> float:
    """The held-out fallback rate a calibration measured: `calibration.measured_fallback_rate` of an
    e2e_hf.py JSON, or `report.measured_fallback_rate` of a variant's manifest.json."""
    with open(path) as fh:
        data = json.load(fh)
    for section in ("calibration", "report"):
        rate = data.get(section, {}).get("measured_fallback_rate")
        if rate is not None:
            return round(float(rate), 4)
    raise SystemExit(f"{path}: no calibration.measured_fallback_rate or report.measured_fallback_rate in it")


def main() -> None:
    """Parse arguments, run, print the table, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="falcon7b", help="comma list of " + ",".join(SHAPES))
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--rates", default=",".join(map(str, RATES)))
    ap.add_argument(
        "--rate-from",
        action="append",
        default=[],
        help="also the fallback rate a calibrated model measured (an e2e_hf.py JSON or a variant manifest.json)",
    )
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument(
        "--kernel-times",
        action="store_true",
        help="also time each kernel alone (batch <= 4, 5%%)",
    )
    ap.add_argument("--kernel-sets", default="v1,small,plane", help="kernel sets timed by --kernel-times")
    ap.add_argument(
        "--plane-best",
        action="store_true",
        help="with --kernel-times: run the whole-layer table with the fastest swept plane configuration per batch",
    )
    ap.add_argument(
        "--updown-sweep",
        action="store_true",
        help="with --kernel-times and the plane set: also time the up/down launches of UPDOWN_CONFIGS "
        "(with --plane-best the whole-layer table uses batch 1's fastest)",
    )
    ap.add_argument(
        "--timeline",
        action="store_true",
        help="each kernel's start and end within a layer (the plane set; the profiler's kernel records of the "
        "whole-layer graph): with --kernel-times for its launch; without, at batch 1 and each rate for the "
        "TIMELINE_VARIANTS launches, before the whole-layer table",
    )
    ap.add_argument(
        "--tail-trace",
        action="store_true",
        help="with --timeline: also stamp each layer's kernel phases in-kernel (globaltimer; DecodeLaunch.set_trace) "
        "at batch 1 and each rate: TRACE_VARIANTS",
    )
    ap.add_argument(
        "--ab",
        default="",
        help="comma list of TIMELINE_VARIANTS: instead of the timelines, an interleaved A/B of their layer times at "
        "batch 1 and each rate (the first is the reference), then the whole-layer table",
    )
    ap.add_argument("--ab-rounds", type=int, default=30, help="--ab: rounds of replays, each variant once a round")
    ap.add_argument(
        "--no-up-spin",
        action="store_true",
        help="leave UP_SPIN (the up kernel started by kernel 1's predictor programs) out of the PDL A/B",
    )
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "ffn_bench.json"))
    args = ap.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.rates = [float(r) for r in args.rates.split(",")] + [measured_rate(p) for p in args.rate_from]
    args.ab = [v for v in args.ab.split(",") if v]
    unknown = [v for v in args.ab if v not in TIMELINE_VARIANTS]
    if unknown:
        ap.error(f"--ab: unknown variant(s) {', '.join(unknown)}; known: {', '.join(TIMELINE_VARIANTS)}")
    gen = torch.Generator(device="cuda").manual_seed(0)
    t_start = time.time()
    ceiling = copy_ceiling()
    print(f"copy ceiling {ceiling:.2f} TB/s", flush=True)
    ktimes: list[dict] = []
    rows: list[dict] = []
    tls: list[dict] = []  # --timeline without --kernel-times
    traces: list[dict] = []  # --tail-trace
    abs_: list[dict] = []  # --ab

    def write(extra: dict) -> None:  # after each stage too, so a run cut short by a time limit keeps its data
        out = {
            "date": datetime.date.today().isoformat(), "gpu": torch.cuda.get_device_name(),
            "torch": torch.__version__, "triton": __import__("triton").__version__, "copy_ceiling_TBps": ceiling,
            "layers_per_graph": args.layers, "rows": rows, "kernel_times": ktimes, "timelines": tls, "traces": traces,
            "ab": abs_,
            "plane_launch": {str(k): v for k, v in PLANE_LAUNCH.items()},
        } | decode.launch_settings() | {"wall_s": time.time() - t_start} | extra  # fmt: skip
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".tmp", "w") as fh:
            json.dump(out, fh, indent=1)
        os.replace(args.out + ".tmp", args.out)

    def on_row(row: dict, into: list[dict]) -> None:
        into.append(row)
        write({"partial": True})

    if args.kernel_times:
        for name in args.shapes.split(","):
            kernel_times(name, *SHAPES[name], args, gen, lambda r: on_row(r, ktimes))
    elif args.ab:  # an interleaved A/B of a few launches at batch 1, no sweeps
        for name in args.shapes.split(","):
            abs_ += interleaved_ab(name, *SHAPES[name], args, gen)
            write({"partial": True})
    elif args.timeline:  # the layer's kernel timeline at batch 1 for a few launches, no sweeps
        for name in args.shapes.split(","):
            tls += timelines(name, *SHAPES[name], args, gen)
            write({"partial": True})
            if args.tail_trace:
                traces += tail_traces(name, *SHAPES[name], args, gen)
                write({"partial": True})
    for name in args.shapes.split(","):
        d, f = SHAPES[name]
        bench_shape(name, d, f, args, gen, lambda r: on_row(r, rows))
    policies = {}
    for name in args.shapes.split(","):
        for rate in args.rates:
            sel = [r for r in rows if r["shape"] == name and r["rate"] == rate]
            pol = fit_policy({r["batch"]: r["union_frac"] for r in sel},
                             {r["batch"]: (r["tardis_us"], r["dense_us"]) for r in sel})  # fmt: skip
            policies[f"{name}@{rate}"] = pol.max_union
            for r in sel:
                use = pol.use_tardis(r["union_frac"])
                r["policy"] = "tardis" if use else "dense"
                r["policy_us"] = r["tardis_us"] if use else r["dense_us"]
                r["policy_vs_dense"] = r["policy_us"] / r["dense_us"]
    write({"policies_max_union": policies})
    print(f"\ncopy ceiling {ceiling:.2f} TB/s; {torch.cuda.get_device_name()}; int{args.bits} g{args.group_size}")
    print(f"{'shape':10} {'B':>3} {'p':>6} {'union':>6} {'dense':>7} {'tardis':>7} {'x':>5} {'TB/s':>5} "
          f"{'ideal':>5} {'pol/d':>5} {'err':>7} {'x fp32':>6}")  # fmt: skip
    for r in rows:
        x32 = f"{'-':>6}" if "speedup_fp32" not in r else f"{r['speedup_fp32']:>6.2f}{'' if r['ok_fp32'] else ' FAIL'}"
        print(f"{r['shape']:10} {r['batch']:>3} {r['rate']:>6.4g} {r['union_frac']:>6.3f} {r['dense_us']:>7.1f} "
              f"{r['tardis_us']:>7.1f} {r['speedup']:>5.2f} {r['tardis_TBps']:>5.2f} {r['byte_ideal_speedup']:>5.2f} "
              f"{r['policy_vs_dense']:>5.2f} {r['rel_err']:>7.1e}{'' if r['ok'] else ' FAIL'} {x32}")  # fmt: skip
    print(
        "x fp32: TARDIS with the float32 output (no finish kernel; what the e2e run's fused adds take) against the"
        " same dense time"
    )


if __name__ == "__main__":
    main()
