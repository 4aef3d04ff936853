"""Triton decode kernels for the TARDIS FFN and their launcher (CUDA; METHOD.md §4).

Three launches, no host sync, static grids with early exit (CUDA-graph safe):
1. `_stacked_kernel` over [Wf ; Q(W1)] sharing x: Wf programs write y32 = Wf·x + bf; predictor
   programs compute ẑ = Q(W1)·x + b1 group by group, test [lo_in, hi_in], write per-token flags and
   append the union's neuron indices to a compact list (block cumsum + one atomic per block).
2. `_up_kernel`: z partials for the listed neurons, each row of W1 split along d (fp32 partials).
3. `_down_kernel`: reduce partials, corr = flag·(act(z) − a·z − c), gather rows of W2ᵀ, fp32 atomic
   add into y32; the last program of each column block casts it into y, and the very last program
   resets the list count, so the next call starts from zero without a memset.

Dequantization: a code q is OR-ed into the mantissa of 1.0 (1 + q/2^bits, exact in bf16); per group
Σ w·x = s'·Σ v·x + (o − s')·Σx with s' = s·2^bits, so no int→float convert per weight.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tardis.kernels.blocks import (
    DOWN_BLOCK_COLS,
    DOWN_BLOCK_NEURONS,
    PROGRAMS_PER_SM,
    UP_BLOCK_K,
    UP_BLOCK_NEURONS,
    UP_SPLITS,
    WF_BLOCK_K,
    WF_BLOCK_ROWS,
    workspace_size,
)
from tardis.kernels.layout import TiledPredictor

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
def _stacked_kernel(
    x_ptr, wf_ptr, bf_ptr, qw_ptr, qs_ptr, qo_ptr, b1_ptr, lo_ptr, hi_ptr,
    y32_ptr, flags_ptr, idx_ptr, ws_ptr, nflag_ptr, nunion_ptr,
    N, D, F, F_PAD, N_GROUPS, n_wf_programs,
    BN: tl.constexpr, BITS: tl.constexpr, GS: tl.constexpr, WPG: tl.constexpr, PW: tl.constexpr,
    PWP: tl.constexpr, BM: tl.constexpr, BMF: tl.constexpr, BKF: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
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
            acc_f = tl.dot(w_f, xt_f, acc_f)
        acc_f += tl.load(bf_ptr + rows_f, mask=rmask_f, other=0.0).to(tl.float32)[:, None]
        tl.store(y32_ptr + toks[None, :] * D + rows_f[:, None], acc_f, mask=rmask_f[:, None] & tmask[None, :])
    else:
        rb = pid - n_wf_programs
        rows = rb * BM + tl.arange(0, BM)
        rmask = rows < F
        wj = tl.arange(0, WPG)
        cc = tl.arange(0, PWP)
        kin = wj[:, None] * PW + cc[None, :]  # [WPG, PWP] position inside the group
        kvalid = (cc[None, :] < PW) & (kin < GS)
        shifts = cc * BITS
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for g in range(0, N_GROUPS):
            tile = qw_ptr + (rb * N_GROUPS + g) * (BM * WPG)
            wv = tl.load(tile + tl.arange(0, BM)[:, None] * WPG + wj[None, :])  # [BM, WPG] int32
            q = (wv[:, :, None] >> shifts[None, None, :]) & ((1 << BITS) - 1)
            v = ((q << (23 - BITS)) | 0x3F800000).to(tl.float32, bitcast=True).to(x_ptr.dtype.element_ty)
            v = tl.reshape(v, (BM, WPG * PWP))
            ks = g * GS + kin
            km = kvalid & (ks < D)
            xg = tl.load(
                x_ptr + toks[None, None, :] * D + ks[:, :, None], mask=km[:, :, None] & tmask[None, None, :], other=0.0
            )  # [WPG, PWP, BN]
            xsum = tl.sum(tl.sum(xg.to(tl.float32), axis=0), axis=0)  # [BN]
            dot = tl.dot(v, tl.reshape(xg, (WPG * PWP, BN)))  # [BM, BN]
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
        base = tl.atomic_add(ws_ptr, cnt)
        pos = base + tl.cumsum(union, axis=0) - 1
        tl.store(idx_ptr + pos, rows, mask=union > 0)
        tl.atomic_add(nflag_ptr, tl.sum(tl.sum(flag.to(tl.int64), axis=1), axis=0))
        tl.atomic_add(nunion_ptr, cnt.to(tl.int64))


@triton.jit
def _up_kernel(
    x_ptr, w1_ptr, idx_ptr, ws_ptr, zp_ptr, N, D, F, n_splits, chunk,
    BN: tl.constexpr, BJ: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
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
            acc = tl.dot(w, xt, acc)
        tl.store(zp_ptr + (sp * F + js[:, None]) * BN + toks[None, :], acc, mask=jmask[:, None])


@triton.jit
def _down_kernel(
    w2t_ptr, b1_ptr, slope_ptr, icpt_ptr, flags_ptr, idx_ptr, ws_ptr, zp_ptr, y32_ptr, y_ptr,
    N, D, F, n_splits, n_cols,
    BN: tl.constexpr, BJ: tl.constexpr, BC: tl.constexpr, ACT: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
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
        for sp in range(0, n_splits):
            z += tl.load(zp_ptr + (sp * F + js[:, None]) * BN + toks[None, :], mask=jmask[:, None], other=0.0)
        z += tl.load(b1_ptr + neur, mask=jmask, other=0.0).to(tl.float32)[:, None]
        a = tl.load(slope_ptr + neur, mask=jmask, other=0.0)
        c = tl.load(icpt_ptr + neur, mask=jmask, other=0.0)
        fl = tl.load(flags_ptr + toks[None, :] * F + neur[:, None], mask=jmask[:, None] & tmask[None, :], other=0)
        corr = tl.where(fl != 0, _activation(z, ACT) - a[:, None] * z - c[:, None], 0.0)
        cols = cb * BC + tl.arange(0, BC)
        cmask = cols < D
        w2mask = jmask[:, None] & cmask[None, :]
        w2 = tl.load(w2t_ptr + neur[:, None].to(tl.int64) * D + cols[None, :], mask=w2mask, other=0.0)
        part = tl.dot(tl.trans(corr.to(w2.dtype)), w2)  # [BN, BC]
        omask = tmask[:, None] & cmask[None, :]
        tl.atomic_add(y32_ptr + toks[:, None] * D + cols[None, :], part, mask=omask & (count > 0))
        tl.debug_barrier()  # every thread's atomics issued before the ticket (released at gpu scope)
        ticket = tl.atomic_add(ws_ptr + 2 + cb, 1)
        if ticket == n_jb - 1:  # last item of this column block: cast it out
            yv = tl.load(y32_ptr + toks[:, None] * D + cols[None, :], mask=omask, cache_modifier=".cg")
            tl.store(y_ptr + toks[:, None] * D + cols[None, :], yv.to(y_ptr.dtype.element_ty), mask=omask)
            tl.store(ws_ptr + 2 + cb, 0)
        tl.debug_barrier()
        done = tl.atomic_add(ws_ptr + 1, 1)
        if done == n_items - 1:  # very last item: every program has read the count
            tl.store(ws_ptr, 0)
            tl.store(ws_ptr + 1, 0)


def _check(name: str, t: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: must be contiguous")


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
    flag_count: torch.Tensor,
    union_count: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the three kernels: returns (y [N, d] in x's dtype, flags [N, f] int8)."""
    n, d = x.shape
    f = w1.shape[0]
    dt = x.dtype
    weights = (("wf", wf, (d, d)), ("w1", w1, (f, d)), ("w2t", w2t, (f, d)), ("bf", bf, (d,)), ("b1", b1, (f,)))
    for name, t, shape in weights:
        _check(name, t, shape, dt)
    for name, t in (("lo_in", lo_in), ("hi_in", hi_in), ("slope", slope), ("intercept", intercept)):
        _check(name, t, (f,), torch.float32)
    _check("x", x, (n, d), None)
    _check("workspace", workspace, (workspace_size(d),), torch.int32)
    if pred.in_features != d or pred.out_features != f:
        raise ValueError(f"predictor is {pred.out_features}×{pred.in_features}, layer is {f}×{d}")
    if act not in ACT_IDS:
        raise ValueError(f"activation {act!r} has no kernel; expected one of {sorted(ACT_IDS)}")
    bn = max(16, triton.next_power_of_2(n))
    per_word = 32 // pred.bits
    y32 = torch.empty(n, d, device=x.device, dtype=torch.float32)
    y = torch.empty(n, d, device=x.device, dtype=dt)
    flags = torch.empty(n, f, device=x.device, dtype=torch.int8)
    idx = torch.empty(f, device=x.device, dtype=torch.int32)
    n_wf = triton.cdiv(d, WF_BLOCK_ROWS)
    n_pred = pred.words.shape[0]
    _stacked_kernel[(n_wf + n_pred,)](
        x, wf, bf, pred.words, pred.scales, pred.offsets, b1, lo_in, hi_in,
        y32, flags, idx, workspace, flag_count, union_count,
        n, d, f, pred.scales.shape[1], pred.n_groups, n_wf,
        BN=bn, BITS=pred.bits, GS=pred.group_size, WPG=pred.words_per_group, PW=per_word,
        PWP=triton.next_power_of_2(per_word), BM=pred.block_rows, BMF=WF_BLOCK_ROWS, BKF=WF_BLOCK_K,
    )  # fmt: skip
    chunk = triton.cdiv(triton.cdiv(d, UP_SPLITS), UP_BLOCK_K) * UP_BLOCK_K
    n_splits = triton.cdiv(d, chunk)
    zp = torch.empty(n_splits, f, bn, device=x.device, dtype=torch.float32)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 2
    grid_up = min(triton.cdiv(f, UP_BLOCK_NEURONS) * n_splits, sms * PROGRAMS_PER_SM)
    _up_kernel[(grid_up,)](
        x, w1, idx, workspace, zp, n, d, f, n_splits, chunk, BN=bn, BJ=UP_BLOCK_NEURONS, BK=UP_BLOCK_K
    )
    n_cols = triton.cdiv(d, DOWN_BLOCK_COLS)
    grid_down = min(max(triton.cdiv(f, DOWN_BLOCK_NEURONS), 1) * n_cols, sms * PROGRAMS_PER_SM)
    _down_kernel[(grid_down,)](
        w2t, b1, slope, intercept, flags, idx, workspace, zp, y32, y, n, d, f, n_splits, n_cols,
        BN=bn, BJ=DOWN_BLOCK_NEURONS, BC=DOWN_BLOCK_COLS, ACT=ACT_IDS[act],
    )  # fmt: skip
    return y, flags
