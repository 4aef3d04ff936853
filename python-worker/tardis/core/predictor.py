"""The predictor: a group-wise round-to-nearest low-bit copy of W1 (METHOD.md §3).

`ẑ = dequant(Q(W1))·x + b1`; neuron i is flagged when ẑ_i leaves [l_i + δ_i, u_i − δ_i].

Packed format (the one every engine reads): W1 is zero-padded along d to a multiple of the group
size; codes q ∈ [0, 2^bits) are packed little-endian along d into int32 words, `32 // bits` codes a
word (16 for 2-bit, 10 for 3-bit, 8 for 4-bit), so `packed` is [f, ceil(d_pad / per_word)]. Each group
of `group_size` weights of a row has an fp16 `scale` and fp16 `offset`: w ≈ q·scale + offset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

GPTQ_BLOCK = 128  # columns per lazy-batch block of quantize_gptq (rounded to whole groups)
GPTQ_TRITON = True  # quantize_gptq on a CUDA device: each block's column loop as one Triton launch
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)


@dataclass
class QuantizedW1:
    """A packed low-bit copy of W1 [f, d]."""

    packed: torch.Tensor  # int32 [f, n_words]
    scales: torch.Tensor  # float16 [f, n_groups]
    offsets: torch.Tensor  # float16 [f, n_groups]
    bits: int
    group_size: int
    in_features: int  # d (unpadded)

    def to(self, device: torch.device | str) -> QuantizedW1:
        """The same predictor with its tensors on `device`."""
        return dataclasses.replace(
            self, packed=self.packed.to(device), scales=self.scales.to(device), offsets=self.offsets.to(device)
        )

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense [f, d] matrix the packed codes stand for."""
        codes = unpack_codes(self.packed, self.bits, self.n_groups * self.group_size)
        f = codes.shape[0]
        grouped = codes.view(f, self.n_groups, self.group_size).to(torch.float32)
        w = grouped * self.scales.float().unsqueeze(-1) + self.offsets.float().unsqueeze(-1)
        return w.view(f, -1)[:, : self.in_features].to(dtype)

    @property
    def n_groups(self) -> int:
        """Groups per row."""
        return int(self.scales.shape[1])

    def nbytes(self) -> int:
        """Bytes stored: packed codes plus fp16 scales and offsets."""
        return sum(t.numel() * t.element_size() for t in (self.packed, self.scales, self.offsets))


