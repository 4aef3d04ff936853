"""The Triton kernels of `tardis::mqa_decode_attention` (see attention.py) and their launcher.

1. `_mqa_block_kernel`, grid (B, S, G): program (b, s, g) takes the cache slots [s·BL, (s+1)·BL) of sequence b,
   scores its RB query rows (row group g; one group of all H rows unless ATTENTION_LAUNCH sets "group") against
   them (q·kᵀ, one tl.dot), applies the scale and the mask, and writes per row the block's maximum m, its sum
   l = Σ exp(score − m) and the unnormalised output Σ exp(score − m)·v (fp32).
2. `_mqa_merge_kernel`, grid (B, ⌈H / RB⌉): per row M = max_s m_s, out = Σ_s e^(m_s − M)·o_s / Σ_s e^(m_s − M)·l_s;
   up to MERGE_UNROLL_BLOCKS blocks the loop is unrolled, so the blocks' loads are in flight together.
   On sm_90+ it is launched with programmatic dependent launch: it starts while the block kernel runs and waits
   for it (griddepcontrol) before reading a partial; it lets a grid launched after it the same way (the output
   projection's `tardis::decode_linear` in the e2e bench's fused_gemv mode) start before it waits.

A block whose slots are all masked has m = −inf and l = 0 and drops out of the merge.

3. `_mqa_rows_kernel`, grid (B, ⌈H / RB⌉), the one-launch alternative (ATTENTION_LAUNCH "rows" > 0): program (b, g)
   takes RB query rows of sequence b and walks the whole cache in blocks of BL slots with the online softmax (the
   running row maximum rescales the sum and the output at each block; Triton pipelines the blocks' loads), and
   writes the normalised output itself: no partials, no merge launch. At batch 1 and a short cache (Falcon-7B's
   71 heads and a 388-slot static cache: 5 programs of 16 rows, 7 blocks each) that is one kernel where the split
   cache takes two. Which is faster is measured, not assumed (the e2e bench's attention-kernel A/B picks among
   ATTENTION_CANDIDATES on the model's own shapes).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tardis.kernels.ptx import INTERPRET, gdc_launch_dependents, gdc_wait, gpu_fence, pdl_supported

MERGE_ROWS = 16  # query rows per merge program
MERGE_UNROLL_BLOCKS = 16  # up to this many cache blocks the merge kernel's loop is unrolled
MASK_KINDS = {None: 0, torch.bool: 1}  # any floating mask dtype: 2 (additive)
PDL_MERGE = True  # the merge kernel launched with programmatic dependent launch where the GPU has it (sm_90+)
# the attention's launch: "rows" 0 = the split cache (block and merge kernels; "slots" per block, default the
# caller's block_slots; "group": query rows a block program, a power of two ≥ 16, default all of them);
# "rows" RB > 0 = the one-launch rows kernel, RB query rows a program over blocks of "slots" slots, its block loop
# pipelined "stages" deep, "warps" warps. On an H100 at Falcon-7B's decode shape (71 heads, 388 slots; v26) the
# split cache took 8.6–8.7 µs a layer with every row in one block program and 7.1 with row groups of 16 (35
# programs instead of 7), 7.6 when the block kernel merged them itself (against 7.2 with the merge kernel in the
# same run: the last program's merge runs after every block, where the merge kernel starts early under PDL), the
# rows kernel 10.6 at best (16.2 with every row in one program): its loop over the blocks is a chain of dependent
# steps where the split cache runs them side by side.
ATTENTION_LAUNCH: dict = {"rows": 0, "group": 16}
ATTENTION_CANDIDATES: tuple[dict, ...] = (
    {"rows": 0},
    {"rows": 0, "slots": 32},
    {"rows": 0, "group": 16},
    {"rows": 0, "group": 32},
    {"rows": 0, "slots": 32, "group": 16},
    {"rows": 0, "group": 16, "merge": "last"},
    {"rows": 16, "slots": 64, "stages": 2, "warps": 4},
    {"rows": 128, "slots": 64, "stages": 2, "warps": 8},
)


@triton.jit
def _rope_table(cos_ptr, sin_ptr, b, scb, ssb, cols, cmask, HD: tl.constexpr):
    # sequence b's rotary rows in fp32: cos, sin with rotate_half's sign folded in (−sin on the first half), and
    # each column's rotate_half source column
    half = HD // 2
    c = tl.load(cos_ptr + b * scb + cols, mask=cmask, other=0.0).to(tl.float32)
    sn = tl.load(sin_ptr + b * ssb + cols, mask=cmask, other=0.0).to(tl.float32)
    return c, tl.where(cols < half, -sn, sn), tl.where(cols < half, cols + half, cols - half)


@triton.jit
def _rope(base, cols, partner, m, c, sn):
    # x·cos + rotate_half(x)·sin in fp32 for the rows at `base` (any broadcastable shape of row pointers)
    x = tl.load(base + cols, mask=m, other=0.0).to(tl.float32)
    xp = tl.load(base + partner, mask=m, other=0.0).to(tl.float32)
    return x * c + xp * sn


@triton.jit
def _write_kv(k_ptr, v_ptr, b, skb, skl, svb, svl, pos, cols, cmask, k_new, v_new, own):
    # the token's key and value rows into the cache at slot pos, by a program that owns the write (own)
    tl.store(k_ptr + b * skb + pos * skl + cols, k_new, mask=cmask & own)
    tl.store(v_ptr + b * svb + pos * svl + cols, v_new, mask=cmask & own)


@triton.jit
def _advance_position(len_ptr, tk_ptr, pos, n_programs):
    # every program counts itself in the ticket once it no longer reads pos; the last advances the cache's write
    # position and puts the ticket back to zero
    tl.debug_barrier()  # every thread past its use of pos before the ticket releases it
    t = tl.atomic_add(tk_ptr, 1, sem="acq_rel")
    if t == n_programs - 1:
        tl.store(len_ptr, pos + 1)
        tl.store(tk_ptr, 0)


@triton.jit
def _queries(
    q_ptr, qkv_ptr, cos_ptr, sin_ptr, len_ptr, k_ptr, v_ptr, b, rows, cols, rmask, cmask, H, L, sqb, sqh, sxb, scb, ssb,
    HD: tl.constexpr, HDP: tl.constexpr, ROPE: tl.constexpr, BY_LENGTH: tl.constexpr,
):  # fmt: skip
    # the program's query rows [RB, HDP]; with ROPE rotated from the fused projection, with the token's new key and
    # value rows and the cache's write position (without: zeros and 0, not used); BY_LENGTH: cos / sin are tables
    # of every position, read at the write position (else row b: the sequence's own rows); a table has a row for
    # each of the L slots, and a position past the cache (which writes nothing) reads the last
    if ROPE:
        pos = tl.load(len_ptr)
        row = tl.minimum(pos, L - 1) if BY_LENGTH else b
        c, sn, partner = _rope_table(cos_ptr, sin_ptr, row, scb, ssb, cols, cmask, HD)
        base = qkv_ptr + b * sxb
        q = _rope(base + rows[:, None] * HD, cols[None, :], partner[None, :], rmask[:, None] & cmask[None, :],
                  c[None, :], sn[None, :]).to(qkv_ptr.dtype.element_ty)  # fmt: skip
        k_new = _rope(base + H * HD, cols, partner, cmask, c, sn).to(k_ptr.dtype.element_ty)
        v_new = tl.load(base + (H + 1) * HD + cols, mask=cmask, other=0.0).to(v_ptr.dtype.element_ty)
    else:
        q = tl.load(
            q_ptr + b * sqb + rows[:, None] * sqh + cols[None, :], mask=rmask[:, None] & cmask[None, :], other=0.0
        )
        pos = 0
        k_new = tl.zeros((HDP,), dtype=k_ptr.dtype.element_ty)
        v_new = tl.zeros((HDP,), dtype=v_ptr.dtype.element_ty)
    return q, k_new, v_new, pos


@triton.jit
def _scores(q, kt, scale, mask_ptr, b, smb, sml, slots, smask, MASK: tl.constexpr, DOT_PREC: tl.constexpr):
    # q·kᵀ·scale [RB, BL] in fp32 with the decode mask applied: −inf where a slot is past the cache or masked out
    sc = tl.dot(q, kt, input_precision=DOT_PREC) * scale
    valid = smask
    if MASK == 1:  # bool (as uint8): attend where nonzero
        mv = tl.load(mask_ptr + b * smb + slots * sml, mask=smask, other=0)
        valid = valid & (mv != 0)
    elif MASK == 2:  # additive
        mv = tl.load(mask_ptr + b * smb + slots * sml, mask=smask, other=0.0).to(tl.float32)
        sc = sc + mv[None, :]
    return tl.where(valid[None, :], sc, float("-inf"))


@triton.jit
def _mqa_block_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr, ml_ptr, H, L, scale,
    sqb, sqh, skb, skl, svb, svl, smb, sml,
    qkv_ptr, cos_ptr, sin_ptr, len_ptr, tk_ptr, sxb, scb, ssb, cnt_ptr, out_ptr, sob, soh,
    HD: tl.constexpr, HDP: tl.constexpr, BH: tl.constexpr, BL: tl.constexpr, MASK: tl.constexpr,
    DOT_PREC: tl.constexpr, PDL: tl.constexpr, ROPE: tl.constexpr, RB: tl.constexpr,
    MERGE_LAST: tl.constexpr, SP: tl.constexpr, UNROLL: tl.constexpr, FENCE: tl.constexpr, BY_LENGTH: tl.constexpr,
):  # fmt: skip
    # program (b, s, g): query rows [g·RB, (g + 1)·RB) (RB = BH: all of them) against cache block s; MERGE_LAST: the
    # last of a row group's programs to count itself in cnt_ptr[b, g] merges the group's blocks (no merge launch)
    if PDL:  # the merge kernel may be launched now; it waits for this grid before it reads anything
        gdc_launch_dependents()
    b = tl.program_id(0)
    s = tl.program_id(1)
    g = tl.program_id(2)
    n_blocks = tl.num_programs(1)
    rows = g * RB + tl.arange(0, RB)
    cols = tl.arange(0, HDP)
    slots = s * BL + tl.arange(0, BL)
    rmask = rows < H
    cmask = cols < HD
    smask = slots < L
    # the queries (ROPE: the decode token's rotary embedding here, in every block; the key and value at pos)
    q, k_new, v_new, pos = _queries(q_ptr, qkv_ptr, cos_ptr, sin_ptr, len_ptr, k_ptr, v_ptr, b, rows, cols, rmask,
                                    cmask, H, L, sqb, sqh, sxb, scb, ssb, HD, HDP, ROPE, BY_LENGTH)  # fmt: skip
    if BY_LENGTH:  # the static cache's causal mask: the slots up to the token's own (the rest not even loaded)
        smask = smask & (slots <= pos)
    kt = tl.load(
        k_ptr + b * skb + slots[None, :] * skl + cols[:, None], mask=cmask[:, None] & smask[None, :], other=0.0
    )  # [HDP, BL]
    if ROPE:  # slot pos holds the new key (written below, by the block that owns it)
        kt = tl.where((slots == pos)[None, :], k_new[:, None], kt)
    sc = _scores(q, kt, scale, mask_ptr, b, smb, sml, slots, smask, MASK, DOT_PREC)  # [RB, BL] fp32
    m = tl.max(sc, axis=1)  # [RB]; −inf where the whole block is masked
    p = tl.exp(sc - tl.where(m == float("-inf"), 0.0, m)[:, None])
    l_sum = tl.sum(p, axis=1)
    v = tl.load(
        v_ptr + b * svb + slots[:, None] * svl + cols[None, :], mask=smask[:, None] & cmask[None, :], other=0.0
    )  # [BL, HDP]
    if ROPE:
        v = tl.where((slots == pos)[:, None], v_new[None, :], v)
    o = tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)  # [BH, HDP] fp32
    blk = b * n_blocks + s
    tl.store(o_ptr + (blk * BH + rows[:, None]) * HDP + cols[None, :], o, mask=rmask[:, None])
    tl.store(ml_ptr + blk * 2 * BH + rows, m, mask=rmask)
    tl.store(ml_ptr + blk * 2 * BH + BH + rows, l_sum, mask=rmask)
    if MERGE_LAST:  # every thread's partials visible at gpu scope, then one count; the last program merges
        if FENCE:
            gpu_fence(s)
        tl.debug_barrier()
        cnt = cnt_ptr + b * tl.num_programs(2) + g
        if tl.atomic_add(cnt, 1, sem="acq_rel") == n_blocks - 1:
            _merge_rows(o_ptr, ml_ptr, out_ptr, b, n_blocks, rows, cols, rmask, sob, soh, HD, HDP, BH, SP, UNROLL,
                        ".cg", RB)  # fmt: skip
            tl.store(cnt, 0)
    if ROPE:  # the block that owns slot pos writes the key and value (its first row group); the last program
        # advances the position
        own = (pos >= s * BL) & (pos < s * BL + BL) & (pos < L) & (g == 0)
        _write_kv(k_ptr, v_ptr, b, skb, skl, svb, svl, pos, cols, cmask, k_new, v_new, own)
        _advance_position(len_ptr, tk_ptr, pos, tl.num_programs(0) * n_blocks * tl.num_programs(2))


@triton.jit
def _merge_block(
    acc, den, top, o_ptr, ml_ptr, blk, rows, cols, live, BH: tl.constexpr, HDP: tl.constexpr, CACHE: tl.constexpr
):
    # block blk's share of the rows' output: e^(m − M)·o into acc, e^(m − M)·l into den
    w = tl.exp(tl.load(ml_ptr + blk * 2 * BH + rows, mask=live, other=float("-inf"), cache_modifier=CACHE) - top)
    den += w * tl.load(ml_ptr + blk * 2 * BH + BH + rows, mask=live, other=0.0, cache_modifier=CACHE)
    acc += w[:, None] * tl.load(o_ptr + (blk * BH + rows[:, None]) * HDP + cols[None, :], mask=live[:, None],
                                other=0.0, cache_modifier=CACHE)  # fmt: skip
    return acc, den


@triton.jit
def _merge_rows(
    o_ptr, ml_ptr, out_ptr, b, S, rows, cols, rmask, sob, soh,
    HD: tl.constexpr, HDP: tl.constexpr, BH: tl.constexpr, SP: tl.constexpr, UNROLL: tl.constexpr, CACHE: tl.constexpr,
    RB: tl.constexpr,
):  # fmt: skip
    # the RB rows' output of sequence b from its S blocks' partials: M = max_s m_s,
    # Σ_s e^(m_s − M)·o_s / Σ_s e^(m_s − M)·l_s (CACHE ".cg": read at L2, for partials other programs of the grid wrote)
    blocks = tl.arange(0, SP)
    m_all = tl.load(
        ml_ptr + (b * S + blocks[:, None]) * 2 * BH + rows[None, :],
        mask=(blocks < S)[:, None] & rmask[None, :],
        other=float("-inf"),
        cache_modifier=CACHE,
    )  # [SP, RB]: the row maxima of every block
    top = tl.max(m_all, axis=0)
    top = tl.where(top == float("-inf"), 0.0, top)
    acc = tl.zeros((RB, HDP), dtype=tl.float32)
    den = tl.zeros((RB,), dtype=tl.float32)
    if UNROLL:  # a few blocks: unrolled, every block's loads in flight together
        for s in tl.static_range(SP):
            acc, den = _merge_block(
                acc, den, top, o_ptr, ml_ptr, b * S + s, rows, cols, rmask & (s < S), BH, HDP, CACHE
            )
    else:
        for s in range(S):
            acc, den = _merge_block(acc, den, top, o_ptr, ml_ptr, b * S + s, rows, cols, rmask, BH, HDP, CACHE)
    out = acc / den[:, None]
    omask = rmask[:, None] & (cols[None, :] < HD)
    tl.store(out_ptr + b * sob + rows[:, None] * soh + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=omask)


@triton.jit
def _mqa_merge_kernel(
    o_ptr, ml_ptr, out_ptr, H, S, sob, soh,
    HD: tl.constexpr, HDP: tl.constexpr, BH: tl.constexpr, SP: tl.constexpr, RB: tl.constexpr, UNROLL: tl.constexpr,
    PDL: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    rows = tl.program_id(1) * RB + tl.arange(0, RB)
    cols = tl.arange(0, HDP)
    rmask = rows < H
    if PDL:  # launched while the block kernel runs: its partials are complete and visible past this point
        gdc_launch_dependents()  # a grid after this one launched with PDL (the output projection's GEMV) may start
        gdc_wait()  # now: it waits for this grid before it reads the output
    _merge_rows(o_ptr, ml_ptr, out_ptr, b, S, rows, cols, rmask, sob, soh, HD, HDP, BH, SP, UNROLL, "", RB)


@triton.jit
def _mqa_rows_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr, H, L, scale,
    sqb, sqh, skb, skl, svb, svl, smb, sml, sob, soh,
    qkv_ptr, cos_ptr, sin_ptr, len_ptr, tk_ptr, sxb, scb, ssb,
    HD: tl.constexpr, HDP: tl.constexpr, RB: tl.constexpr, BL: tl.constexpr, MASK: tl.constexpr,
    DOT_PREC: tl.constexpr, PDL: tl.constexpr, ROPE: tl.constexpr, STAGES: tl.constexpr, BY_LENGTH: tl.constexpr,
):  # fmt: skip
    if PDL:  # a grid launched after this one with PDL (the output projection's GEMV) may start; it waits for this one
        gdc_launch_dependents()
    b = tl.program_id(0)
    g = tl.program_id(1)
    rows = g * RB + tl.arange(0, RB)
    cols = tl.arange(0, HDP)
    rmask = rows < H
    cmask = cols < HD
    # the queries (ROPE: this program's rows rotated; every program the key and value)
    q, k_new, v_new, pos = _queries(q_ptr, qkv_ptr, cos_ptr, sin_ptr, len_ptr, k_ptr, v_ptr, b, rows, cols, rmask,
                                    cmask, H, L, sqb, sqh, sxb, scb, ssb, HD, HDP, ROPE, BY_LENGTH)  # fmt: skip
    end = L
    if BY_LENGTH:  # the static cache's causal mask: the blocks up to the token's own slot only
        end = tl.minimum(L, pos + 1)
    m_run = tl.full((RB,), float("-inf"), dtype=tl.float32)
    l_run = tl.zeros((RB,), dtype=tl.float32)
    acc = tl.zeros((RB, HDP), dtype=tl.float32)
    for s0 in tl.range(0, end, BL, num_stages=STAGES):
        slots = s0 + tl.arange(0, BL)
        smask = slots < end
        kt = tl.load(
            k_ptr + b * skb + slots[None, :] * skl + cols[:, None], mask=cmask[:, None] & smask[None, :], other=0.0
        )  # [HDP, BL]
        v = tl.load(
            v_ptr + b * svb + slots[:, None] * svl + cols[None, :], mask=smask[:, None] & cmask[None, :], other=0.0
        )  # [BL, HDP]
        if ROPE:  # slot pos holds the new key and value (written below by program 0)
            kt = tl.where((slots == pos)[None, :], k_new[:, None], kt)
            v = tl.where((slots == pos)[:, None], v_new[None, :], v)
        sc = _scores(q, kt, scale, mask_ptr, b, smb, sml, slots, smask, MASK, DOT_PREC)  # [RB, BL] fp32
        m_new = tl.maximum(m_run, tl.max(sc, axis=1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing to attend so far: no rescale
        alpha = tl.exp(m_run - m_use)
        p = tl.exp(sc - m_use[:, None])
        l_run = l_run * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        m_run = m_new
    out = acc / l_run[:, None]
    tl.store(out_ptr + b * sob + rows[:, None] * soh + cols[None, :], out.to(out_ptr.dtype.element_ty),
             mask=rmask[:, None] & cmask[None, :])  # fmt: skip
    if ROPE:  # program 0 of the sequence writes the key and value; the last program advances the position
        _write_kv(k_ptr, v_ptr, b, skb, skl, svb, svl, pos, cols, cmask, k_new, v_new, (g == 0) & (pos < L))
        _advance_position(len_ptr, tk_ptr, pos, tl.num_programs(0) * tl.num_programs(1))


def launch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float, block_slots: int
) -> torch.Tensor:
    """Both kernels: q [B, H, hd], k / v [B, L, hd], mask [B, L] (bool or additive) or None → out [B, H, hd]."""
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"mqa_decode_attention: q {q.dtype}, k {k.dtype}, v {v.dtype}: want one dtype")
    q = q if q.stride(-1) == 1 else q.contiguous()
    return _launch(q.shape, q, (q.stride(0), q.stride(1)), k, v, mask, scale, block_slots, None)


def _launch(
    shape: tuple, q: torch.Tensor, q_strides: tuple, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
    scale: float, block_slots: int, rope_args: tuple | None, by_length: bool = False,
) -> torch.Tensor:  # fmt: skip
    """The block and merge kernels for out [B, H, hd] = shape, of q's dtype; with rope_args (launch_rope_attention's)
    the block kernel takes the queries, key and value from the fused projection (q: that projection, not read as
    queries); by_length (with rope_args): cos / sin are tables read at the write position, and the slots past it
    are masked."""
    b, h, hd = shape
    n_slots = k.shape[1]
    k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (k, v))
    kind = MASK_KINDS.get(None if mask is None else mask.dtype, 2)
    if mask is None:
        mask = q  # not read (MASK 0)
    elif kind == 1:
        mask = mask.view(torch.uint8)
    cfg = ATTENTION_LAUNCH
    block_slots = cfg.get("slots", block_slots)
    hdp = max(16, triton.next_power_of_2(hd))
    out = torch.empty(b, h, hd, device=q.device, dtype=q.dtype)
    pdl = PDL_MERGE and pdl_supported(q.device)
    rope = (q, q, q, q, q, 0, 0, 0) if rope_args is None else rope_args  # (not read without ROPE)
    prec = "ieee" if q.dtype == torch.float32 else "tf32"
    if cfg["rows"]:  # one launch: RB rows a program over the whole cache
        rb = cfg["rows"]
        _mqa_rows_kernel[(b, triton.cdiv(h, rb))](
            q, k, v, mask, out, h, n_slots, scale,
            *q_strides, k.stride(0), k.stride(1), v.stride(0), v.stride(1), mask.stride(0), mask.stride(-1),
            out.stride(0), out.stride(1), *rope,
            HD=hd, HDP=hdp, RB=rb, BL=block_slots, MASK=kind, DOT_PREC=prec, PDL=pdl, ROPE=rope_args is not None,
            STAGES=cfg.get("stages", 2), BY_LENGTH=by_length, num_warps=cfg.get("warps", 4),
        )  # fmt: skip
        return out
    bh = max(16, triton.next_power_of_2(h))
    rb = min(cfg.get("group", bh), bh)  # query rows a block program (a power of two ≥ 16)
    n_blocks = triton.cdiv(n_slots, block_slots)
    n_groups = triton.cdiv(h, rb)
    o = torch.empty(b, n_blocks, bh, hdp, device=q.device, dtype=torch.float32)
    ml = torch.empty(b, n_blocks, 2, bh, device=q.device, dtype=torch.float32)
    sp = max(2, triton.next_power_of_2(n_blocks))
    unroll = n_blocks <= MERGE_UNROLL_BLOCKS
    # "merge": "last": the block kernel merges (its counters: the rope ticket's elements past the first)
    ticket = None if rope_args is None else rope_args[4]
    merge_last = cfg.get("merge") == "last" and ticket is not None and ticket.numel() >= 1 + b * n_groups
    cnt = ticket[1:] if merge_last and ticket is not None else q  # (not read without MERGE_LAST)
    _mqa_block_kernel[(b, n_blocks, n_groups)](
        q, k, v, mask, o, ml, h, n_slots, scale,
        *q_strides, k.stride(0), k.stride(1), v.stride(0), v.stride(1), mask.stride(0), mask.stride(-1),
        *rope, cnt, out, out.stride(0), out.stride(1),
        HD=hd, HDP=hdp, BH=bh, BL=block_slots, MASK=kind, DOT_PREC=prec, PDL=pdl, ROPE=rope_args is not None,
        RB=rb, MERGE_LAST=merge_last, SP=sp, UNROLL=unroll, FENCE=not INTERPRET, BY_LENGTH=by_length, num_warps=4,
    )  # fmt: skip
    if merge_last:
        return out
    _mqa_merge_kernel[(b, triton.cdiv(h, MERGE_ROWS))](
        o, ml, out, h, n_blocks, out.stride(0), out.stride(1),
        HD=hd, HDP=hdp, BH=bh, SP=sp, RB=MERGE_ROWS, UNROLL=unroll, PDL=pdl, num_warps=4,
        **({"launch_pdl": True} if pdl else {}),
    )  # fmt: skip
    return out


@triton.jit
def _rope_kv_kernel(
    qkv_ptr, cos_ptr, sin_ptr, k_ptr, v_ptr, len_ptr, tk_ptr, q_ptr, H, L,
    sxb, scb, ssb, skb, skl, svb, svl, sqb, sqh,
    HD: tl.constexpr, HDP: tl.constexpr, BH: tl.constexpr,
):  # fmt: skip
    # program b: sequence b's H query rows and its key row (rows 0..H of its fused projection) rotated in fp32
    # (x·cos + rotate_half(x)·sin, one rounding), the queries into q, the key and the value row into the cache at
    # the layer's write position; the last program to count itself in the ticket advances the position (every
    # program has read it by then) and puts the ticket back to zero
    b = tl.program_id(0)
    pos = tl.load(len_ptr)
    rows = tl.arange(0, BH)
    cols = tl.arange(0, HDP)
    cmask = cols < HD
    m = (rows <= H)[:, None] & cmask[None, :]
    c, sn, partner = _rope_table(cos_ptr, sin_ptr, b, scb, ssb, cols, cmask, HD)
    r = _rope(qkv_ptr + b * sxb + rows[:, None] * HD, cols[None, :], partner[None, :], m, c[None, :], sn[None, :])
    tl.store(q_ptr + b * sqb + rows[:, None] * sqh + cols[None, :], r.to(q_ptr.dtype.element_ty),
             mask=(rows < H)[:, None] & cmask[None, :])  # fmt: skip
    inside = pos < L  # a position past the cache writes nothing (the CPU path raises)
    slot_k = k_ptr + b * skb + pos * skl
    tl.store(slot_k + rows[:, None] * 0 + cols[None, :], r.to(k_ptr.dtype.element_ty),
             mask=(rows == H)[:, None] & cmask[None, :] & inside)  # fmt: skip
    v = tl.load(qkv_ptr + b * sxb + (H + 1) * HD + cols, mask=cmask, other=0.0)
    tl.store(v_ptr + b * svb + pos * svl + cols, v.to(v_ptr.dtype.element_ty), mask=cmask & inside)
    _advance_position(len_ptr, tk_ptr, pos, tl.num_programs(0))


def launch_rope_kv(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
    length: torch.Tensor, ticket: torch.Tensor, n_heads: int,
) -> torch.Tensor:  # fmt: skip
    """`tardis::rope_kv_write`'s kernel (shapes checked by attention.rope_kv_write): qkv [B, (H + 2)·hd], cos / sin
    [B, hd], keys / values [B, 1, L, hd], length 0-d, ticket int32 [1] → the rotated queries [B, H, hd]."""
    b, hd = qkv.shape[0], keys.shape[-1]
    qkv, cos, sin = (t if t.stride(-1) == 1 else t.contiguous() for t in (qkv, cos, sin))
    if keys.stride(-1) != 1 or values.stride(-1) != 1:
        raise ValueError("rope_kv_write: the cache's last dimension must be contiguous (a static cache layer's is)")
    q = torch.empty(b, n_heads, hd, device=qkv.device, dtype=qkv.dtype)
    _rope_kv_kernel[(b,)](
        qkv, cos, sin, keys, values, length, ticket, q, n_heads, keys.shape[2],
        qkv.stride(0), cos.stride(0), sin.stride(0), keys.stride(0), keys.stride(2), values.stride(0),
        values.stride(2), q.stride(0), q.stride(1),
        HD=hd, HDP=max(16, triton.next_power_of_2(hd)), BH=max(16, triton.next_power_of_2(n_heads + 1)), num_warps=4,
    )  # fmt: skip
    return q


def launch_rope_attention(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
    length: torch.Tensor, ticket: torch.Tensor, mask: torch.Tensor | None, n_heads: int, scale: float,
    block_slots: int, by_length: bool = False,
) -> torch.Tensor:  # fmt: skip
    """`tardis::mqa_rope_attention`'s kernels (shapes checked by attention.mqa_rope_attention): the block kernel
    rotates the queries and the key of qkv [B, (H + 2)·hd] itself (cos / sin [B, hd], or with by_length tables
    [P ≥ L, hd] read at the write position, whose later slots are then masked), uses the new key and value at the
    cache's write position, writes them there and advances it; then the merge. → out [B, H, hd]."""
    b, hd = qkv.shape[0], keys.shape[-1]
    if keys.dtype != qkv.dtype or values.dtype != qkv.dtype:
        raise ValueError(
            f"mqa_rope_attention: qkv {qkv.dtype}, keys {keys.dtype}, values {values.dtype}: want one dtype"
        )
    qkv, cos, sin = (t if t.stride(-1) == 1 else t.contiguous() for t in (qkv, cos, sin))
    if keys.stride(-1) != 1 or values.stride(-1) != 1:
        raise ValueError(
            "mqa_rope_attention: the cache's last dimension must be contiguous (a static cache layer's is)"
        )
    rope = (qkv, cos, sin, length, ticket, qkv.stride(0), cos.stride(0), sin.stride(0))
    return _launch((b, n_heads, hd), qkv, (0, 0), keys[:, 0], values[:, 0], mask, scale, block_slots, rope, by_length)
