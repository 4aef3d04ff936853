"""Named block sizes of the decode kernels (importable without Triton, e.g. to size the workspace)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

WF_BLOCK_ROWS = 16  # folded rows per program (d/16 programs: several per SM)
WF_BLOCK_K = 256  # folded GEMV step along d
# up/down launch (v7: the fastest of bench/ffn_bench.py --updown-sweep at B = 1, 5% on an H100, where batch 1
# runs the small up/down kernels (SMALL_UPDOWN_BATCH below): up + down 8.1 + 11.1 µs against 10.3 + 16.1
# at v6's launch (16 / 32 neurons, 256 columns, 4 programs per SM) in the same run. v1's up/down kernels
# (batch 2..64) take the same launch: not yet measured there, nor on the H200)
UP_BLOCK_NEURONS = 32  # listed neurons per up-gather item
UP_BLOCK_K = 128  # up-gather step along d
UP_SPLITS = 8  # d is split in about this many chunks per neuron block
DOWN_BLOCK_NEURONS = 64  # listed neurons per down-scatter item
DOWN_BLOCK_COLS = 512  # output columns per down-scatter item
UP_STAGES = 0  # > 1: the small up kernel's K loop software-pipelined by Triton (cp.async stages; v9, H100 at
# B = 1, 5%: 7.8 vs 7.4 µs, not faster)
UP_SMALL_BLOCK_K = 128  # the small up kernel's step along d (batch 1). Its K loop is not pipelined, so each step
# is a round trip with 32 x 128 bf16 = 8 KB per program in flight (≈ 14 KB per SM at 5%, against the ≈ 25 KB
# Little's law asks for); 256 or 512 (with d split so a chunk is one step) issues a whole item's rows at once,
# with no accumulator loop (ONE; offline sm_90: 16 x 512 at 4 warps 96 registers, 32 x 256 91, against 117 for
# the 5-step default). v19, H100, B = 1, 5%: up alone 6.2 µs at 16 neurons x 512 (d in 9 chunks) against 7.1,
# but on the e2e model's layers the whole layer took 45.2 µs against 44.2 with the default: not faster where it
# counts, so 128 stays (both in the up/down sweep)
UP_WARPS = 4  # warps per program of the small up kernel
UP_PF_W2 = False  # the small up kernel (batch 1) prefetches into L2 the W2ᵀ rows of its item's neurons over its
# item's columns when it starts the item, for the down kernel. v19's timeline (H100, 5%): the up kernel ends 9.1 µs
# after kernel 1, sharing that window with the early down kernel's W2ᵀ reads, which start 2.3 µs after kernel 1;
# prefetches hold no registers and start those reads at kernel 1's end. v20, H100: slower (the layer 44.0 against
# 41.2 µs at 5%, 52.6 against 50.8 at 10%; the up kernel's last item 1.0 / 2.8 µs later): off, in pdl_ab (`_pfw2`)
DOWN_WARPS = 4  # warps per program of the small down kernel (batch 1; at 64 neurons x 512 columns and 4 warps it
# takes 255 registers and spills, offline sm_90 compile; 8 warps: 123 registers, no spill)
TICKET_BLOCK_COLS = 256  # the narrowest column block a down-scatter launch may use: the workspace holds one
# ticket per this many output columns
SMALL_BATCH = 0  # batches up to this many tokens run the v2 "small" kernels by default (they take 1..4;
# superseded by the plane kernel, see bench/NOTES.md)
PLANE_BATCH = 4  # batches up to this many tokens run the plane-order predictor kernel by default (1..4)
# plane kernel-1 launch per batch size: T 64-row predictor tiles per program, warps, PRED_FIRST (predictor
# programs before the Wf programs in the grid), XPF (prefetch the next group's x into L1), PF2 (words two
# groups ahead instead of one). Measured on the H200 (bench/NOTES.md, v4): PRED_FIRST saves 14–30 µs of
# kernel 1 at B = 1, 2, 4 (the long predictor programs no longer start after the Wf programs), XPF costs
# 4–18 µs, PF2 is within noise; B = 3 was neither measured nor GPU-tested with them, so it keeps v3's.
# H2 (int2 with 16 full code planes only): two codes per fp16x2 instruction (x rounded to fp16, so |x| must
# stay below 65504; products summed in fp16 over one word's 16 codes); SPLIT: the groups of a row
# tile cut into this many programs (fp32 atomics into a zero-at-rest buffer, the last one runs the epilogue).
# PF4: the predictor words four groups ahead (over PF2).
# WPF: the Wf programs load their next tile before the current one's FMAs.
# BMF: folded rows per Wf program (WF_BLOCK_ROWS; fewer rows: more, shorter programs, a shorter tail).
# maxnreg: a register cap (None: the compiler's choice; 128 lets 4 programs of 4 warps share an SM).
# PS / WS (> 1): the predictor's group loop / the Wf part's K loop software-pipelined by Triton (`tl.range`
# num_stages): each step's loads go by cp.async into shared memory PS - 1 (WS - 1) steps ahead, with no
# register rotation (PF2 / PF4 / WPF rotate registers, and the moves wait for the loads: offline SASS showed
# the words PF2 loaded one group ahead in effect). 0 (or 1): the register-prefetch loops above.
# PG (with PS > 1): predictor groups per pipelined step (2: half the steps, so half the waits and CTA barriers per
# group, and two groups' independent work between them; v9, untimed).
# WK (> 1): the Wf part as tiles of BMF rows by one of about WK column chunks (a Wf program's time follows its
# pipelined steps: v10, ≈ 17 µs for the 18 steps of a 32-row program at any row count), the tiles' sums added into
# y32 (fp32 atomics), which the int8 x kernel zeroes (I8; the tiles wait for it before adding) or a memset (v11,
# untimed).
# XV (I8): a word position's four int8 x words in one 16-byte load (v11; offline SASS of batch 1's launch: the
# group loop's cp.async and commits 18 → 12, LDS 21 → 15, 260 → 244 instructions; False: four 4-byte loads, v10).
# I8 (int2 with 16 full code planes only): x rounded per token and group to int8 by the group's absmax
# (a small kernel before kernel 1 packs it for dp4a), and each word's 16 codes multiply it with four
# dp4a instructions (integer products, exact); per group and row fp32 s·s_x·Σ code·q + o·Σ x. The
# predictor then sees x to int8 precision (layout.predict_i8 is its reference).
PLANE_BASE = {  # v3's launch; every key the plane kernel's launch takes
    "T": 1,
    "num_warps": 4,
    "PRED_FIRST": False,
    "XPF": False,
    "PF2": False,
    "H2": False,
    "SPLIT": 1,
    "maxnreg": None,
    "WPF": False,
    "PF4": False,
    "I8": False,
    "BMF": WF_BLOCK_ROWS,
    "PS": 0,
    "WS": 0,
    "PG": 1,
    "WK": 1,
    "XV": True,
}
# plane kernel-1 launch configurations that bench/ffn_bench.py --kernel-times sweeps and
# tests/test_kernels.py::test_plane_kernel_configurations_on_gpu runs: overrides of PLANE_BASE (T row tiles, warps,
# PRED_FIRST, XPF, PF2, H2, SPLIT, maxnreg, WPF, PF4, I8, BMF, PS, WS, PG, WK, XV: see above)
PLANE_SWEEP: tuple[dict, ...] = (
    {"PRED_FIRST": True, "PF2": True},  # v4's default at B = 1
    {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 3},  # v9's default at B = 2 (int8 x, cp.async stages)
    {"PRED_FIRST": True, "PS": 4, "WS": 3},  # the float predictor in stages
    {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 3, "num_warps": 8},  # twice the warps per SM
    {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 3, "BMF": 8},  # twice the Wf programs, half as long
    {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 4, "BMF": 8, "num_warps": 8},
    {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 3, "BMF": 32},  # half the Wf programs (v9's default at B = 1)
    {"PRED_FIRST": True, "I8": True, "PS": 6, "WS": 3},  # deeper predictor pipeline
    {"PRED_FIRST": True, "I8": True, "PS": 3, "WS": 2},
    {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 3, "SPLIT": 2},  # twice the predictor programs (atomics)
    {"I8": True, "PS": 4, "WS": 3},  # the Wf programs first
    # two predictor groups a pipelined step (PG 2: half the waits and barriers; v10: the default at B = 1)
    {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 3, "BMF": 32, "PG": 2},
    {"PRED_FIRST": True, "I8": True, "PS": 3, "WS": 3, "BMF": 32, "PG": 2},
    # v10: two row tiles a predictor program (T 2: twice the bytes per stage and CTA, half the barriers per byte)
    {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 3, "BMF": 32, "PG": 2, "T": 2},
    {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 3, "BMF": 32, "PG": 2, "T": 2, "num_warps": 8},
    # v10: the Wf part moves ≈ 17 GB/s a program, about its bytes in flight (2 stages × 16 KB) over the latency:
    # one stage more (50.7 KB of shared memory a program, still 4 programs an SM; WS 5 would allow 3)
    {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 4, "BMF": 32, "PG": 2},
    # v11: the Wf part as tiles of a quarter (a half) of d: 5 (9) pipelined steps a program instead of 18, the
    # tiles' sums added into y32 (zeroed by the int8 x kernel)
    {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 3, "BMF": 32, "PG": 2, "WK": 4},
    {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 3, "BMF": 32, "PG": 2, "WK": 2},
    {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 3, "BMF": 16, "PG": 2, "WK": 4},
    # v11: batch 1's launch with the int8 x words as four 4-byte loads (v10's code; XV, one 16-byte load, is new)
    {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 3, "BMF": 32, "PG": 2, "XV": False},
)
# launch keys of reverted experiments that older ffn_bench JSONs still record, with their "off" value (the
# JSON's launch is usable when they are off): SK, the stream-K predictor (v8, slower, reverted)
RETIRED_PLANE_KEYS = {"SK": 0}
# v9 (bench/NOTES.md): at B = 1 and 2 the int8-x predictor and the Wf part in cp.async stages (I8, PS 4, WS 3;
# at B = 1 with 32 folded rows per Wf program). H200, kernel 1: 23.9 vs 32.2 µs (v8's launch) at B = 1, 30.6
# vs 45.4 at B = 2, same run (H100: 30.9 vs 34.9, 34.8 vs 45.2). A predictor that I8 does not take (not int2
# with 16 full code planes) runs the float path with the same stages. v10: at B = 1 two predictor groups per
# pipelined step (PG 2): kernel 1 28.7 / 29.4 vs 29.7 / 30.3 µs in two H100 runs (same run each).
PLANE_LAUNCH = {
    1: PLANE_BASE | {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 3, "BMF": 32, "PG": 2},
    2: PLANE_BASE | {"PRED_FIRST": True, "I8": True, "PS": 4, "WS": 3},
    3: dict(PLANE_BASE),
    4: PLANE_BASE | {"PRED_FIRST": True, "PF2": True},
}
SMALL_MAX_BATCH = 4  # the most tokens the small-batch kernels take (small=True)
SMALL_UPDOWN_BATCH = 1  # plane batches up to this many tokens use the small up/down kernels (else v1's;
# v7, H100: at B = 1 with the launch above 8.1 + 11.1 µs, v6's default v1 pair 8.4 + 13.5)
SMALL_GROUPS_PER_STEP = 4  # predictor groups loaded per loop step in the small-batch stacked kernel
SMALL_WARPS = 8  # warps per program of the small-batch stacked kernel
PROGRAMS_PER_SM = 8  # persistent grid size of the up-gather and down-scatter kernels
# the up/down launch settings above that bench/ffn_bench.py --updown-sweep varies and that an ffn_bench
# JSON's "updown_launch" sets (bench/e2e_hf.py --kernel-launch); DecodeLaunch reads them when built
UPDOWN_LAUNCH_KEYS = (
    "PROGRAMS_PER_SM", "UP_BLOCK_NEURONS", "UP_SPLITS", "DOWN_BLOCK_NEURONS", "DOWN_BLOCK_COLS", "UP_STAGES",
    "DOWN_WARPS", "UP_SMALL_BLOCK_K", "UP_WARPS",
)  # fmt: skip
PDL_UPDOWN = True  # launch the up and down kernels with programmatic dependent launch (Hopper): each may
# start while the kernel before it drains, and waits in-kernel (griddepcontrol.wait) before reading its output;
# kernel 1 lets them launch once all its programs run. ffn_bench times the layer both ways (--plane-best keeps
# the faster). v8, H200, Falcon-7B layer at 5%: 45.9 → 44.7 µs at B = 1, 75.0 → 73.8 at B = 2 (same run)
DOWN_EARLY = True  # the small down kernel reads kernel 1's neuron list and its W2ᵀ rows before it waits for the
# small up kernel (which then releases it only after its own wait for kernel 1): the W2ᵀ bytes stream in while
# the up kernel runs. v10, H100, Falcon-7B layer at 5%, B = 1, PDL on: 44.5 → 43.2 µs and 45.4 → 44.1 (two runs,
# same run each); ffn_bench times the layer with and without it (pdl_ab), --plane-best keeps the faster
XQ_PDL = True  # I8: kernel 1 launched with programmatic dependent launch behind _xq_kernel (the int8 x words):
# its Wf programs start at once, its predictor programs wait for the x words in-kernel; the layer loses the
# gap between two dependent launches. v10, H100, B = 1, 5%: 45.4 → 43.9 µs alone, 42.4 with DOWN_EARLY (same run);
# ffn_bench times the layer with and without it (pdl_ab), --plane-best keeps the faster
UP_SPIN = False  # batches that run the plane kernel 1 with the small up/down kernels (not the fused one): the up
# kernel starts on the neuron list as soon as kernel 1's *predictor* programs are done (each adds one to a
# workspace counter after its flags; the up programs poll it) instead of waiting for all of kernel 1, so it
# overlaps the folded rows' tail. It still waits for kernel 1's end before it exits, so the down kernel (which
# waits for the up grid) sees every folded row in y32. Safe to spin: with PDL the up grid starts only once every
# kernel-1 program runs; without PDL it starts after kernel 1 and the count is already final. ffn_bench's
# pdl_ab times the layer with and without it. v15, H100, Falcon-7B layer at 5%, B = 1: 45.9 µs against 41.2 without
# (same run; 1056 up programs polling back to back); with the polls backing off (nanosleep) and UP_SPIN_PROGRAMS_PER_SM
# up programs per SM while they spin: 45.6 / 42.9 / 42.7 µs at 1 / 2 / 4 a SM against 40.8 (same run). Off: the up
# kernel's bytes then compete with kernel 1's folded rows for the same bandwidth. Kept in the A/B for the H200,
# where kernel 1 leaves more of the bandwidth unused (v9: 2.5 of 4.3 TB/s).
UP_SPIN_PROGRAMS_PER_SM = 2
UP_SPIN_SLEEP_NS = 256  # the back-off between two polls
UP_IN_K1 = False  # batches that run the plane kernel 1 with the small up/down kernels (not the fused one): no up
# kernel. Each predictor program of kernel 1, right after its flags, computes the exact z of its own tile's union
# rows (Z_ROWS at a time, W1 rows in chunks of Z_BLOCK_K, fp32) and stores them where the up kernel's one split
# would, so the down kernel follows kernel 1 directly. At 5% a 64-row tile has about 3 such rows: the W1 bytes
# (8.6 MB at Falcon-7B's shape) move while kernel 1's folded rows still stream, instead of in a launch of their own
# between kernel 1 and the down kernel. ffn_bench's pdl_ab times the layer with and without it. v16, H100, Falcon-7B
# layer at 5%, B = 1: 41.6 µs against 40.7 without, and 42.4 against 42.3 (two runs, same run each): off. Kernel 1
# grows by more than the up kernel's share of the layer (its predictor programs end later, and the down kernel can
# no longer read its W2ᵀ rows while an up kernel runs). Kept in the A/B for the H200, where kernel 1's extra W1
# bytes cost less of its time.
LIST_AHEAD = False  # the small up kernel (batch 1): each program loads its first item's neuron-list entries beside
# the list count instead of after it, so its W1 rows wait one round trip less (the chain after kernel 1 is
# latency-bound: v16, about 14 µs for 17 MB at 5%). Every up program does it, also the many that find no item.
ONE_CLOSE = False  # the small down kernel (batch 1): an item takes its column block's ticket and counts itself done
# in one relaxed atomic (between a fence in every thread that releases its adds and one that acquires the others'
# only where it casts the block or resets the list) instead of two acq_rel atomics one after the other with the
# cast between them. ffn_bench's pdl_ab times each of the two and both. v17, H100, Falcon-7B layer at 5%, B = 1
# (same run): 41.9 µs with LIST_AHEAD, 41.8 with ONE_CLOSE, 41.7 with both, against 41.4 without; an earlier run
# with both and the down kernel's list entries read ahead too (.cg, every down program): 43.7 against 42.4. Off:
# the round trips they remove are not what the chain waits for. Kept in the A/B for the H200.
DOWN_FINISH = True  # the small down kernel (batch 1): no column tickets. Its items add their corrections into y32 and
# exit; a fourth launch (the finish kernel, PDL behind the down kernel) casts y32 into y and resets the list count.
# v20's in-kernel trace (H100, 5%): a down item spends 1.3 µs from its wait to its corrections and 3.6 µs from there
# to its ticket (the scatter, a fence that waits for the adds, the ticket and the done count: dependent round trips),
# 4.4 µs where it casts the block; the finish kernel replaces the fence, the ticket, the done count and the cast's
# load by the down grid's end and one load. ffn_bench's pdl_ab times it (`_finish`). v21 (H100, 5% / 10%, B = 1): the
# trace's tail after the up kernel 6.7 -> 4.4 µs / 15.1 -> 11.3; the layer 50.0 -> 47.0 µs at 10% (timeline and trace
# runs alike), at 5% 40.1 -> 40.0 (the profiler's layer period) and 42.2 -> 42.0 (the trace run's untraced graphs);
# pdl_ab's pick (41.8 against 45.5 without). On since v21
FINISH_BLOCK_COLS = 512  # columns a program of the finish kernel casts
Z_ROWS = 2  # union rows a step of UP_IN_K1's exact z in kernel 1
Z_BLOCK_K = 1024  # columns a chunk of that step (all chunks unrolled: cdiv(d, Z_BLOCK_K) of them)
Z_MAXNREG = 128  # kernel 1's register cap with UP_IN_K1 (where its launch sets none). Offline sm_90 compile of
# batch 1's launch: 127 registers without UP_IN_K1, 128 with it at Z_ROWS 2; at Z_ROWS 4 the unrolled chunks'
# loads take it to 180 (3 programs of 4 warps an SM instead of 4: kernel 1's 426 programs no longer one wave), or
# 128 with 17 spilled words under this cap
# Folded rows moved out of kernel 1 (batches that run the small up/down kernels, not the fused one): the Wf part
# (Wf·x + bf) needs only x, so some of its row programs can run in the later grids, where the up and down kernels
# spend most of their time waiting on short chains of memory round trips, and kernel 1 (predictor ‖ Wf) gets
# shorter. WF_UP_FRAC: about this fraction of the folded rows is computed by extra programs at the front of the up
# kernel's grid; WF_DOWN_FRAC: about this fraction, in whole down column blocks counted from the last, by extra
# programs at the front of the down kernel's grid. Each such program is a tile of WF_MOVED_ROWS rows and one of
# about WF_MOVED_SPLITS column chunks: a Wf program's time follows its pipelined steps (v10: a 32-row program of
# kernel 1 takes ≈ 17 µs for its 18 steps at any row count), so a moved tile has a few steps only and adds its
# partial sums into y32 (fp32 atomics; kernel 1 zeroes the moved rows). Tiles load before they wait for the grid
# ahead of theirs (PDL) and add after it; the down grid's tiles also count in their column blocks' tickets and in
# the list reset. v11: built and checked in Triton's interpreter, not yet timed on a GPU (ffn_bench's wf_moves).
WF_UP_FRAC = 0.0
WF_DOWN_FRAC = 0.0
WF_MOVED_ROWS = 32  # rows of a moved tile (divides kernel 1's BMF or is a multiple of it, and DOWN_BLOCK_COLS)
WF_MOVED_SPLITS = 4  # column chunks of a moved tile's rows (d = 4544: 5 steps of WF_BLOCK_K each)
WF_MOVED_STAGES = 3  # pipeline stages of a moved tile's column loop (kernel 1's WS at B = 1)
# The fused up/down kernel (kernels 2 and 3 in one launch, batch 1..4, no tl.dot): BJ listed neurons an
# item, z over all of d in BK steps, the scatter in column blocks of BC (one ticket per block).
FUSED_UPDOWN_BATCH = 0  # batches up to this many tokens run it by default (none: slower, e.g. H200 B = 1
# at 5%: 24.0 µs against 7.4 + 10.4 for the small up/down pair, bench/results/ffn_2026-12-05_h200_v8_sweep.json)
UPDOWN_BLOCK_NEURONS = 4
UPDOWN_BLOCK_K = 512
UPDOWN_BLOCK_COLS = 1024
assert min(UPDOWN_BLOCK_COLS, DOWN_BLOCK_COLS) >= TICKET_BLOCK_COLS  # their column tickets fit the workspace


PRED_ROWS = 64  # rows of a predictor tile (layout.BLOCK_ROWS)
MAX_SPLIT_TOKENS = 4  # tokens the split predictor's partial-sum buffer holds
COUNT_WORDS = 2  # the workspace's first region: the list count and items done


def workspace_layout(d: int, f: int) -> dict[str, tuple[int, int]]:
    """(offset, length) in int32 words of each workspace region, all zero at rest (but the first two words in
    the float32-output mode, op.KernelPack.fp32_out): the list count and
    items done, one ticket per down-scatter column block, one ticket per predictor tile, the count of finished
    predictor programs (UP_SPIN), and the split predictor's fp32 partial sums [MAX_SPLIT_TOKENS, f_pad]."""
    tiles = -(-f // PRED_ROWS)
    sizes = {
        "counts": COUNT_WORDS,
        "col_tickets": -(-d // TICKET_BLOCK_COLS),
        "tile_tickets": tiles,
        # UP_SPIN: word 0 counts kernel 1's finished predictor programs (the down kernel's last item resets it);
        # four words, so the partial sums after it keep their 16-byte alignment
        "pred_done": 4,
        "zacc": MAX_SPLIT_TOKENS * tiles * PRED_ROWS,
    }
    out, off = {}, 0
    for name, n in sizes.items():
        out[name] = (off, n)
        off += n
    return out


def zero_counters(workspace: torch.Tensor) -> None:
    """Zero a workspace's list count and items done (workspace_layout's "counts" region), which a call in the
    float32-output mode leaves set (op.KernelPack.fp32_out)."""
    workspace[:COUNT_WORDS].zero_()


def workspace_size(d: int, f: int) -> int:
    """int32 words of persistent workspace (see workspace_layout)."""
    off, n = workspace_layout(d, f)["zacc"]
    return off + n