def codes_per_word(bits: int) -> int:
    """How many `bits`-bit codes one int32 word holds."""
    if bits not in (2, 3, 4):
        raise ValueError(f"predictor bits must be 2, 3 or 4, got {bits}")
    return 32 // bits


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes [f, n] (values < 2^bits) into int32 words [f, ceil(n / per_word)]."""
    per_word = codes_per_word(bits)
    f, n = codes.shape
    n_words = -(-n // per_word)
    padded = torch.zeros(f, n_words * per_word, dtype=torch.int64, device=codes.device)
    padded[:, :n] = codes.to(torch.int64)
    shifts = torch.arange(per_word, dtype=torch.int64, device=codes.device) * bits
    words = (padded.view(f, n_words, per_word) << shifts).sum(-1)
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32)


def unpack_codes(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of pack_codes: int32 words [f, n_words] → int64 codes [f, n]."""
    per_word = codes_per_word(bits)
    words = packed.to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(per_word, dtype=torch.int64, device=packed.device) * bits
    codes = (words.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return codes.view(packed.shape[0], -1)[:, :n]


def _pad_groups(w1: torch.Tensor, group_size: int) -> tuple[torch.Tensor, int]:
    """W1 as float32 [f, n_groups·g] (zero-padded along d) and the effective group size g."""
    f, d = w1.shape
    g = min(group_size, d)
    n_groups = -(-d // g)
    w = torch.zeros(f, n_groups * g, dtype=torch.float32, device=w1.device)
    w[:, :d] = w1.detach().to(torch.float32)
    return w, g


def group_params(groups: torch.Tensor, bits: int, clip_search: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """fp16-representable (scale, offset) [...] for weight groups [..., g], min-max with an optional clip search.

    With `clip_search`, each group's [min, max] is shrunk by the ratio in CLIP_RATIOS that gives the
    lowest squared weight error (computed with the rounded scale and offset actually stored).
    """
    gmin, gmax = groups.amin(-1), groups.amax(-1)
    qmax = (1 << bits) - 1
    best_err = torch.full_like(gmin, float("inf"))
    best_scale, best_offset = torch.zeros_like(gmin), torch.zeros_like(gmin)
    for ratio in CLIP_RATIOS if clip_search else (1.0,):
        scale = ((gmax - gmin) * ratio / qmax).half().float()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        offset = (gmin * ratio).half().float()
        q = torch.clamp(torch.round((groups - offset.unsqueeze(-1)) / scale.unsqueeze(-1)), 0, qmax)
        err = ((q * scale.unsqueeze(-1) + offset.unsqueeze(-1) - groups) ** 2).sum(-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_offset = torch.where(better, offset, best_offset)
    return best_scale, best_offset


def _codes(w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int) -> torch.Tensor:
    return torch.clamp(torch.round((w - offset.unsqueeze(-1)) / scale.unsqueeze(-1)), 0, (1 << bits) - 1)


def _result(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int, g: int, d: int) -> QuantizedW1:
    # packed where the codes are (on a GPU: not int64 codes through host memory and CPU shifts), kept on the CPU
    f = codes.shape[0]
    return QuantizedW1(
        packed=pack_codes(codes.reshape(f, -1).to(torch.int64), bits).cpu(),
        scales=scale.half().cpu(),
        offsets=offset.half().cpu(),
        bits=bits,
        group_size=g,
        in_features=d,
    )


def quantize_rtn(w1: torch.Tensor, bits: int, group_size: int, clip_search: bool = True) -> QuantizedW1:
    """Round-to-nearest group-wise asymmetric quantization of W1 [f, d] (see group_params)."""
    f, d = w1.shape
    w, g = _pad_groups(w1, group_size)  # on W1's device: a GPU does a 7B model's layers in moments
    groups = w.view(f, -1, g)
    scale, offset = group_params(groups, bits, clip_search)
    return _result(_codes(groups, scale, offset, bits), scale, offset, bits, g, d)


def quantize_gptq(
    w1: torch.Tensor, hessian: torch.Tensor, bits: int, group_size: int, clip_search: bool = True, damp: float = 0.01
) -> QuantizedW1:
    """GPTQ: quantize W1 [f, d] column by column, pushing each column's error onto the columns not yet
    quantized through the inverse of the calibration Hessian H = Σ x·xᵀ [d, d], so that ‖(W1 − Q)·x‖ —
    the predictor's error on ẑ — is small on inputs like the calibration ones. Each group's scale and
    offset are chosen (as in RTN) when its first column is reached.

    Blocked ("lazy batch") updates: inside a block of whole groups (≥ 128 columns) each column's error
    goes to the block's later columns at once; the columns after the block get the whole block's
    errors in one matrix product when the block is done. The same arithmetic as updating every later
    column after each column (up to float rounding), with the [f, d] matrix swept once per block
    instead of once per column. Vectorized over rows. On a CUDA device (GPTQ_TRITON) each block's column loop
    is one Triton launch (tardis.kernels.gptq), not a dozen small launches per column.
    """
    d = w1.shape[1]
    w, g, u, block = gptq_setup(w1, hessian, group_size, damp)
    ratios = CLIP_RATIOS if clip_search else (1.0,)
    gptq_blocks = _gptq_kernel() if w.is_cuda and GPTQ_TRITON and torch.version.hip is None else None
    if gptq_blocks is not None:
        codes, scale, offset = gptq_blocks(w, u, bits, g, block, ratios)
    else:
        codes, scale, offset = gptq_blocks_torch(w, u, bits, g, block, clip_search)
    return _result(codes, scale, offset, bits, g, d)


def _gptq_kernel() -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None:
    # the Triton block loop (NVIDIA: its rounding is one PTX instruction), or None where Triton is not installed
    try:
        from tardis.kernels.gptq import gptq_blocks
    except ImportError:
        return None
    return gptq_blocks


def gptq_setup(
    w1: torch.Tensor, hessian: torch.Tensor, group_size: int, damp: float = 0.01
) -> tuple[torch.Tensor, int, torch.Tensor, int]:
    """(W1 as float32 [f, dp] padded to whole groups, the group size g, U [dp, dp] float32: the upper Cholesky
    factor of the damped H⁻¹, the block width in whole groups) on W1's device."""
    w, g = _pad_groups(w1, group_size)
    dp = w.shape[1]
    d = w1.shape[1]
    h = torch.zeros(dp, dp, dtype=torch.float64, device=w.device)
    h[:d, :d] = hessian.to(device=w.device, dtype=torch.float64)
    diag = torch.diagonal(h)
    dead = diag <= 0
    diag[dead] = 1.0  # padded / never-active inputs: any value quantizes them (they meet zeros)
    diag += damp * float(diag[~dead].mean()) if bool((~dead).any()) else damp
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    return w, g, u.contiguous(), g * max(1, GPTQ_BLOCK // g)  # whole groups: a group's scale sees every update


def gptq_blocks_torch(
    w: torch.Tensor, u: torch.Tensor, bits: int, g: int, block: int, clip_search: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ's block loop in torch ops (gptq_setup's w, updated in place): codes [f, dp], scales, offsets [f, dp / g]."""
    f, dp = w.shape
    n_groups = dp // g
    codes = torch.zeros(f, dp, device=w.device)
    scale = torch.zeros(f, n_groups, device=w.device)
    offset = torch.zeros(f, n_groups, device=w.device)
    for b0 in range(0, dp, block):
        b1 = min(b0 + block, dp)
        errs = torch.zeros(f, b1 - b0, device=w.device)
        for j in range(b0, b1):
            k = j // g
            if j % g == 0:
                scale[:, k], offset[:, k] = group_params(w[:, j : j + g], bits, clip_search)
            q = _codes(w[:, j : j + 1], scale[:, k], offset[:, k], bits).squeeze(1)
            codes[:, j] = q
            err = (w[:, j] - (q * scale[:, k] + offset[:, k])) / u[j, j]
            w[:, j + 1 : b1] -= err.unsqueeze(1) * u[j, j + 1 : b1].unsqueeze(0)
            errs[:, j - b0] = err
        if b1 < dp:
            w[:, b1:] -= errs @ u[b0:b1, b1:]
    return codes, scale, offset


def flag_thresholds(
    lo: torch.Tensor, hi: torch.Tensor, margin: torch.Tensor, hot: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inner bounds [l + δ, u − δ] that ẑ must stay inside; hot neurons get an empty interval.

    Infinite ends stay infinite (a ReLU range (−∞, 0] tests only its upper end).
    """
    lo_in = torch.where(torch.isfinite(lo), lo + margin, lo)
    hi_in = torch.where(torch.isfinite(hi), hi - margin, hi)
    lo_in = torch.where(hot, torch.full_like(lo_in, float("inf")), lo_in)
    hi_in = torch.where(hot, torch.full_like(hi_in, float("-inf")), hi_in)
    return lo_in, hi_in
