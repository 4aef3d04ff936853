"""`tardis::mqa_decode_attention`: one decode step of multi-query attention (CUDA: Triton; CPU: the reference).

A multi-query decode step has H query rows (one per head) and one key/value head over the cache's L slots.
Library attention kernels put all H rows of a sequence in one program, so at batch 1 one or two SMs walk the
whole cache (about 10 µs on an H100 at Falcon-7B's 71 heads and a 388-slot static cache). Here the cache is split
into blocks of BL slots: program (b, s) scores all H rows against block s (one tl.dot each way) and writes its
unnormalised partial output with its row maxima and sums, and a second kernel merges the blocks per row
(flash-decoding). Static grids, no host sync, so it is CUDA-graph safe; the cache's unused slots are excluded by
the attention mask, as in SDPA.

The mask is the one SDPA takes, reduced to the decode row: [B, L] bool (True: attend) or additive float, or none.

`tardis::rope_kv_write` is the step before it: from the fused query/key/value projection of a decode token it
applies the rotary embedding to the query heads and the key, writes the key and the value into a static cache at
the cache's own device-side write position and advances that position, and returns the rotated queries. On the
GPU that is one kernel where HF's rotary embedding and static-cache update take about fifteen small ones
(multiplies, negations, concatenations, adds, an arange and two index copies).

`tardis::mqa_rope_attention` is the two as one op: the attention's block kernel rotates the queries and the key
itself (every block the queries; the block that owns the write position also writes the key and value), so the
step launches no rotary kernel at all.

With `by_length` it also takes over the model's own per-step code for positions and the mask: cos / sin are the
rotary tables of every position (the rotary embedding's cos / sin of positions 0..P−1), read at the cache's write
position, and the slots past that position are masked (a static cache's causal mask for the one decode token: HF's
`create_causal_mask` for that step). Every row of the batch is at the same position, as in a static cache, which
has one write position for all of them. A decode forward of the model that passes the tables needs no position
ids, no rotary kernels and no mask kernels (about eleven small launches a step).
"""

from __future__ import annotations

import math

import torch

BLOCK_SLOTS = 64  # cache slots per program of the partial kernel
MERGE_GROUP_MIN = 16  # the fewest query rows a block program takes (attention_triton's row groups)


