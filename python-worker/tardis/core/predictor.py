"""The predictor: a group-wise round-to-nearest low-bit copy of W1 (METHOD.md §3).

`ẑ = dequant(Q(W1))·x + b1`; neuron i is flagged when ẑ_i leaves [l_i + δ_i, u_i − δ_i].

Packed format (the one every engine reads): W1 is zero-padded along d to a multiple of the group
size; codes q ∈ [0, 2^bits) are packed little-endian along d into int32 words, `32 // bits` codes a
word (16 for 2-bit, 10 for 3-bit, 8 for 4-bit), so `packed` is [f, ceil(d_pad / per_word)]. Each group
of `group_size` weights of a row has an fp16 `scale` and fp16 `offset`: w ≈ q·scale + offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
    padded = torch.zeros(f, n_words * per_word, dtype=torch.int64)
    padded[:, :n] = codes.to(torch.int64)
    shifts = torch.arange(per_word, dtype=torch.int64) * bits
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


def quantize_rtn(w1: torch.Tensor, bits: int, group_size: int, clip_search: bool = True) -> QuantizedW1:
    """Round-to-nearest group-wise asymmetric quantization of W1 [f, d].

    With `clip_search`, each group's [min, max] is shrunk by the ratio in CLIP_RATIOS that gives the
    lowest squared weight error (computed with the fp16-rounded scale and offset actually stored).
    """
    f, d = w1.shape
    g = min(group_size, d)
    n_groups = -(-d // g)
    w = torch.zeros(f, n_groups * g, dtype=torch.float32)
    w[:, :d] = w1.detach().to(torch.float32).cpu()
    groups = w.view(f, n_groups, g)
    gmin = groups.amin(-1)
    gmax = groups.amax(-1)
    qmax = (1 << bits) - 1
    best_err = torch.full((f, n_groups), float("inf"))
    best_scale = torch.zeros(f, n_groups)
    best_offset = torch.zeros(f, n_groups)
    for ratio in CLIP_RATIOS if clip_search else (1.0,):
        lo, hi = gmin * ratio, gmax * ratio
        scale = ((hi - lo) / qmax).half().float()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        offset = lo.half().float()
        q = torch.clamp(torch.round((groups - offset.unsqueeze(-1)) / scale.unsqueeze(-1)), 0, qmax)
        err = ((q * scale.unsqueeze(-1) + offset.unsqueeze(-1) - groups) ** 2).sum(-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_offset = torch.where(better, offset, best_offset)
    codes = torch.clamp(torch.round((groups - best_offset.unsqueeze(-1)) / best_scale.unsqueeze(-1)), 0, qmax).to(
        torch.int64
    )
    return QuantizedW1(
        packed=pack_codes(codes.view(f, -1), bits),
        scales=best_scale.half(),
        offsets=best_offset.half(),
        bits=bits,
        group_size=g,
        in_features=d,
    )


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
