"""Triton decode kernels for the TARDIS FFN and their launcher (CUDA; METHOD.md §4).

Three launches, no host sync, static grids with early exit (CUDA-graph safe):
1. `_stacked_kernel` over [Wf ; Q(W1)] sharing x: Wf programs write y32 = Wf·x + bf; predictor
   programs compute ẑ = Q(W1)·x + b1 group by group, test [lo_in, hi_in], write per-token flags and
   append the union's neuron indices to a compact list (block cumsum + one atomic per block).
2. `_up_kernel`: z partials for the listed neurons, each row of W1 split along d (fp32 partials).
3. `_down_kernel`: reduce partials, corr = flag·(act(z) − a·z − c), gather rows of W2ᵀ, fp32 atomic
   add into y32; the last program of each column block casts it into y, and the very last program
   resets the list count, so the next call starts from zero without a memset.

Kernel 1 comes in three sets (`DecodeLaunch(kernels=...)`): "v1" (tensor cores, any batch), "small"
(batch 1..4, no tl.dot, v2) and "plane" (batch 1..4, the default there: `_stacked_plane_kernel` reads
the plane-order layout of layout.py, so each x value a thread loads serves 4 rows; kernels 2–3 are v1's).

Dequantization: a code q is OR-ed into the mantissa of 1.0 (1 + q/2^bits, exact in bf16); per group
Σ w·x = s'·Σ v·x + (o − s')·Σx with s' = s·2^bits, so no int→float convert per weight. The plane
kernel's I8 option (int2) skips dequantization: `_xq_kernel` rounds x per token and group to int8, and
each int32 word of 16 codes meets its x bytes in four dp4a instructions (exact integer sums); per
group and row fp32 s·s_x·Σ code·q + o·Σ x (layout.predict_i8 is the reference).
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from tardis.kernels.blocks import (
    DOWN_BLOCK_COLS,
    DOWN_BLOCK_NEURONS,
    DOWN_EARLY,
    DOWN_FINISH,
    DOWN_WARPS,
    FINISH_BLOCK_COLS,
    FUSED_UPDOWN_BATCH,
    LIST_AHEAD,
    ONE_CLOSE,
    PDL_UPDOWN,
    PLANE_BATCH,
    PLANE_LAUNCH,
    PRED_ROWS,
    PROGRAMS_PER_SM,
    SMALL_BATCH,
    SMALL_GROUPS_PER_STEP,
    SMALL_MAX_BATCH,
    SMALL_UPDOWN_BATCH,
    SMALL_WARPS,
    TICKET_BLOCK_COLS,
    UP_BLOCK_K,
    UP_BLOCK_NEURONS,
    UP_IN_K1,
    UP_PF_W2,
    UP_SMALL_BLOCK_K,
    UP_SPIN,
    UP_SPIN_PROGRAMS_PER_SM,
    UP_SPIN_SLEEP_NS,
    UP_SPLITS,
    UP_STAGES,
    UP_WARPS,
    UPDOWN_BLOCK_COLS,
    UPDOWN_BLOCK_K,
    UPDOWN_BLOCK_NEURONS,
    UPDOWN_LAUNCH_KEYS,
    WF_BLOCK_K,
    WF_BLOCK_ROWS,
    WF_DOWN_FRAC,
    WF_MOVED_ROWS,
    WF_MOVED_SPLITS,
    WF_MOVED_STAGES,
    WF_UP_FRAC,
    XQ_PDL,
    Z_BLOCK_K,
    Z_MAXNREG,
    Z_ROWS,
    workspace_layout,
    workspace_size,
    zero_counters,
)
from tardis.kernels.layout import Int8X, TiledPredictor
from tardis.kernels.ptx import INTERPRET as _INTERPRET
from tardis.kernels.ptx import gdc_launch_dependents, gdc_wait, pdl_supported, round_half_even, stamp
from tardis.kernels.ptx import gpu_fence as _gpu_fence

# _union_rows_z's tile: union rows a step, columns a chunk (Triton reads a global only as a constexpr)
_Z_ROWS = tl.constexpr(Z_ROWS)
_Z_BLOCK_K = tl.constexpr(Z_BLOCK_K)
ACT_IDS = {"identity": 0, "relu": 1, "gelu": 2, "gelu_tanh": 3, "quick_gelu": 4}


@triton.jit
def _activation(z, ACT: tl.constexpr):
    if ACT == 1:
        r = tl.maximum(z, 0.0)
    elif ACT == 2:
        r = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    elif ACT == 3:
        u = 0.7978845608028654 * (z + 0.044715 * z * z * z)
        r = 0.5 * z * (1.0 + (2.0 / (1.0 + tl.exp(-2.0 * u)) - 1.0))
    elif ACT == 4:
        r = z / (1.0 + tl.exp(-1.702 * z))
    else:
        r = z
    return r


@triton.jit
def _pdl_wait(PDL: tl.constexpr, RELEASE_AFTER: tl.constexpr = False):
    # PDL: this grid was launched before the one it follows finished (programmatic dependent launch).
    # Let the next launch start early too, then wait here until the previous grid has finished and its
    # writes are visible: nothing written by it may be read before this. RELEASE_AFTER: let the next launch
    # start only after the wait (so it starts after the grid before this one has finished, too).
    if PDL:
        if not RELEASE_AFTER:
            gdc_launch_dependents()
        gdc_wait()
        if RELEASE_AFTER:
            gdc_launch_dependents()


@triton.jit
def _spin_until(ptr, target, FENCE: tl.constexpr, SLEEP_NS: tl.constexpr = 0):
    # poll a gpu-scope counter (volatile loads: L2, not a stale L1 line) until it reaches target, SLEEP_NS between
    # polls (GPU: FENCE); the fence after the last poll orders every later read after the writes released before
    # the counter's increments
    v = tl.load(ptr, volatile=True)
    while v < target:
        if FENCE and SLEEP_NS > 0:
            _nanosleep(v, SLEEP_NS)
        v = tl.load(ptr, volatile=True)
    if FENCE:
        _gpu_fence(v)


@triton.jit
def _nanosleep(v, NS: tl.constexpr):
    # back off about NS nanoseconds (v: any scalar, so the asm has an operand; not pure, so it stays)
    return tl.inline_asm_elementwise(
        f"nanosleep.u32 {NS};\n\tmov.u32 $0, 0;", "=r,r", [v], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def _signal_done(ptr, FENCE: tl.constexpr):
    # this program's writes (fence in every thread, then the CTA barrier) before one increment of the counter
    if FENCE:
        _gpu_fence(tl.program_id(0))
    tl.debug_barrier()
    tl.atomic_add(ptr, 1)


@triton.jit
def _count_step(cnt_ptr, pid, n_tokens):
    # the op's live counters [flagged, union, tokens, steps]: program 0 counts this step and its tokens (the
    # flags epilogues add the first two), so a decode step costs no counting kernels of its own
    if pid == 0:
        tl.atomic_add(cnt_ptr + 2, n_tokens, sem="relaxed")
        tl.atomic_add(cnt_ptr + 3, 1, sem="relaxed")


@triton.jit
def _trace_stamp(tr_ptr, pid, slot, gate):
    # DecodeLaunch.trace: program pid's row gets (globaltimer, clock64) at `slot` and `slot` + 8, read after `gate`
    g, c = stamp(gate)
    tl.store(tr_ptr + pid * 16 + slot, g)
    tl.store(tr_ptr + pid * 16 + slot + 8, c)


@triton.jit
def _trace_value(tr_ptr, pid, slot, v):
    # DecodeLaunch.trace: program pid's row gets the value v at `slot`
    tl.store(tr_ptr + pid * 16 + slot, v.to(tl.int64))


@triton.jit
def _stacked_kernel(
    x_ptr, wf_ptr, bf_ptr, qw_ptr, qs_ptr, qo_ptr, b1_ptr, lo_ptr, hi_ptr,
    y32_ptr, flags_ptr, idx_ptr, ws_ptr, cnt_ptr,
    N, D, F, F_PAD, N_GROUPS, n_wf_programs,
    BN: tl.constexpr, BITS: tl.constexpr, GS: tl.constexpr, WPG: tl.constexpr, PW: tl.constexpr,
    PWP: tl.constexpr, BM: tl.constexpr, BMF: tl.constexpr, BKF: tl.constexpr, DOT_PREC: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    _count_step(cnt_ptr, pid, N)
    toks = tl.arange(0, BN)
    tmask = toks < N
    if pid < n_wf_programs:
        rows_f = pid * BMF + tl.arange(0, BMF)
        rmask_f = rows_f < D
        acc_f = tl.zeros((BMF, BN), dtype=tl.float32)
        for k0_f in range(0, D, BKF):
            ks_f = k0_f + tl.arange(0, BKF)
            kmask_f = ks_f < D
            wmask_f = rmask_f[:, None] & kmask_f[None, :]
            w_f = tl.load(wf_ptr + rows_f[:, None] * D + ks_f[None, :], mask=wmask_f, other=0.0)
            xt_f = tl.load(x_ptr + toks[None, :] * D + ks_f[:, None], mask=kmask_f[:, None] & tmask[None, :], other=0.0)
            acc_f = tl.dot(w_f, xt_f, acc_f, input_precision=DOT_PREC)
        acc_f += tl.load(bf_ptr + rows_f, mask=rmask_f, other=0.0).to(tl.float32)[:, None]
        tl.store(y32_ptr + toks[None, :] * D + rows_f[:, None], acc_f, mask=rmask_f[:, None] & tmask[None, :])
    else:
        rb = pid - n_wf_programs
        rows = rb * BM + tl.arange(0, BM)
        rmask = rows < F
        wj = tl.arange(0, WPG)
        cc = tl.arange(0, PWP)
        kin = cc[None, :] * WPG + wj[:, None]  # [WPG, PWP] position inside the group (plane order)
        kvalid = (cc[None, :] < PW) & (kin < GS)
        shifts = cc * BITS
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for g in range(0, N_GROUPS):
            tile = qw_ptr + (rb * N_GROUPS + g) * (BM * WPG)
            wv = tl.load(tile + tl.arange(0, BM)[:, None] + wj[None, :] * BM)  # [BM, WPG] int32
            q = (wv[:, :, None] >> shifts[None, None, :]) & ((1 << BITS) - 1)
            v = ((q << (23 - BITS)) | 0x3F800000).to(tl.float32, bitcast=True).to(x_ptr.dtype.element_ty)
            v = tl.reshape(v, (BM, WPG * PWP))
            ks = g * GS + kin
            km = kvalid & (ks < D)
            xg = tl.load(
                x_ptr + toks[None, None, :] * D + ks[:, :, None], mask=km[:, :, None] & tmask[None, None, :], other=0.0
            )  # [WPG, PWP, BN]
            xsum = tl.sum(tl.sum(xg.to(tl.float32), axis=0), axis=0)  # [BN]
            dot = tl.dot(v, tl.reshape(xg, (WPG * PWP, BN)), input_precision=DOT_PREC)  # [BM, BN]
            s = tl.load(qs_ptr + g * F_PAD + rows).to(tl.float32) * (1 << BITS)
            o = tl.load(qo_ptr + g * F_PAD + rows).to(tl.float32)
            acc += s[:, None] * dot + (o - s)[:, None] * xsum[None, :]
        zhat = acc + tl.load(b1_ptr + rows, mask=rmask, other=0.0).to(tl.float32)[:, None]
        lo = tl.load(lo_ptr + rows, mask=rmask, other=0.0)
        hi = tl.load(hi_ptr + rows, mask=rmask, other=0.0)
        valid = rmask[:, None] & tmask[None, :]
        flag = ((zhat < lo[:, None]) | (zhat > hi[:, None])) & valid
        tl.store(flags_ptr + toks[None, :] * F + rows[:, None], flag.to(tl.int8), mask=valid)
        union = tl.max(flag.to(tl.int32), axis=1)  # [BM]
        cnt = tl.sum(union, axis=0)
        base = tl.atomic_add(ws_ptr, cnt, sem="relaxed")  # counts: the next kernel reads them
        pos = base + tl.cumsum(union, axis=0) - 1
        tl.store(idx_ptr + pos, rows, mask=union > 0)
        tl.atomic_add(cnt_ptr, tl.sum(tl.sum(flag.to(tl.int64), axis=1), axis=0), sem="relaxed")
        tl.atomic_add(cnt_ptr + 1, cnt.to(tl.int64), sem="relaxed")


@triton.jit
def _up_kernel(
    x_ptr, w1_ptr, idx_ptr, ws_ptr, zp_ptr, N, D, F, n_splits, chunk,
    BN: tl.constexpr, BJ: tl.constexpr, BK: tl.constexpr, DOT_PREC: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    _pdl_wait(PDL)
    count = tl.load(ws_ptr)
    n_items = tl.cdiv(count, BJ) * n_splits
    toks = tl.arange(0, BN)
    tmask = toks < N
    for item in range(pid, n_items, nprog):
        jb = item // n_splits
        sp = item % n_splits
        js = jb * BJ + tl.arange(0, BJ)
        jmask = js < count
        neur = tl.load(idx_ptr + js, mask=jmask, other=0)
        acc = tl.zeros((BJ, BN), dtype=tl.float32)
        for k0 in range(sp * chunk, tl.minimum(sp * chunk + chunk, D), BK):
            ks = k0 + tl.arange(0, BK)
            kmask = ks < D
            wmask = jmask[:, None] & kmask[None, :]
            w = tl.load(w1_ptr + neur[:, None].to(tl.int64) * D + ks[None, :], mask=wmask, other=0.0)
            xt = tl.load(x_ptr + toks[None, :] * D + ks[:, None], mask=kmask[:, None] & tmask[None, :], other=0.0)
            acc = tl.dot(w, xt, acc, input_precision=DOT_PREC)
        # token-major partials [split, token, list position]: only the N real tokens are written and read
        tl.store(zp_ptr + (sp * BN + toks[None, :]) * F + js[:, None], acc, mask=jmask[:, None] & tmask[None, :])


@triton.jit
def _down_kernel(
    w2t_ptr, b1_ptr, slope_ptr, icpt_ptr, flags_ptr, idx_ptr, ws_ptr, zp_ptr, y32_ptr, y_ptr,
    N, D, F, n_splits, n_cols,
    BN: tl.constexpr, BJ: tl.constexpr, BC: tl.constexpr, ACT: tl.constexpr, FENCE: tl.constexpr,
    DOT_PREC: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    _pdl_wait(PDL)
    count = tl.load(ws_ptr)
    n_jb = tl.maximum(tl.cdiv(count, BJ), 1)
    n_items = n_jb * n_cols
    toks = tl.arange(0, BN)
    tmask = toks < N
    for item in range(pid, n_items, nprog):
        jb = item // n_cols
        cb = item % n_cols
        js = jb * BJ + tl.arange(0, BJ)
        jmask = js < count
        neur = tl.load(idx_ptr + js, mask=jmask, other=0)
        z = tl.zeros((BJ, BN), dtype=tl.float32)
        zmask = jmask[:, None] & tmask[None, :]
        for sp in range(0, n_splits):
            z += tl.load(zp_ptr + (sp * BN + toks[None, :]) * F + js[:, None], mask=zmask, other=0.0)
        z += tl.load(b1_ptr + neur, mask=jmask, other=0.0).to(tl.float32)[:, None]
        a = tl.load(slope_ptr + neur, mask=jmask, other=0.0)
        c = tl.load(icpt_ptr + neur, mask=jmask, other=0.0)
        fl = tl.load(flags_ptr + toks[None, :] * F + neur[:, None], mask=jmask[:, None] & tmask[None, :], other=0)
        corr = tl.where(fl != 0, _activation(z, ACT) - a[:, None] * z - c[:, None], 0.0)
        cols = cb * BC + tl.arange(0, BC)
        cmask = cols < D
        w2mask = jmask[:, None] & cmask[None, :]
        w2 = tl.load(w2t_ptr + neur[:, None].to(tl.int64) * D + cols[None, :], mask=w2mask, other=0.0)
        part = tl.dot(tl.trans(corr.to(w2.dtype)), w2, input_precision=DOT_PREC)  # [BN, BC]
        omask = tmask[:, None] & cmask[None, :]
        tl.atomic_add(y32_ptr + toks[:, None] * D + cols[None, :], part, mask=omask & (count > 0), sem="relaxed")
        if FENCE:
            _gpu_fence(count)  # this thread's adds visible at gpu scope (one fence, not one per atomic)
        tl.debug_barrier()  # ... for every thread, before the ticket
        ticket = tl.atomic_add(ws_ptr + 2 + cb, 1)
        if ticket == n_jb - 1:  # last item of this column block: cast it out
            yv = tl.load(y32_ptr + toks[:, None] * D + cols[None, :], mask=omask, cache_modifier=".cg")
            tl.store(y_ptr + toks[:, None] * D + cols[None, :], yv.to(y_ptr.dtype.element_ty), mask=omask)
            tl.store(ws_ptr + 2 + cb, 0)
        _close_item(ws_ptr, n_items)


@triton.jit
def _wf_tile(wf_ptr, rows_f, rmask_f, k0_f, D, BKF: tl.constexpr):
    ks_f = k0_f + tl.arange(0, BKF)
    return tl.load(wf_ptr + rows_f[:, None] * D + ks_f[None, :], mask=rmask_f[:, None] & (ks_f < D)[None, :], other=0.0)


@triton.jit
def _fma_tokens(a0, a1, a2, a3, w, x_ptr, ks, km, D, NT: tl.constexpr):
    # a_t += w [rows, K] · x[t, ks] (broadcast over rows) for each of the NT tokens, fp32
    a0 += w * tl.load(x_ptr + ks, mask=km, other=0.0).to(tl.float32)[None, :]
    if NT > 1:
        a1 += w * tl.load(x_ptr + D + ks, mask=km, other=0.0).to(tl.float32)[None, :]
    if NT > 2:
        a2 += w * tl.load(x_ptr + 2 * D + ks, mask=km, other=0.0).to(tl.float32)[None, :]
    if NT > 3:
        a3 += w * tl.load(x_ptr + 3 * D + ks, mask=km, other=0.0).to(tl.float32)[None, :]
    return a0, a1, a2, a3


@triton.jit
def _wf_small_part(
    x_ptr, wf_ptr, bf_ptr, y32_ptr, pid, D, NT: tl.constexpr, BMF: tl.constexpr, BKF: tl.constexpr,
    WPF: tl.constexpr = False, WS: tl.constexpr = 0,
):  # fmt: skip
    # Folded rows y32[:, rows] = Wf[rows]·x + bf without tl.dot: [BMF, BKF] fp32 FMA tiles per token.
    # WPF: the next step's Wf tile is loaded before this step's FMAs (two tiles in flight per program).
    # WS > 1: Triton's software pipeline instead (cp.async into WS - 1 shared-memory stages ahead).
    rows_f = pid * BMF + tl.arange(0, BMF)
    rmask_f = rows_f < D
    fa0 = tl.zeros((BMF, BKF), dtype=tl.float32)
    fa1 = tl.zeros((BMF, BKF), dtype=tl.float32)
    fa2 = tl.zeros((BMF, BKF), dtype=tl.float32)
    fa3 = tl.zeros((BMF, BKF), dtype=tl.float32)
    if WS > 1:
        for k0_f in tl.range(0, D, BKF, num_stages=WS):
            ks_f = k0_f + tl.arange(0, BKF)
            kmask_f = ks_f < D
            w_f = _wf_tile(wf_ptr, rows_f, rmask_f, k0_f, D, BKF)
            fa0, fa1, fa2, fa3 = _fma_tokens(fa0, fa1, fa2, fa3, w_f.to(tl.float32), x_ptr, ks_f, kmask_f, D, NT)
    else:
        if WPF:
            w_next = _wf_tile(wf_ptr, rows_f, rmask_f, 0, D, BKF)
        for k0_f in range(0, D, BKF):
            ks_f = k0_f + tl.arange(0, BKF)
            kmask_f = ks_f < D
            if WPF:
                w_f = w_next
                w_next = _wf_tile(wf_ptr, rows_f, rmask_f, k0_f + BKF, D, BKF)
            else:
                w_f = _wf_tile(wf_ptr, rows_f, rmask_f, k0_f, D, BKF)
            fa0, fa1, fa2, fa3 = _fma_tokens(fa0, fa1, fa2, fa3, w_f.to(tl.float32), x_ptr, ks_f, kmask_f, D, NT)
    bias_f = tl.load(bf_ptr + rows_f, mask=rmask_f, other=0.0).to(tl.float32)
    tl.store(y32_ptr + rows_f, tl.sum(fa0, axis=1) + bias_f, mask=rmask_f)
    if NT > 1:
        tl.store(y32_ptr + D + rows_f, tl.sum(fa1, axis=1) + bias_f, mask=rmask_f)
    if NT > 2:
        tl.store(y32_ptr + 2 * D + rows_f, tl.sum(fa2, axis=1) + bias_f, mask=rmask_f)
    if NT > 3:
        tl.store(y32_ptr + 3 * D + rows_f, tl.sum(fa3, axis=1) + bias_f, mask=rmask_f)


@triton.jit
def _wf_tile_add(
    x_ptr, wf_ptr, bf_ptr, y32_ptr, tile, rb0, n_ks, kc, D,
    NT: tl.constexpr, MB: tl.constexpr, BKF: tl.constexpr, WS: tl.constexpr, WAIT: tl.constexpr,
):  # fmt: skip
    # One tile of folded rows (kernel 1's Wf part with WK > 1, or rows moved into the up / down grids): MB rows
    # from row block rb0 on, one of n_ks chunks of kc steps of BKF columns (a few pipelined steps, so a tile is
    # short; chunks start at multiples of BKF, so the loads stay 16-byte cp.async), added into y32, whose rows an
    # earlier grid zeroed; the first chunk adds bf. WAIT: the adds wait for the grid this one follows (PDL), so
    # none lands before the rows were zeroed; the loads stream in before.
    rows_f = (rb0 + tile // n_ks) * MB + tl.arange(0, MB)
    rmask_f = rows_f < D
    k_lo = (tile % n_ks) * kc * BKF
    fa0 = tl.zeros((MB, BKF), dtype=tl.float32)
    fa1 = tl.zeros((MB, BKF), dtype=tl.float32)
    fa2 = tl.zeros((MB, BKF), dtype=tl.float32)
    fa3 = tl.zeros((MB, BKF), dtype=tl.float32)
    k_hi = tl.minimum(k_lo + kc * BKF, D)
    if WS > 1:
        for k0_f in tl.range(k_lo, k_hi, BKF, num_stages=WS):
            ks_f = k0_f + tl.arange(0, BKF)
            w_f = _wf_tile(wf_ptr, rows_f, rmask_f, k0_f, D, BKF)
            fa0, fa1, fa2, fa3 = _fma_tokens(fa0, fa1, fa2, fa3, w_f.to(tl.float32), x_ptr, ks_f, ks_f < D, D, NT)
    else:
        for k0_f in range(k_lo, k_hi, BKF):
            ks_f = k0_f + tl.arange(0, BKF)
            w_f = _wf_tile(wf_ptr, rows_f, rmask_f, k0_f, D, BKF)
            fa0, fa1, fa2, fa3 = _fma_tokens(fa0, fa1, fa2, fa3, w_f.to(tl.float32), x_ptr, ks_f, ks_f < D, D, NT)
    bias_f = tl.load(bf_ptr + rows_f, mask=rmask_f & (k_lo == 0), other=0.0).to(tl.float32)
    if WAIT:
        gdc_wait()
    tl.atomic_add(y32_ptr + rows_f, tl.sum(fa0, axis=1) + bias_f, mask=rmask_f, sem="relaxed")
    if NT > 1:
        tl.atomic_add(y32_ptr + D + rows_f, tl.sum(fa1, axis=1) + bias_f, mask=rmask_f, sem="relaxed")
    if NT > 2:
        tl.atomic_add(y32_ptr + 2 * D + rows_f, tl.sum(fa2, axis=1) + bias_f, mask=rmask_f, sem="relaxed")
    if NT > 3:
        tl.atomic_add(y32_ptr + 3 * D + rows_f, tl.sum(fa3, axis=1) + bias_f, mask=rmask_f, sem="relaxed")


@triton.jit
def _zero_rows(y32_ptr, r0, D, pid, nprog, NT: tl.constexpr):
    # y32[:, r0:D] = 0, spread over the grid: the folded rows the up / down kernels' grids add into
    for start in range(r0 + pid * 64, D, nprog * 64):
        rr = start + tl.arange(0, 64)
        for t in tl.static_range(NT):
            tl.store(y32_ptr + t * D + rr, tl.zeros((64,), dtype=tl.float32), mask=rr < D)


@triton.jit
def _wf_in_block(cb, cb0, n_ks, D, BC: tl.constexpr, MB: tl.constexpr):
    # folded-row tiles of the down grid in column block cb (blocks cb0.. are theirs; MB divides BC)
    return tl.where(cb >= cb0, tl.cdiv(tl.minimum(D - cb * BC, BC), MB) * n_ks, 0)


@triton.jit
def _flags_epilogue(
    s0, s1, s2, s3, rows, rmask, b1_ptr, lo_ptr, hi_ptr, flags_ptr, idx_ptr, ws_ptr, cnt_ptr, F,
    NT: tl.constexpr, x_ptr=None, w1_ptr=None, zp_ptr=None, D=0, UPK1: tl.constexpr = False,
    NKZ: tl.constexpr = 1,
):  # fmt: skip
    # ẑ = s + b1 per token (rows [BM]): flags, the union's indices appended to the list, the counts.
    # UPK1: then the union rows' exact z (the up kernel's work, _union_rows_z).
    b1 = tl.load(b1_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
    lo = tl.load(lo_ptr + rows, mask=rmask, other=0.0)
    hi = tl.load(hi_ptr + rows, mask=rmask, other=0.0)
    z0 = s0 + b1
    f0 = ((z0 < lo) | (z0 > hi)) & rmask
    tl.store(flags_ptr + rows, f0.to(tl.int8), mask=rmask)
    union = f0.to(tl.int32)
    nfl = union
    if NT > 1:
        z1 = s1 + b1
        f1 = ((z1 < lo) | (z1 > hi)) & rmask
        tl.store(flags_ptr + F + rows, f1.to(tl.int8), mask=rmask)
        union = union | f1.to(tl.int32)
        nfl += f1.to(tl.int32)
    if NT > 2:
        z2 = s2 + b1
        f2 = ((z2 < lo) | (z2 > hi)) & rmask
        tl.store(flags_ptr + 2 * F + rows, f2.to(tl.int8), mask=rmask)
        union = union | f2.to(tl.int32)
        nfl += f2.to(tl.int32)
    if NT > 3:
        z3 = s3 + b1
        f3 = ((z3 < lo) | (z3 > hi)) & rmask
        tl.store(flags_ptr + 3 * F + rows, f3.to(tl.int8), mask=rmask)
        union = union | f3.to(tl.int32)
        nfl += f3.to(tl.int32)
    cnt = tl.sum(union, axis=0)
    base = tl.atomic_add(ws_ptr, cnt, sem="relaxed")  # counts only: kernels 2-3 read them after this launch
    pos = base + tl.cumsum(union, axis=0) - 1
    tl.store(idx_ptr + pos, rows, mask=union > 0)
    tl.atomic_add(cnt_ptr, tl.sum(nfl, axis=0).to(tl.int64), sem="relaxed")
    tl.atomic_add(cnt_ptr + 1, cnt.to(tl.int64), sem="relaxed")
    if UPK1:
        _union_rows_z(union, rows, base, cnt, x_ptr, w1_ptr, zp_ptr, D, F, NT, NKZ)


@triton.jit
def _store_row_sums(zrow, a0, a1, a2, a3, mask, F, NT: tl.constexpr):
    # token t's row sums of its [rows, K] products at zrow + t·F (the up kernel's partials, UP_IN_K1's z); returns
    # token 0's
    z0 = tl.sum(a0, axis=1)
    tl.store(zrow, z0, mask=mask)
    if NT > 1:
        tl.store(zrow + F, tl.sum(a1, axis=1), mask=mask)
    if NT > 2:
        tl.store(zrow + 2 * F, tl.sum(a2, axis=1), mask=mask)
    if NT > 3:
        tl.store(zrow + 3 * F, tl.sum(a3, axis=1), mask=mask)
    return z0


@triton.jit
def _union_rows_z(
    union, rows, base, cnt, x_ptr, w1_ptr, zp_ptr, D, F, NT: tl.constexpr, NKZ: tl.constexpr,
):  # fmt: skip
    # UP_IN_K1: the tile's union rows, _Z_ROWS at a time (slot j: the row whose running count is j + 1; its list
    # position is base + j): their exact z = W1[row]·x_t in fp32, stored where the up kernel would put its one
    # split's partial (zp[t, base + j]), so no up kernel runs.
    lpos = tl.cumsum(union, axis=0) - 1
    for j0 in range(0, cnt, _Z_ROWS):
        jj = j0 + tl.arange(0, _Z_ROWS)
        jm = jj < cnt
        sel = (lpos[None, :] == jj[:, None]) & (union[None, :] > 0)
        neur = tl.sum(tl.where(sel, rows[None, :], 0), axis=1)  # [_Z_ROWS]
        roff = neur.to(tl.int64)[:, None] * D
        a0 = tl.zeros((_Z_ROWS, _Z_BLOCK_K), dtype=tl.float32)
        a1 = tl.zeros((_Z_ROWS, _Z_BLOCK_K), dtype=tl.float32)
        a2 = tl.zeros((_Z_ROWS, _Z_BLOCK_K), dtype=tl.float32)
        a3 = tl.zeros((_Z_ROWS, _Z_BLOCK_K), dtype=tl.float32)
        for c in tl.static_range(NKZ):  # unrolled: every chunk's loads may be in flight together
            ks = c * _Z_BLOCK_K + tl.arange(0, _Z_BLOCK_K)
            km = ks < D
            w = tl.load(w1_ptr + roff + ks[None, :], mask=jm[:, None] & km[None, :], other=0.0).to(tl.float32)
            a0, a1, a2, a3 = _fma_tokens(a0, a1, a2, a3, w, x_ptr, ks, km, D, NT)
        _store_row_sums(zp_ptr + base + jj, a0, a1, a2, a3, jm, F, NT)


@triton.jit
def _stacked_small_kernel(
    x_ptr, wf_ptr, bf_ptr, qw_ptr, qs_ptr, qo_ptr, b1_ptr, lo_ptr, hi_ptr,
    y32_ptr, flags_ptr, idx_ptr, ws_ptr, cnt_ptr,
    D, F, F_PAD, N_GROUPS, n_wf_programs,
    NT: tl.constexpr, BITS: tl.constexpr, GS: tl.constexpr, WPG: tl.constexpr, PW: tl.constexpr,
    BM: tl.constexpr, BMF: tl.constexpr, BKF: tl.constexpr, GU: tl.constexpr,
):  # fmt: skip
    # Batch 1..4 (NT tokens exactly): no tl.dot. Every product is an elementwise fp32 FMA into a
    # per-thread accumulator tile, reduced once at the end of the program.
    pid = tl.program_id(0)
    _count_step(cnt_ptr, pid, NT)
    if pid < n_wf_programs:
        _wf_small_part(x_ptr, wf_ptr, bf_ptr, y32_ptr, pid, D, NT, BMF, BKF)
    else:
        rb = pid - n_wf_programs
        rows = rb * BM + tl.arange(0, BM)
        rmask = rows < F
        uu = tl.arange(0, GU)[:, None, None]
        mm = tl.arange(0, BM)[None, :, None]
        jj = tl.arange(0, WPG)[None, None, :]
        woff = uu * (BM * WPG) + jj * BM + mm  # GU consecutive (row block, group) tiles: contiguous
        tile0 = qw_ptr + rb * N_GROUPS * (BM * WPG)
        MANT: tl.constexpr = ((1 << BITS) - 1) << (23 - BITS)
        a0 = tl.zeros((GU, BM, WPG), dtype=tl.float32)
        a1 = tl.zeros((GU, BM, WPG), dtype=tl.float32)
        a2 = tl.zeros((GU, BM, WPG), dtype=tl.float32)
        a3 = tl.zeros((GU, BM, WPG), dtype=tl.float32)
        for g0 in range(0, N_GROUPS, GU):
            gv = g0 + tl.arange(0, GU)
            gmask = gv < N_GROUPS
            wv = tl.load(tile0 + g0 * (BM * WPG) + woff, mask=gmask[:, None, None], other=0)  # [GU, BM, WPG]
            soff = gv[:, None] * F_PAD + rows[None, :]
            s = tl.load(qs_ptr + soff, mask=gmask[:, None], other=0.0).to(tl.float32) * (1 << BITS)
            o = tl.load(qo_ptr + soff, mask=gmask[:, None], other=0.0).to(tl.float32) - s  # [GU, BM]
            kbase = gv[:, None, None] * GS + jj  # [GU, 1, WPG]
            p0 = tl.zeros((GU, BM, WPG), dtype=tl.float32)
            p1 = tl.zeros((GU, BM, WPG), dtype=tl.float32)
            p2 = tl.zeros((GU, BM, WPG), dtype=tl.float32)
            p3 = tl.zeros((GU, BM, WPG), dtype=tl.float32)
            xs0 = tl.zeros((GU, 1, WPG), dtype=tl.float32)
            xs1 = tl.zeros((GU, 1, WPG), dtype=tl.float32)
            xs2 = tl.zeros((GU, 1, WPG), dtype=tl.float32)
            xs3 = tl.zeros((GU, 1, WPG), dtype=tl.float32)
            for c in tl.static_range(PW):
                k = kbase + c * WPG  # code c of word j is column c·WPG + j of the group (plane order)
                km = (k < D) & (jj + c * WPG < GS) & gmask[:, None, None]
                # code c of each word into the mantissa of 1.0: one shift and one and-or (lop3)
                if 23 - BITS - c * BITS >= 0:  # noqa: SIM108 (a constexpr branch)
                    t = wv << (23 - BITS - c * BITS)
                else:
                    t = wv >> (c * BITS - 23 + BITS)
                v = ((t & MANT) | 0x3F800000).to(tl.float32, bitcast=True)  # 1 + q / 2^BITS
                xc0 = tl.load(x_ptr + k, mask=km, other=0.0).to(tl.float32)
                p0 += v * xc0
                xs0 += xc0
                if NT > 1:
                    xc1 = tl.load(x_ptr + D + k, mask=km, other=0.0).to(tl.float32)
                    p1 += v * xc1
                    xs1 += xc1
                if NT > 2:
                    xc2 = tl.load(x_ptr + 2 * D + k, mask=km, other=0.0).to(tl.float32)
                    p2 += v * xc2
                    xs2 += xc2
                if NT > 3:
                    xc3 = tl.load(x_ptr + 3 * D + k, mask=km, other=0.0).to(tl.float32)
                    p3 += v * xc3
                    xs3 += xc3
            # per word: s'·Σ v·x + (o − s')·Σ x; the words are summed once, after the loop
            a0 += s[:, :, None] * p0 + o[:, :, None] * xs0
            if NT > 1:
                a1 += s[:, :, None] * p1 + o[:, :, None] * xs1
            if NT > 2:
                a2 += s[:, :, None] * p2 + o[:, :, None] * xs2
            if NT > 3:
                a3 += s[:, :, None] * p3 + o[:, :, None] * xs3
        s0 = tl.sum(tl.sum(a0, axis=2), axis=0)
        s1 = tl.sum(tl.sum(a1, axis=2), axis=0)
        s2 = tl.sum(tl.sum(a2, axis=2), axis=0)
        s3 = tl.sum(tl.sum(a3, axis=2), axis=0)
        _flags_epilogue(
            s0, s1, s2, s3, rows, rmask, b1_ptr, lo_ptr, hi_ptr, flags_ptr, idx_ptr, ws_ptr, cnt_ptr,
            F, NT,
        )  # fmt: skip


@triton.jit
def _x_plane(ptrs, km, MASKED: tl.constexpr, PL: tl.constexpr, WPG: tl.constexpr, GS: tl.constexpr):
    # x values of code plane PL: masked in the tail group, and where the plane runs past the group
    if MASKED or (PL + 1) * WPG > GS:  # noqa: SIM108 (a constexpr branch)
        xv = tl.load(ptrs, mask=km, other=0.0)
    else:
        xv = tl.load(ptrs)
    return xv.to(tl.float32)[None, :, None]


@triton.jit
def _plane_load(qw_ptr, qs_ptr, qo_ptr, g, woff, soff, tmask, N_GROUPS, F_PAD, WPG: tl.constexpr, BR: tl.constexpr):
    # one group's words [T, WPG, BR] and fp16 scales/offsets [T, 1, BR] (zero past the last group)
    m = tmask & (g < N_GROUPS)
    wv = tl.load(qw_ptr + woff + g * (WPG * BR), mask=m, other=0)
    sc = tl.load(qs_ptr + g * F_PAD + soff, mask=m, other=0.0)
    oc = tl.load(qo_ptr + g * F_PAD + soff, mask=m, other=0.0)
    return wv, sc, oc


@triton.jit
def _plane_group(
    a0, a1, a2, a3, wv, sc, oc, x_ptr, g, D, ONE_BITS,
    NT: tl.constexpr, BITS: tl.constexpr, GS: tl.constexpr, WPG: tl.constexpr, NPL: tl.constexpr,
    MASKED: tl.constexpr,
):  # fmt: skip
    # One group of a program's [T, WPG, BR] word tile (row tile t, word position j, row m). Code plane
    # p of word j is column p·WPG + j of the group, so plane p multiplies the contiguous slice
    # x[g·GS + p·WPG + j]; a thread holds the same j of several rows, so one x value (a load, a
    # convert) serves them all. Per weight: one shift, one and-or into 1.0's mantissa (a single lop3:
    # ONE_BITS = 1.0's bits is a kernel argument, so it sits in a register), one FMA per token.
    sc = sc.to(tl.float32) * (1 << BITS)
    oc = oc.to(tl.float32) - sc
    jj = tl.arange(0, WPG)
    kg = g * GS + jj  # [WPG]
    MANT: tl.constexpr = ((1 << BITS) - 1) << (23 - BITS)
    p0 = tl.zeros(wv.shape, dtype=tl.float32)
    p1 = tl.zeros(wv.shape, dtype=tl.float32)
    p2 = tl.zeros(wv.shape, dtype=tl.float32)
    p3 = tl.zeros(wv.shape, dtype=tl.float32)
    xs0 = tl.zeros((1, WPG, 1), dtype=tl.float32)
    xs1 = tl.zeros((1, WPG, 1), dtype=tl.float32)
    xs2 = tl.zeros((1, WPG, 1), dtype=tl.float32)
    xs3 = tl.zeros((1, WPG, 1), dtype=tl.float32)
    for pl in tl.static_range(NPL):
        k = kg + pl * WPG
        km = k < D  # only used where a mask is needed
        if (pl + 1) * WPG > GS:
            km = km & (pl * WPG + jj < GS)
        if 23 - BITS - pl * BITS >= 0:  # noqa: SIM108 (a constexpr branch)
            t = wv << (23 - BITS - pl * BITS)
        else:
            t = wv >> (pl * BITS - 23 + BITS)
        v = ((t & MANT) | ONE_BITS).to(tl.float32, bitcast=True)  # 1 + q / 2^BITS
        xv0 = _x_plane(x_ptr + k, km, MASKED, pl, WPG, GS)
        p0 += v * xv0
        xs0 += xv0
        if NT > 1:
            xv1 = _x_plane(x_ptr + D + k, km, MASKED, pl, WPG, GS)
            p1 += v * xv1
            xs1 += xv1
        if NT > 2:
            xv2 = _x_plane(x_ptr + 2 * D + k, km, MASKED, pl, WPG, GS)
            p2 += v * xv2
            xs2 += xv2
        if NT > 3:
            xv3 = _x_plane(x_ptr + 3 * D + k, km, MASKED, pl, WPG, GS)
            p3 += v * xv3
            xs3 += xv3
    # per word: s'·Σ v·x + (o − s')·Σ x; words are summed once, after the last group
    a0 += sc * p0 + oc * xs0
    if NT > 1:
        a1 += sc * p1 + oc * xs1
    if NT > 2:
        a2 += sc * p2 + oc * xs2
    if NT > 3:
        a3 += sc * p3 + oc * xs3
    return a0, a1, a2, a3


def _h2_group_asm(wpg: int, x_fp16: bool) -> str:
    # One group of int2 codes for 4 words of a thread (pack = 4: 4 rows, one word position j), two codes
    # per fp16x2 instruction. Operands: $0-$3 out (fp32 bits: s·Σ code·x + o·Σ x per word), $4-$7 the
    # words, $8-$11 &x[g·GS + j] (only $8 is read: the 4 rows share j), $12 half2 (1024, 1024),
    # $16-$19 scales, $20-$23 offsets (fp32 bits). Code plane s of a word sits at bits 2s and multiplies
    # x[g·GS + s·wpg + j]; (w >> 2s) & 0x00030003 | 0x6400_6400 is the half2 (1024 + code_s,
    # 1024 + code_{s+8}), minus 1024 the codes exactly; the paired FMA takes the half2 (x_s, x_{s+8}).
    # Sums run in fp16 over one word's 16 codes, then in fp32. x is loaded once per thread and group.
    lines = ["{", ".reg .b32 t, c, a, xs, p<8>;", ".reg .b16 l, h, xv<16>;", ".reg .f32 fl, fh, fx, r, xf<16>;"]
    lines += [f"ld.global.nc.b16 xv{s}, [$8+{2 * s * wpg}];" for s in range(16)]
    if x_fp16:
        lines += [f"mov.b32 p{s}, {{xv{s}, xv{s + 8}}};" for s in range(8)]
    else:  # bf16 → fp32 → half2 (round to nearest)
        lines += [f"cvt.f32.bf16 xf{s}, xv{s};" for s in range(16)]
        lines += [f"cvt.rn.f16x2.f32 p{s}, xf{s + 8}, xf{s};" for s in range(8)]
    lines += ["add.rn.f16x2 xs, p0, p1;"] + [f"add.rn.f16x2 xs, xs, p{s};" for s in range(2, 8)]
    lines += ["mov.b32 {l, h}, xs;", "cvt.f32.f16 fl, l;", "cvt.f32.f16 fh, h;", "add.f32 fx, fl, fh;"]
    for e in range(4):
        w = f"${4 + e}"
        for s in range(8):
            src = w
            if s:
                lines.append(f"shr.u32 t, {w}, {2 * s};")
                src = "t"
            lines.append(f"lop3.b32 c, {src}, 0x00030003, $12, 0xea;")
            lines.append("sub.rn.f16x2 c, c, $12;")
            lines.append(f"mul.rn.f16x2 a, c, p{s};" if s == 0 else f"fma.rn.f16x2 a, c, p{s}, a;")
        lines += ["mov.b32 {l, h}, a;", "cvt.f32.f16 fl, l;", "cvt.f32.f16 fh, h;", "add.f32 r, fl, fh;"]
        lines += [f"mul.f32 r, r, ${16 + e};", f"fma.rn.f32 r, ${20 + e}, fx, r;", f"mov.b32 ${e}, r;"]
    lines.append("}")
    return "\n\t".join(lines)


H2_ASM_4_BF16: tl.constexpr = tl.constexpr(_h2_group_asm(4, False))
H2_ASM_8_BF16: tl.constexpr = tl.constexpr(_h2_group_asm(8, False))
H2_ASM_4_F16: tl.constexpr = tl.constexpr(_h2_group_asm(4, True))
H2_ASM_8_F16: tl.constexpr = tl.constexpr(_h2_group_asm(8, True))
H2_CONSTRAINTS: tl.constexpr = tl.constexpr(",".join(["=r"] * 4 + ["r"] * 4 + ["l"] * 4 + ["r"] * 12))
H2_MAGIC = 0x64006400  # half2 (1024, 1024)
H2_WPG = (4, 8)  # words per group the fp16x2 path takes (int2 groups of 64 or 128 codes)


@triton.jit
def _h2_group(wv, xptrs, magic, sc, oc, WPG: tl.constexpr, X_FP16: tl.constexpr):
    # fp32 s·Σ code·x + o·Σ x of each int2 word [T, WPG, BR] (see _h2_group_asm); sc, oc fp32 [T, WPG, BR]
    args = [wv, xptrs, magic, sc.to(tl.int32, bitcast=True), oc.to(tl.int32, bitcast=True)]
    if WPG == 4:
        if X_FP16:
            r = tl.inline_asm_elementwise(H2_ASM_4_F16, H2_CONSTRAINTS, args, dtype=tl.int32, is_pure=True, pack=4)
        else:
            r = tl.inline_asm_elementwise(H2_ASM_4_BF16, H2_CONSTRAINTS, args, dtype=tl.int32, is_pure=True, pack=4)
    else:
        if X_FP16:
            r = tl.inline_asm_elementwise(H2_ASM_8_F16, H2_CONSTRAINTS, args, dtype=tl.int32, is_pure=True, pack=4)
        else:
            r = tl.inline_asm_elementwise(H2_ASM_8_BF16, H2_CONSTRAINTS, args, dtype=tl.int32, is_pure=True, pack=4)
    return r.to(tl.float32, bitcast=True)


@triton.jit
def _plane_group_h2(
    a0, a1, a2, a3, wv, sc, oc, x_ptr, g, D, magic,
    NT: tl.constexpr, GS: tl.constexpr, WPG: tl.constexpr, X_FP16: tl.constexpr,
):  # fmt: skip
    # _plane_group for a full int2 group of 16 code planes, two codes per fp16x2 instruction (H2)
    zw = tl.zeros_like(wv)
    zf = tl.zeros(wv.shape, dtype=tl.float32)
    scb = zf + sc.to(tl.float32)
    ocb = zf + oc.to(tl.float32)
    mg = zw + magic
    xp = x_ptr + (g * GS + tl.arange(0, WPG)[None, :, None] + zw)
    a0 += _h2_group(wv, xp, mg, scb, ocb, WPG, X_FP16)
    if NT > 1:
        a1 += _h2_group(wv, xp + D, mg, scb, ocb, WPG, X_FP16)
    if NT > 2:
        a2 += _h2_group(wv, xp + 2 * D, mg, scb, ocb, WPG, X_FP16)
    if NT > 3:
        a3 += _h2_group(wv, xp + 3 * D, mg, scb, ocb, WPG, X_FP16)
    return a0, a1, a2, a3


@triton.jit
def _xq_kernel(
    x_ptr, xq_ptr, xsx_ptr, xsum_ptr, D, N_GROUPS, GS: tl.constexpr, WPG: tl.constexpr, ASM: tl.constexpr,
    PDL: tl.constexpr = False, y32_ptr=None, n_zero=0, ZERO: tl.constexpr = False, ws_ptr=None,
    RESET: tl.constexpr = False,
):  # fmt: skip
    # I8: one (token, group) of x rounded to int8 by the group's absmax and packed for dp4a. Code plane
    # s = 4b + k of word j multiplies column s·WPG + j, so int32 word (j, k) holds in byte b the int8 of
    # column (4b + k)·WPG + j. Also s_x = absmax / 127 and Σ x over each word's 16 columns (fp32).
    # Rounding as layout.quantize_x_i8: IEEE division (div_rn, not the fast approximate one), an fp32
    # product, then round half to even. PDL: kernel 1 (launched with XQW) may start at once; its predictor
    # programs wait for this grid. ZERO: y32 (n_zero floats) is zeroed too, spread over the grid, for kernel 1's
    # Wf tiles (WK > 1) to add into. RESET (DecodeLaunch.reset_first): program 0 zeroes the list count and the
    # items-done counter first, which a call without the finish kernel (out32) left as they were; kernel 1's
    # predictor programs, their only writers, wait for this grid's end.
    if PDL:
        gdc_launch_dependents()
    pid = tl.program_id(0)
    if RESET and pid == 0:
        _reset_list(ws_ptr, None, False)
    if ZERO:
        _zero_rows(y32_ptr, 0, n_zero, pid, tl.num_programs(0), 1)
    t = pid // N_GROUPS
    g = pid % N_GROUPS
    jj = tl.arange(0, WPG)[:, None, None]
    kk = tl.arange(0, 4)[None, :, None]
    bb = tl.arange(0, 4)[None, None, :]
    col = g * GS + (4 * bb + kk) * WPG + jj  # [WPG, 4, 4]
    xv = tl.load(x_ptr + t * D + col, mask=col < D, other=0.0).to(tl.float32)
    amax = tl.max(tl.reshape(tl.abs(xv), (WPG * 16,)), axis=0)
    inv = tl.where(amax > 0, tl.math.div_rn(tl.full((), 127.0, tl.float32), amax), 0.0)
    q = round_half_even(xv * inv, ASM).to(tl.int32)  # |q| ≤ 127
    words = tl.sum((q & 255) << (8 * bb), axis=2)  # [WPG, 4]: disjoint bytes, so the sum is their OR
    base = (t * N_GROUPS + g) * WPG
    jk = tl.arange(0, WPG)[:, None] * 4 + tl.arange(0, 4)[None, :]
    tl.store(xq_ptr + base * 4 + jk, words)
    tl.store(xsx_ptr + t * N_GROUPS + g, tl.math.div_rn(amax, tl.full((), 127.0, tl.float32)))
    tl.store(xsum_ptr + base + tl.arange(0, WPG), tl.sum(tl.sum(xv, axis=2), axis=1))


# Σ code·q over one int2 word's 16 codes: bits 2k of byte b against byte b of x word k (dp4a, exact)
I8_DP4A_ASM: tl.constexpr = tl.constexpr(
    "{\n\t.reg .b32 t, a;\n\tand.b32 t, $1, 0x03030303;\n\tmov.b32 a, 0;\n\tdp4a.s32.s32 a, t, $2, a;"
    + "".join(
        f"\n\tshr.u32 t, $1, {2 * k};\n\tand.b32 t, t, 0x03030303;\n\tdp4a.s32.s32 a, t, ${2 + k}, a;"
        for k in range(1, 4)
    )
    + "\n\tmov.b32 $0, a;\n\t}"
)


@triton.jit
def _i8_plane(wv, xk, K: tl.constexpr):
    # the dp4a of code plane set k without inline PTX (Triton's interpreter): Σ_b code(b, k)·int8 byte b
    acc = tl.zeros_like(wv)
    for b in tl.static_range(4):
        acc += ((wv >> (8 * b + 2 * K)) & 3) * ((xk << (24 - 8 * b)) >> 24)
    return acc


@triton.jit
def _i8_dot(wv, x0, x1, x2, x3, ASM: tl.constexpr):
    # int32 Σ code·q of each int2 word [T, WPG, BR] against its four packed x words (broadcast alike)
    if ASM:
        acc = tl.inline_asm_elementwise(
            I8_DP4A_ASM, "=r,r,r,r,r,r", [wv, x0, x1, x2, x3], dtype=tl.int32, is_pure=True, pack=1
        )
    else:
        acc = _i8_plane(wv, x0, 0) + _i8_plane(wv, x1, 1) + _i8_plane(wv, x2, 2) + _i8_plane(wv, x3, 3)
    return acc


@triton.jit
def _i8_token(
    acc, wv, sc, oc, xq_ptr, xsx_ptr, xsum_ptr, t, g, N_GROUPS, WPG: tl.constexpr, ASM: tl.constexpr,
    XV: tl.constexpr = True,
):  # fmt: skip
    # one token's group: acc += s·s_x·Σ code·q + o·Σ x per word (x words are the same for all rows). XV: a word
    # position's four x words in one 16-byte load (one cp.async in the pipelined loop instead of four)
    zw = tl.zeros_like(wv)
    xw = (t * N_GROUPS + g) * WPG + tl.arange(0, WPG)[None, :, None]  # [1, WPG, 1]
    if XV:
        xv = tl.load(xq_ptr + xw[:, :, :, None] * 4 + tl.arange(0, 4)[None, None, None, :])  # [1, WPG, 1, 4]
        ev, od = tl.split(tl.reshape(xv, (1, WPG, 1, 2, 2)))  # x words (0, 2) and (1, 3)
        x0, x2 = tl.split(ev)
        x1, x3 = tl.split(od)
        x0 += zw
        x1 += zw
        x2 += zw
        x3 += zw
    else:
        x0 = tl.load(xq_ptr + xw * 4) + zw
        x1 = tl.load(xq_ptr + xw * 4 + 1) + zw
        x2 = tl.load(xq_ptr + xw * 4 + 2) + zw
        x3 = tl.load(xq_ptr + xw * 4 + 3) + zw
    dot = _i8_dot(wv, x0, x1, x2, x3, ASM).to(tl.float32)
    sx = tl.load(xsx_ptr + t * N_GROUPS + g)
    return acc + (sc * sx) * dot + oc * tl.load(xsum_ptr + xw)


@triton.jit
def _plane_group_i8(
    a0, a1, a2, a3, wv, sc, oc, xq_ptr, xsx_ptr, xsum_ptr, g, N_GROUPS,
    NT: tl.constexpr, WPG: tl.constexpr, ASM: tl.constexpr, XV: tl.constexpr = True,
):  # fmt: skip
    # _plane_group for int2 groups of 16 full code planes against int8 x (I8): 4 dp4a per word
    sc = sc.to(tl.float32)
    oc = oc.to(tl.float32)
    a0 = _i8_token(a0, wv, sc, oc, xq_ptr, xsx_ptr, xsum_ptr, 0, g, N_GROUPS, WPG, ASM, XV)
    if NT > 1:
        a1 = _i8_token(a1, wv, sc, oc, xq_ptr, xsx_ptr, xsum_ptr, 1, g, N_GROUPS, WPG, ASM, XV)
    if NT > 2:
        a2 = _i8_token(a2, wv, sc, oc, xq_ptr, xsx_ptr, xsum_ptr, 2, g, N_GROUPS, WPG, ASM, XV)
    if NT > 3:
        a3 = _i8_token(a3, wv, sc, oc, xq_ptr, xsx_ptr, xsum_ptr, 3, g, N_GROUPS, WPG, ASM, XV)
    return a0, a1, a2, a3


@triton.jit
def _x_prefetch(ptrs, LEVEL: tl.constexpr):
    # prefetch.global.L1 / .L2 (LEVEL "L1" / "L2") of each address (no result is used; not pure, so it is kept)
    return tl.inline_asm_elementwise(
        f"prefetch.global.{LEVEL} [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def _w2_prefetch(w2t_ptr, neur, c0, chunk, D, PFL: tl.constexpr, ASM: tl.constexpr):
    # the W2ᵀ rows `neur` over columns [c0, c0 + chunk) into L2: one address per 64 columns (128 bytes). ASM:
    # prefetch.global.L2 (no result, no registers held); Triton's interpreter has no inline PTX, so there the same
    # addresses are loaded and the values dropped (an address far outside W2ᵀ faults there)
    offs = tl.arange(0, PFL) * 64
    cols = tl.where((offs < chunk) & (c0 + offs < D), c0 + offs, c0)
    ptrs = w2t_ptr + neur[:, None].to(tl.int64) * D + cols[None, :]
    if ASM:
        _x_prefetch(ptrs, "L2")
    else:
        tl.load(ptrs)


@triton.jit
def _plane_full_group(
    a0, a1, a2, a3, wv, sc, oc, x_ptr, xq_ptr, xsx_ptr, xsum_ptr, g, D, N_GROUPS, ONE_BITS, magic,
    NT: tl.constexpr, BITS: tl.constexpr, GS: tl.constexpr, WPG: tl.constexpr, NPL: tl.constexpr, H2: tl.constexpr,
    X_FP16: tl.constexpr, I8: tl.constexpr, I8_ASM: tl.constexpr, XV: tl.constexpr = True,
):  # fmt: skip
    # one full group of the predictor by the launch's path: I8 (int8 x words; every group, the x words past d
    # are zero, so N_FULL = N_GROUPS), H2 (fp16x2) or the fp32 dequantization
    if I8:
        return _plane_group_i8(a0, a1, a2, a3, wv, sc, oc, xq_ptr, xsx_ptr, xsum_ptr, g, N_GROUPS, NT, WPG, I8_ASM, XV)
    elif H2:
        return _plane_group_h2(a0, a1, a2, a3, wv, sc, oc, x_ptr, g, D, magic, NT, GS, WPG, X_FP16)
    else:
        return _plane_group(a0, a1, a2, a3, wv, sc, oc, x_ptr, g, D, ONE_BITS, NT, BITS, GS, WPG, NPL, False)


@triton.jit
def _plane_load_group(
    a0, a1, a2, a3, qw_ptr, qs_ptr, qo_ptr, woff, soff, tmask, g1, F_PAD, x_ptr, xq_ptr, xsx_ptr, xsum_ptr, g, D,
    N_GROUPS, ONE_BITS, magic, NT: tl.constexpr, BITS: tl.constexpr, GS: tl.constexpr, WPG: tl.constexpr,
    NPL: tl.constexpr, BR: tl.constexpr, H2: tl.constexpr, X_FP16: tl.constexpr, I8: tl.constexpr,
    I8_ASM: tl.constexpr, XV: tl.constexpr = True,
):  # fmt: skip
    # one full group loaded in place and run (the pipelined loop's step: its loads are the pipeline's)
    wv, sc, oc = _plane_load(qw_ptr, qs_ptr, qo_ptr, g, woff, soff, tmask, g1, F_PAD, WPG, BR)
    return _plane_full_group(
        a0, a1, a2, a3, wv, sc, oc, x_ptr, xq_ptr, xsx_ptr, xsum_ptr, g, D, N_GROUPS, ONE_BITS, magic,
        NT, BITS, GS, WPG, NPL, H2, X_FP16, I8, I8_ASM, XV,
    )  # fmt: skip


@triton.jit
def _plane_pred_part(
    x_ptr, qw_ptr, qs_ptr, qo_ptr, b1_ptr, lo_ptr, hi_ptr, flags_ptr, idx_ptr, ws_ptr, cnt_ptr,
    zacc_ptr, tick_ptr, xq_ptr, xsx_ptr, xsum_ptr, ppid, D, F, F_PAD, N_GROUPS, N_FULL, n_tiles, ONE_BITS, CG,
    magic, NT: tl.constexpr, BITS: tl.constexpr, GS: tl.constexpr, WPG: tl.constexpr, NPL: tl.constexpr,
    BR: tl.constexpr, T: tl.constexpr, XPF: tl.constexpr, PF2: tl.constexpr, H2: tl.constexpr,
    SPLIT: tl.constexpr, X_FP16: tl.constexpr, PF4: tl.constexpr, I8: tl.constexpr, I8_ASM: tl.constexpr,
    PS: tl.constexpr, PG: tl.constexpr, XV: tl.constexpr = True, w1_ptr=None, zp_ptr=None,
    UPK1: tl.constexpr = False, NKZ: tl.constexpr = 1,
):  # fmt: skip
    # UPK1: the flags epilogue also computes the union rows' exact z (_union_rows_z).
    # T row tiles of BR rows streamed group after group (full groups without x masks, then the partial
    # last group); the words of group g + 1 (PF2: g + 2, PF4: g + 4) load while group g computes; XPF: the x slice
    # of group g + 1 is prefetched into L1 meanwhile. SPLIT > 1: the groups are cut into SPLIT chunks of
    # CG, one program each; partial sums are added into zacc (fp32, zero at rest) and the last chunk
    # of a tile set to finish (a ticket) runs the flags epilogue and zeroes zacc and its ticket again.
    # I8: the groups run _plane_group_i8 against the int8 x words that _xq_kernel wrote.
    tg = ppid // SPLIT
    g0 = (ppid % SPLIT) * CG
    g1 = tl.minimum(g0 + CG, N_GROUPS)
    gf = tl.minimum(g1, N_FULL)
    t0 = tg * T
    tt = t0 + tl.arange(0, T)[:, None, None]
    jj = tl.arange(0, WPG)[None, :, None]
    mm = tl.arange(0, BR)[None, None, :]
    tmask = tt < n_tiles  # [T, 1, 1]
    woff = tt * (N_GROUPS * WPG * BR) + jj * BR + mm  # [T, WPG, BR]; + g·WPG·BR per group
    soff = tt * BR + mm  # [T, 1, BR] rows; + g·F_PAD per group
    a0 = tl.zeros((T, WPG, BR), dtype=tl.float32)
    a1 = tl.zeros((T, WPG, BR), dtype=tl.float32)
    a2 = tl.zeros((T, WPG, BR), dtype=tl.float32)
    a3 = tl.zeros((T, WPG, BR), dtype=tl.float32)
    if PS > 1:  # Triton's software pipeline: each step's loads in the loop, cp.async PS - 1 steps ahead
        # PG groups a step (2: twice the work between the pipeline's waits and barriers); an odd last one alone
        n_steps = (gf - g0) // PG
        for i in tl.range(0, n_steps, num_stages=PS):
            g = g0 + i * PG
            a0, a1, a2, a3 = _plane_load_group(
                a0, a1, a2, a3, qw_ptr, qs_ptr, qo_ptr, woff, soff, tmask, g1, F_PAD, x_ptr, xq_ptr, xsx_ptr,
                xsum_ptr, g, D, N_GROUPS, ONE_BITS, magic, NT, BITS, GS, WPG, NPL, BR, H2, X_FP16, I8, I8_ASM, XV,
            )  # fmt: skip
            if PG == 2:
                a0, a1, a2, a3 = _plane_load_group(
                    a0, a1, a2, a3, qw_ptr, qs_ptr, qo_ptr, woff, soff, tmask, g1, F_PAD, x_ptr, xq_ptr, xsx_ptr,
                    xsum_ptr, g + 1, D, N_GROUPS, ONE_BITS, magic, NT, BITS, GS, WPG, NPL, BR, H2, X_FP16, I8, I8_ASM,
                    XV,
                )  # fmt: skip
        for g in range(g0 + n_steps * PG, gf):  # PG = 2 with an odd number of full groups: the last one
            a0, a1, a2, a3 = _plane_load_group(
                a0, a1, a2, a3, qw_ptr, qs_ptr, qo_ptr, woff, soff, tmask, g1, F_PAD, x_ptr, xq_ptr, xsx_ptr,
                xsum_ptr, g, D, N_GROUPS, ONE_BITS, magic, NT, BITS, GS, WPG, NPL, BR, H2, X_FP16, I8, I8_ASM, XV,
            )  # fmt: skip
        for g in range(tl.maximum(g0, N_FULL), g1):  # the partial last group (at most one; fp32 path)
            wv, sc, oc = _plane_load(qw_ptr, qs_ptr, qo_ptr, g, woff, soff, tmask, g1, F_PAD, WPG, BR)
            a0, a1, a2, a3 = _plane_group(
                a0, a1, a2, a3, wv, sc, oc, x_ptr, g, D, ONE_BITS, NT, BITS, GS, WPG, NPL, True
            )
    else:
        wn, sn, on = _plane_load(qw_ptr, qs_ptr, qo_ptr, g0, woff, soff, tmask, g1, F_PAD, WPG, BR)
        wn2, sn2, on2 = wn, sn, on
        if PF2 or PF4:
            wn2, sn2, on2 = _plane_load(qw_ptr, qs_ptr, qo_ptr, g0 + 1, woff, soff, tmask, g1, F_PAD, WPG, BR)
        if PF4:
            wn3, sn3, on3 = _plane_load(qw_ptr, qs_ptr, qo_ptr, g0 + 2, woff, soff, tmask, g1, F_PAD, WPG, BR)
            wn4, sn4, on4 = _plane_load(qw_ptr, qs_ptr, qo_ptr, g0 + 3, woff, soff, tmask, g1, F_PAD, WPG, BR)
        for g in range(g0, gf):
            wv, sc, oc = wn, sn, on
            if PF4:  # four groups in flight (8 KB per program at 64 rows, int2 g128)
                wn, sn, on = wn2, sn2, on2
                wn2, sn2, on2 = wn3, sn3, on3
                wn3, sn3, on3 = wn4, sn4, on4
                wn4, sn4, on4 = _plane_load(qw_ptr, qs_ptr, qo_ptr, g + 4, woff, soff, tmask, g1, F_PAD, WPG, BR)
            elif PF2:
                wn, sn, on = wn2, sn2, on2
                wn2, sn2, on2 = _plane_load(qw_ptr, qs_ptr, qo_ptr, g + 2, woff, soff, tmask, g1, F_PAD, WPG, BR)
            else:
                wn, sn, on = _plane_load(qw_ptr, qs_ptr, qo_ptr, g + 1, woff, soff, tmask, g1, F_PAD, WPG, BR)
            if XPF:
                kp = tl.minimum((g + 1) * GS + tl.arange(0, 8) * 32, D - 1)  # lines of GS ≤ 256 values
                for t in tl.static_range(NT):
                    _x_prefetch(x_ptr + t * D + kp, "L1")
            a0, a1, a2, a3 = _plane_full_group(
                a0, a1, a2, a3, wv, sc, oc, x_ptr, xq_ptr, xsx_ptr, xsum_ptr, g, D, N_GROUPS, ONE_BITS, magic,
                NT, BITS, GS, WPG, NPL, H2, X_FP16, I8, I8_ASM, XV,
            )  # fmt: skip
        for g in range(tl.maximum(g0, N_FULL), g1):  # the partial last group (at most one; fp32 path)
            a0, a1, a2, a3 = _plane_group(
                a0, a1, a2, a3, wn, sn, on, x_ptr, g, D, ONE_BITS, NT, BITS, GS, WPG, NPL, True
            )
    rows = t0 * BR + tl.arange(0, T * BR)
    rmask = rows < F
    s0 = tl.reshape(tl.sum(a0, axis=1), (T * BR,))
    s1 = tl.reshape(tl.sum(a1, axis=1), (T * BR,))
    s2 = tl.reshape(tl.sum(a2, axis=1), (T * BR,))
    s3 = tl.reshape(tl.sum(a3, axis=1), (T * BR,))
    if SPLIT > 1:
        pmask = rows < n_tiles * BR
        tl.atomic_add(zacc_ptr + rows, s0, mask=pmask)
        if NT > 1:
            tl.atomic_add(zacc_ptr + F_PAD + rows, s1, mask=pmask)
        if NT > 2:
            tl.atomic_add(zacc_ptr + 2 * F_PAD + rows, s2, mask=pmask)
        if NT > 3:
            tl.atomic_add(zacc_ptr + 3 * F_PAD + rows, s3, mask=pmask)
        tl.debug_barrier()  # every thread's adds issued before the ticket (released at gpu scope)
        ticket = tl.atomic_add(tick_ptr + tg, 1)
        if ticket == SPLIT - 1:  # the last chunk of these tiles: the sums are complete
            zero = tl.zeros((T * BR,), dtype=tl.float32)
            s0 = tl.load(zacc_ptr + rows, mask=pmask, other=0.0, cache_modifier=".cg")
            tl.store(zacc_ptr + rows, zero, mask=pmask)
            if NT > 1:
                s1 = tl.load(zacc_ptr + F_PAD + rows, mask=pmask, other=0.0, cache_modifier=".cg")
                tl.store(zacc_ptr + F_PAD + rows, zero, mask=pmask)
            if NT > 2:
                s2 = tl.load(zacc_ptr + 2 * F_PAD + rows, mask=pmask, other=0.0, cache_modifier=".cg")
                tl.store(zacc_ptr + 2 * F_PAD + rows, zero, mask=pmask)
            if NT > 3:
                s3 = tl.load(zacc_ptr + 3 * F_PAD + rows, mask=pmask, other=0.0, cache_modifier=".cg")
                tl.store(zacc_ptr + 3 * F_PAD + rows, zero, mask=pmask)
            tl.store(tick_ptr + tg, 0)
            _flags_epilogue(
                s0, s1, s2, s3, rows, rmask, b1_ptr, lo_ptr, hi_ptr, flags_ptr, idx_ptr, ws_ptr, cnt_ptr, F,
                NT, x_ptr, w1_ptr, zp_ptr, D, UPK1, NKZ,
            )  # fmt: skip
    else:
        _flags_epilogue(
            s0, s1, s2, s3, rows, rmask, b1_ptr, lo_ptr, hi_ptr, flags_ptr, idx_ptr, ws_ptr, cnt_ptr,
            F, NT, x_ptr, w1_ptr, zp_ptr, D, UPK1, NKZ,
        )  # fmt: skip


@triton.jit
def _stacked_plane_kernel(
    x_ptr, wf_ptr, bf_ptr, qw_ptr, qs_ptr, qo_ptr, b1_ptr, lo_ptr, hi_ptr,
    y32_ptr, flags_ptr, idx_ptr, ws_ptr, cnt_ptr, zacc_ptr, tick_ptr, xq_ptr, xsx_ptr, xsum_ptr,
    D, F, F_PAD, N_GROUPS, N_FULL, n_tiles, n_first, ONE_BITS, CG, magic,
    NT: tl.constexpr, BITS: tl.constexpr, GS: tl.constexpr, WPG: tl.constexpr, NPL: tl.constexpr,
    BR: tl.constexpr, T: tl.constexpr, BMF: tl.constexpr, BKF: tl.constexpr,
    PRED_FIRST: tl.constexpr, XPF: tl.constexpr, PF2: tl.constexpr, H2: tl.constexpr, SPLIT: tl.constexpr,
    WPF: tl.constexpr, PF4: tl.constexpr, I8: tl.constexpr, I8_ASM: tl.constexpr, PS: tl.constexpr,
    WS: tl.constexpr, PG: tl.constexpr, PDL: tl.constexpr, XQW: tl.constexpr = False, zr0=0,
    ZR: tl.constexpr = False, wk_n=1, wk_kc=1, WK: tl.constexpr = 1, XV: tl.constexpr = True, pd_ptr=None,
    SPIN: tl.constexpr = False, FENCE: tl.constexpr = False, w1_ptr=None, zp_ptr=None,
    UPK1: tl.constexpr = False, NKZ: tl.constexpr = 1, tr_ptr=None, TR: tl.constexpr = False,
):  # fmt: skip
    # TR (DecodeLaunch.trace): each program stamps its end into its row of tr_ptr, and whether it was a predictor one.
    # SPIN (UP_SPIN): each predictor program adds one to pd_ptr after its flags, for the up kernel's poll.
    # UPK1 (UP_IN_K1): the predictor programs also compute their union rows' exact z (no up kernel follows).
    # Batch 1..4 (NT tokens exactly), plane-order predictor. Programs [0, n_first) are the Wf part
    # (PRED_FIRST: the predictor part), the rest the other part. PDL: the up kernel may be launched once
    # every program here has started (it waits for this grid to finish before it reads anything).
    # XQW: this grid was launched before _xq_kernel finished (programmatic dependent launch): the Wf
    # programs read nothing it writes and start at once; the predictor programs wait for its x words.
    # ZR: y32[:, zr0:] is zeroed here (the up and down kernels' grids compute those folded rows and add them).
    # WK > 1: the Wf part as tiles of BMF rows by one of wk_n column chunks of wk_kc steps (shorter programs),
    # added into y32, which was zeroed before (by _xq_kernel, whose end the tiles wait for with XQW, or a memset).
    pid = tl.program_id(0)
    if PDL:
        gdc_launch_dependents()
    _count_step(cnt_ptr, pid, NT)
    if ZR:
        _zero_rows(y32_ptr, zr0, D, pid, tl.num_programs(0), NT)
    if PRED_FIRST:
        is_pred = pid < n_first
        ppid = pid
        wpid = pid - n_first
    else:
        is_pred = pid >= n_first
        ppid = pid - n_first
        wpid = pid
    if is_pred:
        if XQW:
            gdc_wait()
        _plane_pred_part(
            x_ptr, qw_ptr, qs_ptr, qo_ptr, b1_ptr, lo_ptr, hi_ptr, flags_ptr, idx_ptr, ws_ptr, cnt_ptr, zacc_ptr,
            tick_ptr, xq_ptr, xsx_ptr, xsum_ptr, ppid, D, F, F_PAD, N_GROUPS, N_FULL, n_tiles,
            ONE_BITS, CG, magic, NT, BITS, GS, WPG, NPL, BR, T, XPF, PF2, H2, SPLIT,
            x_ptr.dtype.element_ty == tl.float16, PF4, I8, I8_ASM, PS, PG, XV, w1_ptr, zp_ptr, UPK1, NKZ,
        )  # fmt: skip
        if SPIN:
            _signal_done(pd_ptr, FENCE)
    else:
        if WK > 1:
            _wf_tile_add(x_ptr, wf_ptr, bf_ptr, y32_ptr, wpid, 0, wk_n, wk_kc, D, NT, BMF, BKF, WS, XQW)
        else:
            _wf_small_part(x_ptr, wf_ptr, bf_ptr, y32_ptr, wpid, D, NT, BMF, BKF, WPF, WS)
    if TR:
        _trace_stamp(tr_ptr, pid, 0, pid)
        _trace_value(tr_ptr, pid, 6, is_pred)


@triton.jit
def _up_small_step(a0, a1, a2, a3, x_ptr, w1_ptr, neur, jmask, k0, D, NT: tl.constexpr, BK: tl.constexpr):
    # one [BJ, BK] step of the listed neurons' W1 rows against each token's x slice
    ks = k0 + tl.arange(0, BK)
    kmask = ks < D
    w = tl.load(w1_ptr + neur[:, None].to(tl.int64) * D + ks[None, :], mask=jmask[:, None] & kmask[None, :], other=0.0)
    return _fma_tokens(a0, a1, a2, a3, w.to(tl.float32), x_ptr, ks, kmask, D, NT)


@triton.jit
def _up_small_kernel(
    x_ptr, w1_ptr, idx_ptr, ws_ptr, zp_ptr, D, F, n_splits, chunk, wf_ptr, bf_ptr, y32_ptr, wf0, n_wf, n_ks, kc,
    NT: tl.constexpr, BJ: tl.constexpr, BK: tl.constexpr, PDL: tl.constexpr, US: tl.constexpr = 0,
    EARLY: tl.constexpr = False, WF: tl.constexpr = False, MB: tl.constexpr = 32, BKF: tl.constexpr = 256,
    WS: tl.constexpr = 0, pd_ptr=None, n_pred=0, SPIN: tl.constexpr = False, FENCE: tl.constexpr = False,
    SLEEP_NS: tl.constexpr = 0, AHEAD: tl.constexpr = False, ONE: tl.constexpr = False, w2t_ptr=None,
    PFW2: tl.constexpr = False, PFL: tl.constexpr = 16, ASM: tl.constexpr = True, tr_ptr=None,
    TR: tl.constexpr = False,
):  # fmt: skip
    # TR (DecodeLaunch.trace): each item program stamps its start, the end of its wait and its end into its row.
    # PFW2 (UP_PF_W2): each item first prefetches into L2 its neurons' W2ᵀ rows over its columns (PFL addresses a
    # row, 128 bytes apart), which the down kernel reads next.
    # ONE: each item is one step of BK columns (chunk == BK): its W1 rows loaded and reduced at once, with no
    # loop-carried [BJ, BK] accumulators (fewer registers, so more items resident and in flight a SM).
    # AHEAD (LIST_AHEAD): each program loads its first item's list entries beside the count, not after it.
    # SPIN (UP_SPIN): the items start once kernel 1's n_pred predictor programs have counted themselves done in
    # pd_ptr (the list is final then), not at kernel 1's end; the down kernel is released then too, and each
    # program waits for kernel 1's end before it exits (the down kernel's wait for this grid covers kernel 1).
    # Batch 1..4 up-gather without tl.dot: [BJ, BK] FMA tiles per token, one reduction per item.
    # US > 1: the K loop software-pipelined (cp.async, US - 1 steps of W1 rows ahead). EARLY (the down kernel
    # reads kernel 1's list before it waits for this one): the down kernel is released only after this
    # kernel's wait for kernel 1. WF (WF_UP_FRAC): programs [0, n_wf) are folded-row tiles instead (MB rows from
    # row block wf0 on, n_ks column chunks of kc), added into y32 after the wait for kernel 1 (which zeroed them).
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    if WF and pid < n_wf:
        if PDL:
            gdc_launch_dependents()
        _wf_tile_add(x_ptr, wf_ptr, bf_ptr, y32_ptr, pid, wf0, n_ks, kc, D, NT, MB, BKF, WS, PDL)
    else:
        if WF:
            pid -= n_wf
            nprog -= n_wf
        _up_small_items(x_ptr, w1_ptr, idx_ptr, ws_ptr, zp_ptr, D, F, n_splits, chunk, pid, nprog, NT, BJ, BK, PDL,
                        US, EARLY, pd_ptr, n_pred, SPIN, FENCE, SLEEP_NS, AHEAD, ONE, w2t_ptr, PFW2, PFL,
                        ASM, tr_ptr, TR)  # fmt: skip


@triton.jit
def _up_small_items(
    x_ptr, w1_ptr, idx_ptr, ws_ptr, zp_ptr, D, F, n_splits, chunk, pid, nprog,
    NT: tl.constexpr, BJ: tl.constexpr, BK: tl.constexpr, PDL: tl.constexpr, US: tl.constexpr, EARLY: tl.constexpr,
    pd_ptr, n_pred, SPIN: tl.constexpr, FENCE: tl.constexpr, SLEEP_NS: tl.constexpr, AHEAD: tl.constexpr,
    ONE: tl.constexpr = False, w2t_ptr=None, PFW2: tl.constexpr = False, PFL: tl.constexpr = 16,
    ASM: tl.constexpr = True, tr_ptr=None, TR: tl.constexpr = False,
):  # fmt: skip
    first = tl.zeros((BJ,), dtype=tl.int32)
    if TR:
        _trace_stamp(tr_ptr, pid, 0, pid)
    if SPIN:
        _spin_until(pd_ptr, n_pred, FENCE, SLEEP_NS)
        if PDL:
            gdc_launch_dependents()
        count = tl.load(ws_ptr, cache_modifier=".cg")  # kernel 1 may still run: its list through L2
    else:
        _pdl_wait(PDL, EARLY)
        # AHEAD: the first item's list entries before the count arrives (past the count they are stale, and every
        # load of theirs is masked by jmask; js < F keeps this one inside the list)
        if AHEAD:
            js0 = (pid // n_splits) * BJ + tl.arange(0, BJ)
            first = tl.load(idx_ptr + js0, mask=js0 < F, other=0)
        count = tl.load(ws_ptr)
    n_items = tl.cdiv(count, BJ) * n_splits
    if TR:
        _trace_stamp(tr_ptr, pid, 1, count)
    gate = pid
    for item in range(pid, n_items, nprog):
        jb = item // n_splits
        sp = item % n_splits
        js = jb * BJ + tl.arange(0, BJ)
        jmask = js < count
        if SPIN:
            neur = tl.load(idx_ptr + js, mask=jmask, other=0, cache_modifier=".cg")
        elif AHEAD and item == pid:
            neur = first
        else:
            neur = tl.load(idx_ptr + js, mask=jmask, other=0)
        if PFW2:
            _w2_prefetch(w2t_ptr, neur, sp * chunk, chunk, D, PFL, ASM)
        a0 = tl.zeros((BJ, BK), dtype=tl.float32)
        a1 = tl.zeros((BJ, BK), dtype=tl.float32)
        a2 = tl.zeros((BJ, BK), dtype=tl.float32)
        a3 = tl.zeros((BJ, BK), dtype=tl.float32)
        if ONE:
            a0, a1, a2, a3 = _up_small_step(a0, a1, a2, a3, x_ptr, w1_ptr, neur, jmask, sp * BK, D, NT, BK)
        elif US > 1:
            for k0 in tl.range(sp * chunk, tl.minimum(sp * chunk + chunk, D), BK, num_stages=US):
                a0, a1, a2, a3 = _up_small_step(a0, a1, a2, a3, x_ptr, w1_ptr, neur, jmask, k0, D, NT, BK)
        else:
            for k0 in range(sp * chunk, tl.minimum(sp * chunk + chunk, D), BK):
                a0, a1, a2, a3 = _up_small_step(a0, a1, a2, a3, x_ptr, w1_ptr, neur, jmask, k0, D, NT, BK)
        # token-major partials [split, token, list position]
        z0 = _store_row_sums(zp_ptr + sp * NT * F + js, a0, a1, a2, a3, jmask, F, NT)
        if TR:
            gate = tl.max(z0, axis=0).to(tl.int32, bitcast=True)
    if TR:
        _trace_stamp(tr_ptr, pid, 2, gate)
        _trace_value(tr_ptr, pid, 6, n_items)
    if SPIN and PDL:
        gdc_wait()  # kernel 1's end (its folded rows in y32) before this grid's


@triton.jit
def _corr_token(
    zp_ptr, b1v, a, c, flags_ptr, neur, js, jmask, t, F, n_splits,
    NT: tl.constexpr, ACT: tl.constexpr, NSP: tl.constexpr,
):  # fmt: skip
    # every split's partial in one load (no chain of L2 round trips)
    sps = tl.arange(0, NSP)[:, None]
    zs = tl.load(zp_ptr + (sps * NT + t) * F + js[None, :], mask=(sps < n_splits) & jmask[None, :], other=0.0)
    z = b1v + tl.sum(zs, axis=0)
    fl = tl.load(flags_ptr + t * F + neur, mask=jmask, other=0)
    return tl.where(fl != 0, _activation(z, ACT) - a * z - c, 0.0)


@triton.jit
def _down_small_kernel(
    w2t_ptr, b1_ptr, slope_ptr, icpt_ptr, flags_ptr, idx_ptr, ws_ptr, zp_ptr, y32_ptr, y_ptr,
    D, F, n_splits, n_cols, x_ptr, wf_ptr, bf_ptr, wf0, n_wf, cb0, n_ks, kc,
    NT: tl.constexpr, BJ: tl.constexpr, BC: tl.constexpr, ACT: tl.constexpr, NSP: tl.constexpr,
    FENCE: tl.constexpr, PDL: tl.constexpr, EARLY: tl.constexpr = False, WF: tl.constexpr = False,
    MB: tl.constexpr = 32, BKF: tl.constexpr = 256, WS: tl.constexpr = 0, pd_ptr=None, SPIN: tl.constexpr = False,
    ONE_CLOSE: tl.constexpr = False, tr_ptr=None, TR: tl.constexpr = False, FINISH: tl.constexpr = False,
):  # fmt: skip
    # FINISH (DOWN_FINISH): no column tickets, casts or list reset here: _finish_kernel follows this grid and does them.
    # TR (DecodeLaunch.trace): each item program stamps its start, the end of its wait, its corrections and its close
    # (ticket, and the block's cast where it had the last one) into its row (the program's last item).
    # ONE_CLOSE: an item takes its column block's ticket and counts itself done in one atomic (_close_block_and_item).
    # SPIN (UP_SPIN): the up kernel released this launch once kernel 1's predictor programs were done (not at its
    # end), after its poll saw their count (the list final in L2, which EARLY reads with .cg). No poll here: a
    # program may start after the very last item has reset the count. That item resets it with the list count.
    # Batch 1..4 down-scatter without tl.dot: per token Σ_j corr_j · W2ᵀ[j, cols] (one reduction).
    # EARLY: the up kernel released this launch only after kernel 1 had finished, so kernel 1's list (count
    # and indices, read from L2: `.cg`) and the weights (W2ᵀ rows, b1, the lines) are read before the wait for
    # the up kernel's partials; the W2ᵀ rows stream in while the up kernel still runs.
    # WF (WF_DOWN_FRAC): programs [0, n_wf) are folded-row tiles (MB rows from row block wf0 on, n_ks column
    # chunks of kc; column blocks cb0.., whose y32 rows kernel 1 zeroed): loaded before their wait for the up
    # kernel, added into y32 after it; they count in those blocks' tickets and in the items done (the list count
    # is reset only after they have read it).
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    if WF and pid < n_wf:
        if PDL:
            gdc_launch_dependents()
        _wf_tile_add(x_ptr, wf_ptr, bf_ptr, y32_ptr, pid, wf0, n_ks, kc, D, NT, MB, BKF, WS, PDL)
        count = tl.load(ws_ptr, cache_modifier=".cg")
        n_jb = tl.maximum(tl.cdiv(count, BJ), 1)
        cb = ((wf0 + pid // n_ks) * MB) // BC
        cols = cb * BC + tl.arange(0, BC)
        last = n_jb - 1 + _wf_in_block(cb, cb0, n_ks, D, BC, MB)
        if not FINISH:
            _close(y32_ptr, y_ptr, ws_ptr, cb, cols, cols < D, count, last, n_jb * n_cols + n_wf, D, NT, FENCE,
                   pd_ptr, SPIN, ONE_CLOSE)  # fmt: skip
    else:
        if WF:
            pid -= n_wf
            nprog -= n_wf
        _down_small_items(
            w2t_ptr, b1_ptr, slope_ptr, icpt_ptr, flags_ptr, idx_ptr, ws_ptr, zp_ptr, y32_ptr, y_ptr, D, F, n_splits,
            n_cols, pid, nprog, n_wf, cb0, n_ks, NT, BJ, BC, ACT, NSP, FENCE, PDL, EARLY, MB, pd_ptr, SPIN, ONE_CLOSE,
            tr_ptr, TR, FINISH,
        )  # fmt: skip


@triton.jit
def _down_small_items(
    w2t_ptr, b1_ptr, slope_ptr, icpt_ptr, flags_ptr, idx_ptr, ws_ptr, zp_ptr, y32_ptr, y_ptr,
    D, F, n_splits, n_cols, pid, nprog, n_wf, cb0, n_ks,
    NT: tl.constexpr, BJ: tl.constexpr, BC: tl.constexpr, ACT: tl.constexpr, NSP: tl.constexpr,
    FENCE: tl.constexpr, PDL: tl.constexpr, EARLY: tl.constexpr, MB: tl.constexpr, pd_ptr, SPIN: tl.constexpr,
    ONE_CLOSE: tl.constexpr, tr_ptr=None, TR: tl.constexpr = False, FINISH: tl.constexpr = False,
):  # fmt: skip
    # the down items of _down_small_kernel; n_wf folded-row tiles count in the blocks cb0.. and in the items done
    # (FINISH: no tickets or done count; the items only add)
    if TR:
        _trace_stamp(tr_ptr, pid, 0, pid)
    if EARLY:
        if PDL:
            gdc_launch_dependents()
        count = tl.load(ws_ptr, cache_modifier=".cg")
    else:
        _pdl_wait(PDL)
        count = tl.load(ws_ptr)
        if TR:
            _trace_stamp(tr_ptr, pid, 1, count)
    n_jb = tl.maximum(tl.cdiv(count, BJ), 1)
    n_items = n_jb * n_cols
    for item in range(pid, n_items, nprog):
        jb = item // n_cols
        cb = item % n_cols
        js = jb * BJ + tl.arange(0, BJ)
        jmask = js < count
        if EARLY:
            neur = tl.load(idx_ptr + js, mask=jmask, other=0, cache_modifier=".cg")
        else:
            neur = tl.load(idx_ptr + js, mask=jmask, other=0)
        b1v = tl.load(b1_ptr + neur, mask=jmask, other=0.0).to(tl.float32)
        a = tl.load(slope_ptr + neur, mask=jmask, other=0.0)
        c = tl.load(icpt_ptr + neur, mask=jmask, other=0.0)
        cols = cb * BC + tl.arange(0, BC)
        cmask = cols < D
        w2 = tl.load(
            w2t_ptr + neur[:, None].to(tl.int64) * D + cols[None, :], mask=jmask[:, None] & cmask[None, :], other=0.0
        )
        w2 = w2.to(tl.float32)
        if EARLY and PDL:
            gdc_wait()  # the up kernel's partials (and its reads of the list) are done past this point
        if TR and EARLY:
            _trace_stamp(tr_ptr, pid, 1, cb)
        om = cmask & (count > 0)
        corr0 = _corr_token(zp_ptr, b1v, a, c, flags_ptr, neur, js, jmask, 0, F, n_splits, NT, ACT, NSP)
        corr1 = corr0
        corr2 = corr0
        corr3 = corr0
        if NT > 1:
            corr1 = _corr_token(zp_ptr, b1v, a, c, flags_ptr, neur, js, jmask, 1, F, n_splits, NT, ACT, NSP)
        if NT > 2:
            corr2 = _corr_token(zp_ptr, b1v, a, c, flags_ptr, neur, js, jmask, 2, F, n_splits, NT, ACT, NSP)
        if NT > 3:
            corr3 = _corr_token(zp_ptr, b1v, a, c, flags_ptr, neur, js, jmask, 3, F, n_splits, NT, ACT, NSP)
        if TR:
            _trace_stamp(tr_ptr, pid, 2, tl.sum(corr0).to(tl.int32, bitcast=True))
        _scatter(y32_ptr, D, cols, w2, om, corr0, corr1, corr2, corr3, NT)
        last = n_jb - 1 + _wf_in_block(cb, cb0, n_ks, D, BC, MB)
        if FINISH:
            ticket = cb  # (the trace's last stamp: after the adds were issued)
        else:
            ticket = _close(
                y32_ptr, y_ptr, ws_ptr, cb, cols, cmask, count, last, n_items + n_wf, D, NT, FENCE, pd_ptr, SPIN,
                ONE_CLOSE,
            )  # fmt: skip
        if TR:
            _trace_stamp(tr_ptr, pid, 3, ticket)
            if not FINISH:
                _trace_value(tr_ptr, pid, 6, ticket == last)
            _trace_value(tr_ptr, pid, 7, item)


@triton.jit
def _scatter(y32_ptr, D, cols, w2, om, c0, c1, c2, c3, NT: tl.constexpr):
    # y32[t, cols] += Σ_j corr_t[j]·W2ᵀ[j, cols] per token; relaxed: the column block's ticket orders them
    tl.atomic_add(y32_ptr + cols, tl.sum(c0[:, None] * w2, axis=0), mask=om, sem="relaxed")
    if NT > 1:
        tl.atomic_add(y32_ptr + D + cols, tl.sum(c1[:, None] * w2, axis=0), mask=om, sem="relaxed")
    if NT > 2:
        tl.atomic_add(y32_ptr + 2 * D + cols, tl.sum(c2[:, None] * w2, axis=0), mask=om, sem="relaxed")
    if NT > 3:
        tl.atomic_add(y32_ptr + 3 * D + cols, tl.sum(c3[:, None] * w2, axis=0), mask=om, sem="relaxed")


@triton.jit
def _close_column_block(
    y32_ptr, y_ptr, ws_ptr, cb, cols, cmask, count, last, D, NT: tl.constexpr, FENCE: tl.constexpr
):  # fmt: skip
    # After an item's adds to column block cb: the item that completes the block (ticket == last)
    # casts it into y and re-zeroes the ticket. One fence per thread, then the CTA barrier, then the
    # ticket (acq_rel): every thread's adds are visible before it (not one fence per atomic).
    if FENCE:
        _gpu_fence(count)
    tl.debug_barrier()
    ticket = tl.atomic_add(ws_ptr + 2 + cb, 1)
    if ticket == last:
        _cast_block(y32_ptr, y_ptr, ws_ptr, cb, cols, cmask, D, NT)
    return ticket


@triton.jit
def _close(
    y32_ptr, y_ptr, ws_ptr, cb, cols, cmask, count, last, n_items, D, NT: tl.constexpr, FENCE: tl.constexpr, pd_ptr,
    SPIN: tl.constexpr, ONE: tl.constexpr,
):  # fmt: skip
    # a down item's end: its column block's ticket (the block's cast) and the items done (the list's reset); ONE
    # (ONE_CLOSE): both from one atomic. Returns the block's ticket
    if ONE:
        ticket = _close_block_and_item(
            y32_ptr, y_ptr, ws_ptr, cb, cols, cmask, count, last, n_items, D, NT, FENCE, pd_ptr, SPIN
        )  # fmt: skip
    else:
        ticket = _close_column_block(y32_ptr, y_ptr, ws_ptr, cb, cols, cmask, count, last, D, NT, FENCE)
        _close_item(ws_ptr, n_items, pd_ptr, SPIN)
    return ticket


@triton.jit
def _cast_cols(y32_ptr, y_ptr, cols, cmask, D, NT: tl.constexpr):
    # the fp32 sums of columns `cols` into y, each of NT tokens (.cg: other programs' adds, from L2)
    for t in tl.static_range(NT):
        yv = tl.load(y32_ptr + t * D + cols, mask=cmask, cache_modifier=".cg")
        tl.store(y_ptr + t * D + cols, yv.to(y_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _cast_block(y32_ptr, y_ptr, ws_ptr, cb, cols, cmask, D, NT: tl.constexpr):
    # the column block's fp32 sums into y, and its ticket back to zero
    _cast_cols(y32_ptr, y_ptr, cols, cmask, D, NT)
    tl.store(ws_ptr + 2 + cb, 0)


@triton.jit
def _finish_kernel(y32_ptr, y_ptr, ws_ptr, D, pd_ptr=None, NT: tl.constexpr = 1, BC: tl.constexpr = 512,
                   PDL: tl.constexpr = False, SPIN: tl.constexpr = False):  # fmt: skip
    # DOWN_FINISH: once the down grid has finished (its corrections added into y32, no column tickets), program pid
    # casts y32's columns [pid·BC, pid·BC + BC) into y, and program 0 resets the list count and the items-done
    # counter (SPIN: and the predictor programs' count) for the next call
    pid = tl.program_id(0)
    _pdl_wait(PDL)
    cols = pid * BC + tl.arange(0, BC)
    _cast_cols(y32_ptr, y_ptr, cols, cols < D, D, NT)
    if pid == 0:
        _reset_list(ws_ptr, pd_ptr, SPIN)


@triton.jit
def _reset_list(ws_ptr, pd_ptr, SPIN: tl.constexpr):
    # the very last item: the list count and the items-done counter (SPIN: and the predictor programs' count) to zero
    tl.store(ws_ptr, 0)
    tl.store(ws_ptr + 1, 0)
    if SPIN:
        tl.store(pd_ptr, 0)


@triton.jit
def _close_block_and_item(
    y32_ptr, y_ptr, ws_ptr, cb, cols, cmask, count, last, n_items, D, NT: tl.constexpr, FENCE: tl.constexpr, pd_ptr,
    SPIN: tl.constexpr,
):  # fmt: skip
    # ONE_CLOSE's item end: _close_column_block and _close_item with one round trip. The fence in every thread and
    # the CTA barrier release the item's adds and its reads of the list; then one relaxed atomic takes both the
    # block's ticket (element 0) and the items done (element 1); the acquire fence is paid only where an item acts on
    # what it got (the block's cast, the list's reset)
    if FENCE:
        _gpu_fence(count)
    tl.debug_barrier()
    two = tl.arange(0, 2)
    got = tl.atomic_add(ws_ptr + tl.where(two == 0, 2 + cb, 1), 1, sem="relaxed")
    ticket = tl.sum(tl.where(two == 0, got, 0))
    done = tl.sum(tl.where(two == 1, got, 0))
    if ticket == last:
        if FENCE:
            _gpu_fence(ticket)
        _cast_block(y32_ptr, y_ptr, ws_ptr, cb, cols, cmask, D, NT)
    if done == n_items - 1:
        if FENCE:
            _gpu_fence(done)
        _reset_list(ws_ptr, pd_ptr, SPIN)
    return ticket


@triton.jit
def _close_item(ws_ptr, n_items, pd_ptr=None, SPIN: tl.constexpr = False):
    # the very last item resets the list count and this counter (every program has read the count); SPIN: and
    # the count of kernel 1's finished predictor programs (every up program has passed its poll by now)
    tl.debug_barrier()
    done = tl.atomic_add(ws_ptr + 1, 1)
    if done == n_items - 1:
        _reset_list(ws_ptr, pd_ptr, SPIN)


@triton.jit
def _updown_corr(acc, b1v, a, c, flags_ptr, neur, jmask, t, F, ACT: tl.constexpr):
    # token t's corrections of the item's neurons from its [BJ, BK] partial products
    z = tl.sum(acc, axis=1) + b1v
    fl = tl.load(flags_ptr + t * F + neur, mask=jmask, other=0)
    return tl.where(fl != 0, _activation(z, ACT) - a * z - c, 0.0)


@triton.jit
def _updown_kernel(
    x_ptr, w1_ptr, w2t_ptr, b1_ptr, slope_ptr, icpt_ptr, flags_ptr, idx_ptr, ws_ptr, y32_ptr, y_ptr,
    D, F, n_cols,
    NT: tl.constexpr, BJ: tl.constexpr, BK: tl.constexpr, BC: tl.constexpr, ACT: tl.constexpr, FENCE: tl.constexpr,
):  # fmt: skip
    # Kernels 2 and 3 in one launch (batch 1..4, no tl.dot): an item is BJ listed neurons; its program
    # computes their exact z over all of d (rows of W1), the corrections, and scatters them through
    # the same rows of W2ᵀ into y32 (fp32 atomics), one column block of BC at a time. No partials
    # travel between kernels. The last item to finish a column block casts it into y; the very last
    # item resets the list count. With an empty list one item still runs, to cast y32. The adds are
    # relaxed (no fence per atomic); each thread fences once before the block's ticket (FENCE: the
    # interpreter has no inline PTX and runs programs one after another).
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    count = tl.load(ws_ptr)
    n_items = tl.maximum(tl.cdiv(count, BJ), 1)
    for item in range(pid, n_items, nprog):
        js = item * BJ + tl.arange(0, BJ)
        jmask = js < count
        neur = tl.load(idx_ptr + js, mask=jmask, other=0)
        rows = neur[:, None].to(tl.int64) * D
        acc0 = tl.zeros((BJ, BK), dtype=tl.float32)
        acc1 = tl.zeros((BJ, BK), dtype=tl.float32)
        acc2 = tl.zeros((BJ, BK), dtype=tl.float32)
        acc3 = tl.zeros((BJ, BK), dtype=tl.float32)
        for k0 in range(0, D, BK):
            ks = k0 + tl.arange(0, BK)
            km = ks < D
            w = tl.load(w1_ptr + rows + ks[None, :], mask=jmask[:, None] & km[None, :], other=0.0).to(tl.float32)
            acc0, acc1, acc2, acc3 = _fma_tokens(acc0, acc1, acc2, acc3, w, x_ptr, ks, km, D, NT)
        b1v = tl.load(b1_ptr + neur, mask=jmask, other=0.0).to(tl.float32)
        a = tl.load(slope_ptr + neur, mask=jmask, other=0.0)
        c = tl.load(icpt_ptr + neur, mask=jmask, other=0.0)
        corr0 = _updown_corr(acc0, b1v, a, c, flags_ptr, neur, jmask, 0, F, ACT)
        corr1 = corr0
        corr2 = corr0
        corr3 = corr0
        if NT > 1:
            corr1 = _updown_corr(acc1, b1v, a, c, flags_ptr, neur, jmask, 1, F, ACT)
        if NT > 2:
            corr2 = _updown_corr(acc2, b1v, a, c, flags_ptr, neur, jmask, 2, F, ACT)
        if NT > 3:
            corr3 = _updown_corr(acc3, b1v, a, c, flags_ptr, neur, jmask, 3, F, ACT)
        for cb in range(0, n_cols):
            cols = cb * BC + tl.arange(0, BC)
            cmask = cols < D
            w2 = tl.load(w2t_ptr + rows + cols[None, :], mask=jmask[:, None] & cmask[None, :], other=0.0)
            w2 = w2.to(tl.float32)
            om = cmask & (count > 0)
            _scatter(y32_ptr, D, cols, w2, om, corr0, corr1, corr2, corr3, NT)
            _close_column_block(y32_ptr, y_ptr, ws_ptr, cb, cols, cmask, count, n_items - 1, D, NT, FENCE)
        _close_item(ws_ptr, n_items)


def _check(name: str, t: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: must be contiguous")


KERNEL_SETS = ("v1", "small", "plane")

# this module's launch choices besides PLANE_LAUNCH, as an ffn_bench --plane-best run records them and
# e2e_hf --kernel-launch applies them: JSON key -> (module setting, type); plus "updown_launch" (UPDOWN_LAUNCH_KEYS)
LAUNCH_SETTINGS: dict[str, tuple[str, type]] = {
    "small_updown_batch": ("SMALL_UPDOWN_BATCH", int),
    "fused_updown_batch": ("FUSED_UPDOWN_BATCH", int),
    "pdl_updown": ("PDL_UPDOWN", bool),
    "down_early": ("DOWN_EARLY", bool),
    "xq_pdl": ("XQ_PDL", bool),
    "up_spin": ("UP_SPIN", bool),
    "up_spin_programs_per_sm": ("UP_SPIN_PROGRAMS_PER_SM", int),
    "up_in_k1": ("UP_IN_K1", bool),
    "list_ahead": ("LIST_AHEAD", bool),
    "one_close": ("ONE_CLOSE", bool),
    "up_pf_w2": ("UP_PF_W2", bool),
    "down_finish": ("DOWN_FINISH", bool),
    "wf_up_frac": ("WF_UP_FRAC", float),
    "wf_down_frac": ("WF_DOWN_FRAC", float),
}


def launch_settings() -> dict[str, Any]:
    """The launch choices in force (LAUNCH_SETTINGS' keys and "updown_launch"), as a JSON-ready dict."""
    g = globals()
    return {key: g[name] for key, (name, _) in LAUNCH_SETTINGS.items()} | {
        "updown_launch": {k: g[k] for k in UPDOWN_LAUNCH_KEYS}
    }


def apply_launch_settings(chosen: dict[str, Any]) -> None:
    """Set the launch choices a launch_settings() record holds; settings it lacks keep their values. A ValueError
    names an up/down key this module does not know (and nothing after it is set)."""
    g = globals()
    for key, (name, kind) in LAUNCH_SETTINGS.items():
        if key in chosen:
            g[name] = kind(chosen[key])
    for key, value in chosen.get("updown_launch", {}).items():
        if key not in UPDOWN_LAUNCH_KEYS:
            raise ValueError(f"unknown up/down launch setting {key!r} (known: {', '.join(UPDOWN_LAUNCH_KEYS)})")
        g[key] = int(value)


def column_chunks(d: int, splits: int, bk: int) -> tuple[int, int]:
    """(chunks, steps): d columns in about `splits` chunks of `steps` whole steps of bk columns each (so every
    chunk starts at a multiple of bk; the last may be shorter): how folded-row tiles split their rows' columns."""
    steps = triton.cdiv(triton.cdiv(d, splits), bk)
    return triton.cdiv(d, steps * bk), steps


def takes_int8_x(pred: TiledPredictor, n: int) -> bool:
    """Whether the op's default launch at batch n (the launch settings in force) rounds x to int8 words for its
    predictor (the plane kernel's I8 option, int2 groups of full code words): the calls that can take them ready
    (x_i8: tardis::add3_layer_norm_i8) instead of from the int8 x kernel."""
    plane = default_kernels(n) == "plane" and 1 <= n <= SMALL_MAX_BATCH
    return plane and bool(PLANE_LAUNCH[n].get("I8")) and pred.fills_code_words


def default_kernels(n: int) -> str:
    """The kernel set a batch of n tokens runs by default (measured on the H200, see bench/NOTES.md)."""
    if n <= PLANE_BATCH:
        return "plane"
    if n <= SMALL_BATCH:
        return "small"
    return "v1"


class DecodeLaunch:
    """Buffers and the three launches of one decode call, each callable alone (for per-kernel timing).

    `kernels` picks the kernel set: "v1" (tensor cores, any batch), "small" (batch 1..4, no tl.dot),
    "plane" (batch 1..4: the plane-order predictor kernel without tl.dot, then v1's up/down); default
    `default_kernels(n)`. `run()` launches all three in order.
    """

    def __init__(
        self,
        x: torch.Tensor,
        *,
        wf: torch.Tensor,
        bf: torch.Tensor,
        pred: TiledPredictor,
        b1: torch.Tensor,
        lo_in: torch.Tensor,
        hi_in: torch.Tensor,
        w1: torch.Tensor,
        w2t: torch.Tensor,
        slope: torch.Tensor,
        intercept: torch.Tensor,
        act: str,
        workspace: torch.Tensor,
        counts: torch.Tensor,
        kernels: str | None = None,
        out32: bool = False,
        reset_first: bool = False,
        x_i8: Int8X | None = None,
    ) -> None:
        n, d = x.shape
        f = w1.shape[0]
        dt = x.dtype
        weights = (("wf", wf, (d, d)), ("w1", w1, (f, d)), ("w2t", w2t, (f, d)), ("bf", bf, (d,)), ("b1", b1, (f,)))
        for name, t, shape in weights:
            _check(name, t, shape, dt)
        for name, t in (("lo_in", lo_in), ("hi_in", hi_in), ("slope", slope), ("intercept", intercept)):
            _check(name, t, (f,), torch.float32)
        _check("x", x, (n, d), None)
        _check("workspace", workspace, (workspace_size(d, f),), torch.int32)
        _check("counts", counts, (4,), torch.int64)
        if pred.in_features != d or pred.out_features != f:
            raise ValueError(f"predictor is {pred.out_features}×{pred.in_features}, layer is {f}×{d}")
        if act not in ACT_IDS:
            raise ValueError(f"activation {act!r} has no kernel; expected one of {sorted(ACT_IDS)}")
        self.kernels = default_kernels(n) if kernels is None else kernels
        if self.kernels not in KERNEL_SETS:
            raise ValueError(f"kernels must be one of {KERNEL_SETS}, got {self.kernels!r}")
        if self.kernels != "v1" and not 1 <= n <= SMALL_MAX_BATCH:
            raise ValueError(f"the {self.kernels!r} kernels take 1..{SMALL_MAX_BATCH} tokens, got {n}")
        self.small = self.kernels == "small"  # the v2 small kernel 1
        # up/down: the small kernels (no tl.dot, exact token count) or v1's (tensor cores, tokens padded to 16)
        self.small_updown = self.small or (self.kernels == "plane" and n <= SMALL_UPDOWN_BATCH)
        # kernels 2 and 3 as one launch (the fused up/down kernel; batch 1..4)
        self.fused_updown = self.kernels != "v1" and n <= FUSED_UPDOWN_BATCH
        self.up_spin = UP_SPIN  # run(): the small up kernel starts when kernel 1's predictor programs are done
        self.k1_z = UP_IN_K1  # see up_in_k1
        self.list_ahead = LIST_AHEAD  # the small up kernel's first list entries loaded beside the count
        self.one_close = ONE_CLOSE  # a small down item's ticket and done count from one atomic
        self.up_pf_w2 = UP_PF_W2  # the small up kernel prefetches its items' W2ᵀ rows into L2
        self.down_finish = DOWN_FINISH  # see finishes
        # out32: run() returns y32 (the fp32 sums) instead of y; with reset_first too, a call whose list count the
        # int8 x kernel zeroes at its start skips the finish kernel (see run). reset_first: the workspace's list
        # count and items done may be left over from such a call, so this call zeroes them before kernel 1
        self.out32, self.reset_first = out32, reset_first
        self.xq_resets = False  # stacked(): the int8 x kernel zeroed them (RESET)
        # x_i8: x's int8 words, s_x and word sums (layout.pack_x_i8) written before this call by the launch that
        # wrote x (tardis::add3_layer_norm_i8), which also zeroed the counters: no int8 x kernel here (the launch
        # must take int8 x: takes_int8_x)
        if x_i8 is not None:
            if not takes_int8_x(pred, n) or kernels not in (None, default_kernels(n)):
                raise ValueError(f"int8 x words given, but the launch at batch {n} does not take int8 x "
                                 "(takes_int8_x): leave x_i8 out")  # fmt: skip
            g, wpg = pred.n_groups, pred.words_per_group
            _check("x_i8 words", x_i8[0], (n, g, wpg, 4), torch.int32)
            _check("x_i8 scales", x_i8[1], (n, g), torch.float32)
            _check("x_i8 sums", x_i8[2], (n, g, wpg), torch.float32)
        self.x_i8 = x_i8
        # diagnostics (bench/ffn_bench.py --tail-trace): an int64 [3, programs, 16] tensor set here makes kernel 1
        # and the small up and down kernels stamp (globaltimer, clock64) pairs into it; see set_trace
        self.trace: torch.Tensor | None = None
        self.n_pred = 0  # kernel 1's predictor programs (set by stacked(); the up/down kernels' poll target)
        self.x, self.wf, self.bf, self.pred, self.b1, self.lo_in, self.hi_in = x, wf, bf, pred, b1, lo_in, hi_in
        self.w1, self.w2t, self.slope, self.intercept, self.act = w1, w2t, slope, intercept, ACT_IDS[act]
        self.ws, self.counts = workspace, counts
        lay = workspace_layout(d, f)
        self.tick = workspace[lay["tile_tickets"][0] :][: lay["tile_tickets"][1]]
        self.pred_done = workspace[lay["pred_done"][0] :][:1]
        self.zacc = workspace[lay["zacc"][0] :].view(torch.float32)
        self.n, self.d, self.f = n, d, f
        self.bn_dot = max(16, triton.next_power_of_2(n))
        # tl.dot on fp32 operands would round them to TF32 by default: fp32 models get fp32 products
        self.dot_prec = "ieee" if dt == torch.float32 else "tf32"
        self.y32 = torch.empty(n, d, device=x.device, dtype=torch.float32)
        self.y = torch.empty(n, d, device=x.device, dtype=dt)
        self.flags = torch.empty(n, f, device=x.device, dtype=torch.int8)
        self.idx = torch.empty(f, device=x.device, dtype=torch.int32)
        self.up_bk = UP_SMALL_BLOCK_K if self.small_updown else UP_BLOCK_K  # the up kernel's step along d
        # chunks start at multiples of both up kernels' steps (a launch may switch small_updown after this)
        step = max(self.up_bk, UP_BLOCK_K)
        self.chunk = triton.cdiv(triton.cdiv(d, UP_SPLITS), step) * step
        self.n_splits = triton.cdiv(d, self.chunk)
        self.zp = torch.empty(self.n_splits, self.bn_dot, f, device=x.device, dtype=torch.float32)
        props = torch.cuda.get_device_properties(x.device) if x.is_cuda else None
        self.sms = props.multi_processor_count if props is not None else 2
        # I8 (plane kernel, int2 groups of 16 full code planes): x as int8 words for dp4a (allocated by
        # stacked() only when the launch uses it)
        self.i8_ok = pred.fills_code_words
        # the up/down kernels launched before the previous kernel ends (programmatic dependent launch;
        # griddepcontrol: NVIDIA sm_90 and later)
        self.pdl = PDL_UPDOWN and pdl_supported(x.device)
        # the small down kernel reads kernel 1's list and its W2ᵀ rows before it waits for the small up kernel
        self.down_early = DOWN_EARLY
        # I8: kernel 1 launched behind the int8 x kernel with PDL too (its Wf programs need not wait for the x
        # words); only where the up/down kernels are (the combinations the GPU tests and the bench ran)
        self.xq_pdl = self.pdl and XQ_PDL
        # kernel-1 launch configurations (the benchmark sweeps them)
        self.k1_cfg = {"GU": SMALL_GROUPS_PER_STEP, "num_warps": SMALL_WARPS, "BKF": WF_BLOCK_K, "BMF": WF_BLOCK_ROWS}
        self.plane_cfg: dict[str, Any] = {"BKF": WF_BLOCK_K, "BMF": WF_BLOCK_ROWS} | PLANE_LAUNCH[
            min(n, SMALL_MAX_BATCH)
        ]

    def set_trace(self, trace: torch.Tensor | None) -> None:
        """Stamp the kernels' phases into `trace` (int64 [3, rows, 16], zeroed by the caller; None: off). Row p of
        trace[k] is program p of kernel 1 / up / down; slots 0..5 hold %globaltimer (ns) and slots 8..13 %clock64
        at the same points: kernel 1: 0 end, 6 = 1 for a predictor program; up: 0 start, 1 its wait over (the list
        count read), 2 its last partials stored, 6 the grid's items; down: 0 start, 1 its wait for the up grid
        over, 2 its corrections, 3 its close (ticket, and the cast where it had the block's last), 6 = 1 where it
        cast, 7 the item (a program's last one). A program without items leaves 2 and 3 (up: 2 is its wait's end)
        as they are. For the batch-1 plane path with the small up/down kernels, no UP_SPIN, no moved folded rows, on
        the GPU (the stamps are inline PTX)."""
        if trace is not None:
            if _INTERPRET or not trace.is_cuda:
                raise ValueError("kernel traces read the GPU's clocks (inline PTX): they need a CUDA device")
            plain = self.plane_small_updown and not (self.up_spin or self.up_in_k1)
            if not (plain and self.wf_split()[0] == self.d):
                raise ValueError(
                    "a kernel trace needs the plane kernel 1 with the small up/down kernels, without UP_SPIN, "
                    "UP_IN_K1 or moved folded rows"
                )
            if trace.dtype != torch.int64 or trace.dim() != 3 or trace.shape[0] != 3 or trace.shape[2] != 16:
                raise ValueError(f"trace must be int64 [3, rows, 16], got {trace.dtype} {list(trace.shape)}")
        self.trace = trace

    def _trace_args(self, k: int, grid: int) -> dict[str, Any]:
        # kernel k's trace arguments (none without a trace); a grid of more programs than the trace has rows raises
        if self.trace is None:
            return {}
        if grid > self.trace.shape[1]:
            raise ValueError(f"the trace has {self.trace.shape[1]} rows a kernel; kernel {k + 1}'s grid has {grid}")
        return {"tr_ptr": self.trace[k], "TR": True}

    @property
    def finishes(self) -> bool:
        """run(): the small down kernel adds its corrections without column tickets and the finish kernel follows it
        (DOWN_FINISH; where the small down kernel runs: batch 1..SMALL_UPDOWN_BATCH, not the fused up/down kernel)."""
        return self.down_finish and self.small_updown and not self.fused_updown

    @property
    def plane_small_updown(self) -> bool:
        """This call runs the plane kernel 1 and then the small up/down kernels (not the fused one): the launch that
        UP_SPIN, UP_IN_K1 and the folded-row moves apply to."""
        return self.kernels == "plane" and self.small_updown and not self.fused_updown

    @property
    def up_in_k1(self) -> bool:
        """run(): kernel 1's predictor programs compute the union rows' exact z and no up kernel runs (UP_IN_K1;
        where the plane kernel 1 runs with the small up/down kernels)."""
        return self.k1_z and self.plane_small_updown

    def wf_split(self) -> tuple[int, int]:
        """(ra, rb): folded rows [0, ra) run in kernel 1, [ra, rb) in the up kernel's grid, [rb, d) in the down
        kernel's grid (WF_UP_FRAC; WF_DOWN_FRAC in whole down column blocks from the last). Moves only where this
        call runs the plane kernel with the small up/down kernels (not the fused one)."""
        d, bmf, mb = self.d, self.plane_cfg["BMF"], WF_MOVED_ROWS
        if not self.plane_small_updown:
            return d, d
        n_cols = triton.cdiv(d, DOWN_BLOCK_COLS)
        blocks = min(n_cols, round(WF_DOWN_FRAC * d / DOWN_BLOCK_COLS))
        up = 0 if self.up_in_k1 else round(WF_UP_FRAC * d)  # UP_IN_K1: there is no up grid
        if blocks == 0 and up == 0:
            return d, d
        if DOWN_BLOCK_COLS % mb or DOWN_BLOCK_COLS % bmf or (bmf % mb and mb % bmf):
            raise ValueError(
                f"moved folded rows need tiles that fit the down column blocks and kernel 1's programs: "
                f"WF_MOVED_ROWS = {mb} and BMF = {bmf} must each divide DOWN_BLOCK_COLS = {DOWN_BLOCK_COLS}, and "
                f"one of them the other"
            )
        rb = (n_cols - blocks) * DOWN_BLOCK_COLS if blocks else d
        step = max(bmf, mb)
        return (rb if up == 0 else max(0, (rb - up) // step * step)), rb

    def _wf_tiles(self, r0: int, r1: int) -> dict[str, Any]:
        """The launch arguments of the moved folded rows [r0, r1): tiles of WF_MOVED_ROWS rows by column chunks."""
        n_ks, kc = column_chunks(self.d, WF_MOVED_SPLITS, WF_BLOCK_K)
        n = triton.cdiv(r1 - r0, WF_MOVED_ROWS) * n_ks
        return {"wf0": r0 // WF_MOVED_ROWS, "n_wf": n, "n_ks": n_ks, "kc": kc, "WF": n > 0}

    def stacked(self, part: str = "all", spin: bool = False) -> None:
        """Kernel 1 over [Wf ; Q(W1)]; part 'wf' or 'pred' launches only those programs (timing only). spin: its
        predictor programs count themselves done for up(spin=True) / down(spin=True), which must follow."""
        p, n, d, f = self.pred, self.n, self.d, self.f
        per_word = 32 // p.bits
        args = (
            self.x, self.wf, self.bf, p.words, p.scales, p.offsets, self.b1, self.lo_in, self.hi_in,
            self.y32, self.flags, self.idx, self.ws, self.counts,
        )  # fmt: skip
        n_tiles = p.words.shape[0]
        cfg: dict[str, Any]
        if self.kernels == "plane":
            cfg = self.plane_cfg
            h2_ok = p.fills_code_words and p.words_per_group in H2_WPG
            if cfg["H2"] and not (h2_ok and self.x.dtype in (torch.bfloat16, torch.float16)):
                cfg = cfg | {"H2": False}  # fp16x2 path: int2 groups of 16 full code planes, 16-bit x
            i8 = bool(cfg.get("I8")) and self.i8_ok
            cfg = cfg | {"I8": i8, "H2": cfg["H2"] and not i8}
            split = max(1, min(cfg["SPLIT"], p.n_groups)) if p.block_rows == PRED_ROWS else 1
            cg = triton.cdiv(p.n_groups, split)
            split = triton.cdiv(p.n_groups, cg)  # no empty chunk
            cfg = cfg | {"SPLIT": split}
            wf_a, _ = self.wf_split()  # rows [wf_a, d) run in the up / down grids
            n_wf = triton.cdiv(wf_a, cfg["BMF"])
            wk_n, wk_kc = column_chunks(d, cfg["WK"], cfg["BKF"])  # WK > 1: the Wf tiles' column chunks
            if cfg["WK"] > 1:  # row blocks × column chunks
                n_wf *= wk_n
            n_pred = triton.cdiv(n_tiles, cfg["T"]) * split
            self.n_pred = n_pred
        else:
            cfg = self.k1_cfg
            n_wf = triton.cdiv(d, cfg["BMF"] if self.small else WF_BLOCK_ROWS)
            n_pred = n_tiles
        grid = {"all": n_wf + n_pred, "wf": n_wf, "pred": n_pred}[part]
        n_wf_arg = 0 if part == "pred" else n_wf
        wpg = p.words_per_group
        if self.kernels == "plane":
            n_first = (0 if part == "wf" else n_pred) if cfg["PRED_FIRST"] else n_wf_arg
            xq, xsx, xsum = self.ws, self.zacc, self.zacc  # unread without I8
            xqw = False  # kernel 1 launched before _xq_kernel ends (its predictor programs wait for it)
            # y32 zeroed for the Wf tiles' adds (by the int8 x kernel where it runs)
            zero_by_xq = cfg["WK"] > 1 and cfg["I8"] and part != "wf" and self.x_i8 is None
            if cfg["WK"] > 1 and not zero_by_xq and part != "pred":
                self.y32.zero_()
            if cfg["I8"] and self.x_i8 is not None:  # written with x, the counters zeroed with them
                xq, xsx, xsum = self.x_i8
                self.xq_resets = self.reset_first
            elif cfg["I8"]:
                dev = self.x.device
                xq = torch.empty(n, p.n_groups, wpg, 4, device=dev, dtype=torch.int32)
                xsx = torch.empty(n, p.n_groups, device=dev, dtype=torch.float32)
                xsum = torch.empty(n, p.n_groups, wpg, device=dev, dtype=torch.float32)
                if part != "wf":
                    xqw = self.xq_pdl
                    self.xq_resets = self.reset_first
                    _xq_kernel[(n * p.n_groups,)](
                        self.x, xq, xsx, xsum, d, p.n_groups, GS=p.group_size, WPG=wpg, ASM=not _INTERPRET,
                        PDL=xqw, y32_ptr=self.y32, n_zero=n * d, ZERO=zero_by_xq, ws_ptr=self.ws,
                        RESET=self.xq_resets, num_warps=1,
                    )  # fmt: skip
            if not self.xq_resets:
                self._reset_counters()
            pdl_k1: dict[str, Any] = {"XQW": True, "launch_pdl": True} if xqw else {}
            if wf_a < d and cfg["WK"] == 1:  # the up / down grids add their folded rows into y32: zeroed here
                pdl_k1 |= {"zr0": wf_a, "ZR": True}
            pdl_k1 |= {"wk_n": wk_n, "wk_kc": wk_kc}
            if spin and part == "all":
                pdl_k1 |= {"pd_ptr": self.pred_done, "SPIN": True, "FENCE": not _INTERPRET}
            if self.up_in_k1 and part != "wf":  # the union rows' z in the predictor programs' epilogue
                cfg = cfg | ({"maxnreg": Z_MAXNREG} if cfg.get("maxnreg") is None else {})
                pdl_k1 |= {"w1_ptr": self.w1, "zp_ptr": self.zp, "UPK1": True, "NKZ": triton.cdiv(d, Z_BLOCK_K)}
            _stacked_plane_kernel[(grid,)](
                *args, self.zacc, self.tick, xq, xsx, xsum, d, f, p.scales.shape[1], p.n_groups,
                p.n_groups if cfg["I8"] else d // p.group_size, n_tiles, n_first, 0x3F800000, cg, H2_MAGIC,
                NT=n, BITS=p.bits, GS=p.group_size, WPG=wpg, NPL=min(per_word, triton.cdiv(p.group_size, wpg)),
                BR=p.block_rows, I8_ASM=not _INTERPRET, PDL=self.pdl, **{k: v for k, v in cfg.items() if v is not None},
                **pdl_k1, **(self._trace_args(0, grid) if part == "all" else {}),
            )  # fmt: skip
        elif self.small:
            self._reset_counters()
            _stacked_small_kernel[(grid,)](
                *args, d, f, p.scales.shape[1], p.n_groups, n_wf_arg,
                NT=n, BITS=p.bits, GS=p.group_size, WPG=wpg, PW=per_word, BM=p.block_rows, **cfg,
            )  # fmt: skip
        else:
            self._reset_counters()
            _stacked_kernel[(grid,)](
                *args, n, d, f, p.scales.shape[1], p.n_groups, n_wf_arg,
                BN=self.bn_dot, BITS=p.bits, GS=p.group_size, WPG=wpg, PW=per_word,
                PWP=triton.next_power_of_2(per_word), BM=p.block_rows, BMF=WF_BLOCK_ROWS, BKF=WF_BLOCK_K,
                DOT_PREC=self.dot_prec,
            )  # fmt: skip

    def _reset_counters(self) -> None:
        # reset_first without the int8 x kernel: the list count and items done zeroed before kernel 1
        if self.reset_first:
            zero_counters(self.ws)

    def _pdl_args(self) -> dict[str, bool]:
        # PDL: the kernel waits for the previous grid itself, so it may be launched before that one ends
        return {"PDL": True, "launch_pdl": True} if self.pdl else {"PDL": False}

    def _spin_args(self, spin: bool, poll: bool) -> dict[str, Any]:
        # up(spin) polls the count of kernel 1's finished predictor programs (UP_SPIN; after stacked(spin=True)),
        # down(spin) resets it
        if not spin:
            return {}
        if not (self.small_updown and self.kernels == "plane" and self.n_pred > 0):
            raise ValueError("spin needs the plane kernel 1 (launched first, with spin) and the small up/down kernels")
        return {"pd_ptr": self.pred_done, "SPIN": True} | (
            {"n_pred": self.n_pred, "SLEEP_NS": UP_SPIN_SLEEP_NS} if poll else {}
        )

    def up(self, spin: bool = False) -> None:
        """Kernel 2: z partials of the listed neurons (spin: from kernel 1's predictor programs' end on)."""
        per_sm = UP_SPIN_PROGRAMS_PER_SM if spin else PROGRAMS_PER_SM  # spinning: fewer pollers holding slots
        grid = min(triton.cdiv(self.f, UP_BLOCK_NEURONS) * self.n_splits, self.sms * per_sm)
        common = (self.x, self.w1, self.idx, self.ws, self.zp)
        if self.small_updown:
            tiles = self._wf_tiles(*self.wf_split())  # folded-row tiles at the front of this grid
            _up_small_kernel[(grid + tiles["n_wf"],)](
                *common, self.d, self.f, self.n_splits, self.chunk, self.wf, self.bf, self.y32, NT=self.n,
                BJ=UP_BLOCK_NEURONS, BK=self.up_bk, US=UP_STAGES, EARLY=self.down_early, MB=WF_MOVED_ROWS,
                BKF=WF_BLOCK_K, WS=WF_MOVED_STAGES, FENCE=not _INTERPRET, AHEAD=self.list_ahead, **tiles,
                ONE=self.chunk == self.up_bk and UP_STAGES <= 1, num_warps=UP_WARPS, w2t_ptr=self.w2t,
                PFW2=self.up_pf_w2, PFL=triton.next_power_of_2(triton.cdiv(self.chunk, 64)), ASM=not _INTERPRET,
                **self._pdl_args(), **self._spin_args(spin, poll=True), **self._trace_args(1, grid),
            )  # fmt: skip
        else:
            _up_kernel[(grid,)](
                *common, self.n, self.d, self.f, self.n_splits, self.chunk, BN=self.bn_dot, BJ=UP_BLOCK_NEURONS,
                BK=UP_BLOCK_K, DOT_PREC=self.dot_prec, **self._pdl_args(),
            )  # fmt: skip

    def down(self, spin: bool = False) -> None:
        """Kernel 3: corrections scattered into y32, cast into y; resets the workspace (spin: as up's)."""
        if DOWN_BLOCK_COLS < TICKET_BLOCK_COLS:  # a launch set at run time (an ffn_bench JSON's updown_launch)
            raise ValueError(
                f"DOWN_BLOCK_COLS = {DOWN_BLOCK_COLS}: the workspace holds one column ticket per "
                f"{TICKET_BLOCK_COLS} columns; use a column block of at least {TICKET_BLOCK_COLS}"
            )
        n_cols = triton.cdiv(self.d, DOWN_BLOCK_COLS)
        grid = min(max(triton.cdiv(self.f, DOWN_BLOCK_NEURONS), 1) * n_cols, self.sms * PROGRAMS_PER_SM)
        common = (
            self.w2t,
            self.b1,
            self.slope,
            self.intercept,
            self.flags,
            self.idx,
            self.ws,
            self.zp,
            self.y32,
            self.y,
        )
        if self.small_updown:
            _, rb = self.wf_split()
            tiles = self._wf_tiles(rb, self.d)  # folded-row tiles at the front of this grid
            # UP_IN_K1: kernel 1 wrote z whole (one split), and this launch follows it directly, so its list is not
            # final when this grid starts: no early reads
            n_splits = 1 if self.up_in_k1 else self.n_splits
            _down_small_kernel[(grid + tiles["n_wf"],)](
                *common, self.d, self.f, n_splits, n_cols, self.x, self.wf, self.bf,
                cb0=rb // DOWN_BLOCK_COLS if rb < self.d else n_cols, NT=self.n, BJ=DOWN_BLOCK_NEURONS,
                BC=DOWN_BLOCK_COLS, ACT=self.act, NSP=max(2, triton.next_power_of_2(n_splits)), FENCE=not _INTERPRET,
                num_warps=DOWN_WARPS, EARLY=self.down_early and not self.up_in_k1, MB=WF_MOVED_ROWS, BKF=WF_BLOCK_K,
                WS=WF_MOVED_STAGES, ONE_CLOSE=self.one_close, FINISH=self.finishes,
                **tiles, **self._pdl_args(), **self._spin_args(spin, poll=False), **self._trace_args(2, grid),
            )  # fmt: skip
        else:
            _down_kernel[(grid,)](
                *common, self.n, self.d, self.f, self.n_splits, n_cols, BN=self.bn_dot, BJ=DOWN_BLOCK_NEURONS,
                BC=DOWN_BLOCK_COLS, ACT=self.act, FENCE=not _INTERPRET, DOT_PREC=self.dot_prec, **self._pdl_args(),
            )  # fmt: skip

    def finish(self, spin: bool = False) -> None:
        """Kernel 4 (DOWN_FINISH, after down()): y32 cast into y, the list count reset (spin: as down's)."""
        grid = triton.cdiv(self.d, FINISH_BLOCK_COLS)
        _finish_kernel[(grid,)](
            self.y32, self.y, self.ws, self.d, NT=self.n, BC=FINISH_BLOCK_COLS, num_warps=4, **self._pdl_args(),
            **self._spin_args(spin, poll=False),
        )  # fmt: skip

    def updown(self) -> None:
        """Kernels 2 and 3 in one launch (batch 1..4): exact z, corrections, scatter, cast; resets the list."""
        grid = min(max(triton.cdiv(self.f, UPDOWN_BLOCK_NEURONS), 1), self.sms * PROGRAMS_PER_SM)
        _updown_kernel[(grid,)](
            self.x, self.w1, self.w2t, self.b1, self.slope, self.intercept, self.flags, self.idx, self.ws,
            self.y32, self.y, self.d, self.f, triton.cdiv(self.d, UPDOWN_BLOCK_COLS),
            NT=self.n, BJ=UPDOWN_BLOCK_NEURONS, BK=UPDOWN_BLOCK_K, BC=UPDOWN_BLOCK_COLS, ACT=self.act,
            FENCE=not _INTERPRET,
        )  # fmt: skip

    @property
    def spins(self) -> bool:
        """run() launches the up kernel polling kernel 1's count of finished predictor programs (UP_SPIN)."""
        return self.up_spin and self.plane_small_updown and not self.up_in_k1

    @property
    def skips_finish(self) -> bool:
        """run() launches no finish kernel although the call finishes: out32 with reset_first, where the int8 x
        kernel zeroed the list count at this call's start (stacked() has run) and no up kernel polls kernel 1's
        count (spins: the finish kernel resets that count); y32 is the output and the counters stay as they are."""
        return self.finishes and self.out32 and self.xq_resets and not self.spins

    def run(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All launches: (y [N, d], flags [N, f] int8); y in x's dtype, or with out32 the float32 sums."""
        spin = self.spins
        self.stacked(spin=spin)
        if self.fused_updown:
            self.updown()
        elif self.up_in_k1:  # kernel 1 computed the union rows' z
            self.down()
        else:
            self.up(spin=spin)
            self.down(spin=spin)
        if self.finishes and not self.skips_finish:
            self.finish(spin=spin)
        return (self.y32 if self.out32 else self.y), self.flags


def ffn_decode_triton(
    x: torch.Tensor,
    *,
    wf: torch.Tensor,
    bf: torch.Tensor,
    pred: TiledPredictor,
    b1: torch.Tensor,
    lo_in: torch.Tensor,
    hi_in: torch.Tensor,
    w1: torch.Tensor,
    w2t: torch.Tensor,
    slope: torch.Tensor,
    intercept: torch.Tensor,
    act: str,
    workspace: torch.Tensor,
    counts: torch.Tensor,
    kernels: str | None = None,
    out32: bool = False,
    reset_first: bool = False,
    x_i8: Int8X | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the kernels: returns (y [N, d] in x's dtype, or with out32 float32; flags [N, f] int8). out32,
    reset_first and x_i8: see DecodeLaunch (a workspace used with out32 must have reset_first on every call)."""
    return DecodeLaunch(
        x, wf=wf, bf=bf, pred=pred, b1=b1, lo_in=lo_in, hi_in=hi_in, w1=w1, w2t=w2t, slope=slope,
        intercept=intercept, act=act, workspace=workspace, counts=counts, kernels=kernels, out32=out32,
        reset_first=reset_first, x_i8=x_i8,
    ).run()  # fmt: skip