def attention_ticket(n_heads: int, max_batch: int, device: torch.device | str) -> torch.Tensor:
    """A zero ticket for rope_kv_write / mqa_rope_attention with room for the attention's merge counters: int32
    [1 + max_batch·⌈H / 16⌉]. Its first element counts the programs that read the write position; the rest let the
    attention's block kernel merge its own blocks (one counter a sequence and row group; attention_triton's launch
    {"merge": "last"}), one launch fewer. Every element is back at zero after each call. A ticket of one element
    works too (the merge is then a kernel of its own), as does a batch above max_batch."""
    return torch.zeros(1 + max_batch * -(-n_heads // MERGE_GROUP_MIN), dtype=torch.int32, device=device)


def mqa_decode_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """softmax(q·kᵀ·scale + mask)·v in float32 (float64 in, float64 out); q [B, H, hd], k / v [B, L, hd],
    mask [B, L] bool (True: attend) or additive float, or None."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    s = torch.einsum("bhd,bld->bhl", q.to(acc), k.to(acc)) * scale
    if mask is not None:
        if mask.dtype == torch.bool:
            s = s.masked_fill(~mask[:, None, :], float("-inf"))
        else:
            s = s + mask[:, None, :].to(acc)
    return torch.einsum("bhl,bld->bhd", torch.softmax(s, dim=-1), v.to(acc)).to(q.dtype)


@torch.library.custom_op("tardis::mqa_decode_attention", mutates_args=())
def _mqa_decode_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """out [B, H, hd] of one multi-query decode step; q [B, H, hd], k / v [B, L, hd] (any strides with a unit
    last one), mask [B, L] or None."""
    if q.is_cuda:
        from tardis.kernels.attention_triton import launch  # Triton only where there is a GPU

        return launch(q, k, v, mask, scale, BLOCK_SLOTS)
    return mqa_decode_reference(q, k, v, mask, scale)


@_mqa_decode_attention_op.register_fake
def _(q: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return torch.empty_like(q)


def rope_kv_reference(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
    length: torch.Tensor, n_heads: int,
) -> torch.Tensor:  # fmt: skip
    """rope_kv_write's arithmetic in float32 (float64 in, float64 out), on any device: each of the H query heads
    and the key of qkv [B, (H + 2)·hd] as x·cos + rotate_half(x)·sin (rotate_half(x) = [−x₂, x₁], its halves
    swapped) rounded once; key and value into keys / values [B, 1, L, hd] at slot `length` (a 0-d integer tensor),
    then length += 1; returns the rotated queries [B, H, hd]."""
    b, hd = qkv.shape[0], keys.shape[-1]
    pos = int(length)
    if not 0 <= pos < keys.shape[2]:
        raise ValueError(f"rope_kv_write: the cache's write position {pos} is outside its {keys.shape[2]} slots; "
                         "build the static cache with max_cache_len ≥ prompt + new tokens")  # fmt: skip
    acc = torch.float64 if qkv.dtype == torch.float64 else torch.float32
    x = qkv.reshape(b, n_heads + 2, hd)
    xa = x[:, : n_heads + 1].to(acc)
    half = hd // 2
    rot = xa * cos.reshape(b, 1, hd).to(acc) + torch.cat((-xa[..., half:], xa[..., :half]), -1) * sin.reshape(
        b, 1, hd
    ).to(acc)
    keys[:, 0, pos] = rot[:, n_heads].to(keys.dtype)
    values[:, 0, pos] = x[:, n_heads + 1].to(values.dtype)
    length.add_(1)
    return rot[:, :n_heads].to(qkv.dtype)


@torch.library.custom_op("tardis::rope_kv_write", mutates_args=("keys", "values", "length", "ticket"))
def _rope_kv_write_op(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
    length: torch.Tensor, ticket: torch.Tensor, n_heads: int,
) -> torch.Tensor:  # fmt: skip
    """Rotated queries [B, H, hd]; the key and value written into the cache at `length`, which advances by one.
    ticket: int32 zeros the GPU kernel's programs count themselves in (and put back to zero; attention_ticket)."""
    if qkv.is_cuda:
        from tardis.kernels.attention_triton import launch_rope_kv  # Triton only where there is a GPU

        return launch_rope_kv(qkv, cos, sin, keys, values, length, ticket, n_heads)
    return rope_kv_reference(qkv, cos, sin, keys, values, length, n_heads)


@_rope_kv_write_op.register_fake
def _(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
    length: torch.Tensor, ticket: torch.Tensor, n_heads: int,
) -> torch.Tensor:  # fmt: skip
    return qkv.new_empty(qkv.shape[0], n_heads, keys.shape[-1])


def rope_kv_write(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
    length: torch.Tensor, ticket: torch.Tensor, n_heads: int,
) -> torch.Tensor:  # fmt: skip
    """One multi-query decode token's rotary embedding and static-cache write: qkv [B, (H + 2)·hd] or
    [B, 1, (H + 2)·hd] (H query heads, one key, one value, as Falcon's fused projection lays them out), cos / sin
    [B, hd], [B, 1, hd] or one row for the whole batch (the token's rotary table rows), keys / values
    [B, 1, L, hd] (a static cache layer), length a 0-d integer tensor (the layer's write position, advanced by
    one), ticket int32 zeros on the same device, [1] or attention_ticket's (scratch of the GPU kernels'). Returns
    the rotated queries [B, H, hd]. On the GPU a position outside the cache writes nothing (no host sync to check
    it); the CPU path raises."""
    qkv, cos, sin = _rope_inputs("rope_kv_write", qkv, cos, sin, keys, values, length, ticket, n_heads)
    return torch.ops.tardis.rope_kv_write(qkv, cos, sin, keys, values, length, ticket, n_heads)


def _rope_inputs(
    op: str, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
    length: torch.Tensor, ticket: torch.Tensor, n_heads: int, by_length: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The checks of rope_kv_write's arguments (op names the caller in the errors); returns qkv [B, (H + 2)·hd]
    and cos / sin [B, hd] (one row for the batch: expanded, stride 0), or with by_length the tables [P, hd] as
    they are (P ≥ L: a row for every slot of the cache)."""
    b = qkv.shape[0]
    hd = keys.shape[-1]
    width = (n_heads + 2) * hd
    if qkv.numel() != b * width or qkv.shape[-1] != width:
        raise ValueError(
            f"{op}: qkv {tuple(qkv.shape)} is not [B, (H + 2)·hd] = [{b}, {width}] for "
            f"H = {n_heads} query heads of {hd}: multi-query layouts only (one key/value head)"
        )
    if keys.dim() != 4 or keys.shape[:2] != (b, 1) or values.shape != keys.shape:
        raise ValueError(f"{op}: keys {tuple(keys.shape)}, values {tuple(values.shape)}: want both "
                         f"[{b}, 1, L, {hd}] (a static cache layer of one key/value head)")  # fmt: skip
    for name, t in (("cos", cos), ("sin", sin)):
        if by_length and (t.dim() != 2 or t.shape[1] != hd or t.shape[0] < keys.shape[2]):
            raise ValueError(f"{op}: {name} {tuple(t.shape)} with by_length, want a table [P, {hd}] with a row for "
                             f"each of the cache's {keys.shape[2]} slots (P ≥ {keys.shape[2]})")  # fmt: skip
        if not by_length and (t.numel() not in (hd, b * hd) or t.shape[-1] != hd):
            raise ValueError(f"{op}: {name} {tuple(t.shape)}, want [B, hd] = [{b}, {hd}] (or [1, hd], "
                             "one row for the whole batch)")  # fmt: skip
    if hd % 2 or length.numel() != 1 or ticket.dtype != torch.int32 or ticket.dim() != 1 or ticket.numel() < 1:
        raise ValueError(f"{op}: head size {hd} (want even), length of {length.numel()} elements (want "
                         f"a 0-d counter), ticket {ticket.dtype} {tuple(ticket.shape)} (want int32 [1] zeros, or "
                         "attention_ticket's)")  # fmt: skip
    if not by_length:
        cos, sin = (t.reshape(-1, hd).expand(b, hd) for t in (cos, sin))
    return qkv.reshape(b, width), cos, sin


def length_mask(length: torch.Tensor, n_slots: int, batch: int, mask: torch.Tensor | None) -> torch.Tensor:
    """mqa_rope_attention's mask with by_length, where the write position is `length` (before the step): the slots
    up to it (the step's own) attend, with `mask` [B, L] (bool or additive) or None on top; [B, L], bool unless
    mask is additive."""
    causal = (torch.arange(n_slots, device=length.device) <= length).expand(batch, n_slots)
    if mask is None:
        return causal
    if mask.dtype == torch.bool:
        return mask & causal
    return mask.masked_fill(~causal, float("-inf"))


@torch.library.custom_op("tardis::mqa_rope_attention", mutates_args=("keys", "values", "length", "ticket"))
def _mqa_rope_attention_op(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
    length: torch.Tensor, ticket: torch.Tensor, mask: torch.Tensor | None, n_heads: int, scale: float,
    by_length: bool = False,
) -> torch.Tensor:  # fmt: skip
    """rope_kv_write then mqa_decode_attention over the cache: out [B, H, hd]; by_length: cos / sin tables read at
    the write position, the slots past it masked."""
    if qkv.is_cuda:
        from tardis.kernels.attention_triton import launch_rope_attention

        return launch_rope_attention(
            qkv, cos, sin, keys, values, length, ticket, mask, n_heads, scale, BLOCK_SLOTS, by_length
        )
    b, n_slots = qkv.shape[0], keys.shape[2]
    if by_length:  # the write position's table rows for every sequence, and the causal mask up to it
        mask = length_mask(length, n_slots, b, mask)
        at = length.reshape(1).clamp(0, cos.shape[0] - 1)  # (a position outside the cache: the reference raises)
        cos, sin = (t.index_select(0, at).expand(b, t.shape[1]) for t in (cos, sin))
    q = rope_kv_reference(qkv, cos, sin, keys, values, length, n_heads)
    return mqa_decode_reference(q, keys[:, 0], values[:, 0], mask, scale)


@_mqa_rope_attention_op.register_fake
def _(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
    length: torch.Tensor, ticket: torch.Tensor, mask: torch.Tensor | None, n_heads: int, scale: float,
    by_length: bool = False,
) -> torch.Tensor:  # fmt: skip
    return qkv.new_empty(qkv.shape[0], n_heads, keys.shape[-1])


def mqa_rope_attention(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
    length: torch.Tensor, ticket: torch.Tensor, n_heads: int, mask: torch.Tensor | None = None,
    scale: float | None = None, by_length: bool = False,
) -> torch.Tensor:  # fmt: skip
    """rope_kv_write (same arguments) and mqa_decode_attention of the rotated queries over the updated cache (mask
    [B, L] or None; scale 1/√hd by default) as one op: on the GPU the attention's block kernel rotates the queries
    and the key itself and writes the key and value, so the step has no rotary kernel of its own. → [B, H, hd].
    by_length: cos / sin are the rotary tables of every position [P ≥ L, hd], read at the write position `length`
    (every sequence's), and the slots past it are masked (a static cache's causal mask, with `mask` on top)."""
    qkv, cos, sin = _rope_inputs("mqa_rope_attention", qkv, cos, sin, keys, values, length, ticket, n_heads, by_length)
    b, hd = qkv.shape[0], keys.shape[-1]
    if mask is not None and tuple(mask.shape) != (b, keys.shape[2]):
        raise ValueError(f"mqa_rope_attention: mask {tuple(mask.shape)}, want [B, L] = {(b, keys.shape[2])}")
    scale = 1 / math.sqrt(hd) if scale is None else scale
    return torch.ops.tardis.mqa_rope_attention(
        qkv, cos, sin, keys, values, length, ticket, mask, n_heads, scale, by_length
    )


def mqa_decode_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, scale: float | None = None
) -> torch.Tensor:
    """One multi-query decode step: q [B, H, hd], k / v [B, L, hd] → [B, H, hd] (scale: 1/√hd by default)."""
    b, _, hd = q.shape
    if k.shape[0] != b or k.shape[2] != hd or v.shape != k.shape:
        raise ValueError(f"mqa_decode_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: "
                         "want q [B, H, hd] and k, v [B, L, hd]")  # fmt: skip
    if mask is not None and tuple(mask.shape) != (b, k.shape[1]):
        raise ValueError(f"mqa_decode_attention: mask {tuple(mask.shape)}, want [B, L] = {(b, k.shape[1])}")
    return torch.ops.tardis.mqa_decode_attention(q, k, v, mask, 1 / math.sqrt(hd) if scale is None else scale)
