"""The predictor's tiled layout for the decode kernels, and its exact conversion from `QuantizedW1`.

Canonical (`QuantizedW1`): codes packed little-endian along d, `32 // bits` a word, words running
across group boundaries. Tiled: each group of `group_size` codes starts a fresh word, padded to
`words_per_group` words (a power of two); rows are cut into blocks of `block_rows`, and each
(row block, group) tile of `block_rows × words_per_group` words is contiguous, so one program
streams its rows group after group. Scales and offsets are group-major [n_groups, f_pad] so a
tile's scales are one contiguous load. Padding rows and codes are zero and read x = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tardis.core.predictor import QuantizedW1, codes_per_word, pack_codes, unpack_codes

BLOCK_ROWS = 64  # predictor rows per program in the stacked kernel


def _next_pow2(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


@dataclass
class TiledPredictor:
    """A predictor in the kernels' layout: words [f_pad // block_rows, n_groups, block_rows, wpg]."""

    words: torch.Tensor  # int32
    scales: torch.Tensor  # float16 [n_groups, f_pad]
    offsets: torch.Tensor  # float16 [n_groups, f_pad]
    bits: int
    group_size: int
    in_features: int  # d
    out_features: int  # f
    block_rows: int

    @property
    def words_per_group(self) -> int:
        """Words per (row, group), a power of two."""
        return int(self.words.shape[-1])

    @property
    def n_groups(self) -> int:
        """Groups per row."""
        return int(self.scales.shape[0])

    def to(self, device: torch.device | str) -> TiledPredictor:
        """A copy on `device`."""
        return TiledPredictor(
            self.words.to(device),
            self.scales.to(device),
            self.offsets.to(device),
            self.bits,
            self.group_size,
            self.in_features,
            self.out_features,
            self.block_rows,
        )

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense [f, d] matrix these codes stand for, on the codes' device (= QuantizedW1's)."""
        per_word = codes_per_word(self.bits)
        rb, g, br, wpg = self.words.shape
        shifts = torch.arange(per_word, device=self.words.device, dtype=torch.int32) * self.bits
        codes = (self.words.unsqueeze(-1) >> shifts) & ((1 << self.bits) - 1)
        codes = codes.reshape(rb, g, br, wpg * per_word)[..., : self.group_size].permute(0, 2, 1, 3)
        w = codes.to(torch.float32) * self.scales.T.float().reshape(rb, br, g, 1)
        w = w + self.offsets.T.float().reshape(rb, br, g, 1)
        return w.reshape(rb * br, g * self.group_size)[: self.out_features, : self.in_features].to(dtype)


def tile_predictor(q: QuantizedW1, block_rows: int = BLOCK_ROWS) -> TiledPredictor:
    """Repack a canonical `QuantizedW1` into the tiled layout (exact; CPU)."""
    per_word = codes_per_word(q.bits)
    gs, n_groups, f = q.group_size, q.n_groups, q.packed.shape[0]
    wpg = _next_pow2(-(-gs // per_word))
    f_pad = -(-f // block_rows) * block_rows
    codes = unpack_codes(q.packed.cpu(), q.bits, n_groups * gs).view(f, n_groups, gs)
    slots = torch.zeros(f_pad, n_groups, wpg * per_word, dtype=torch.int64)
    slots[:f, :, :gs] = codes
    words = pack_codes(slots.view(f_pad * n_groups, -1), q.bits).view(f_pad // block_rows, block_rows, n_groups, wpg)
    scales = torch.zeros(n_groups, f_pad, dtype=torch.float16)
    offsets = torch.zeros(n_groups, f_pad, dtype=torch.float16)
    scales[:, :f] = q.scales.cpu().T
    offsets[:, :f] = q.offsets.cpu().T
    return TiledPredictor(
        words=words.permute(0, 2, 1, 3).contiguous(),
        scales=scales,
        offsets=offsets,
        bits=q.bits,
        group_size=gs,
        in_features=q.in_features,
        out_features=f,
        block_rows=block_rows,
    )


def untile_predictor(t: TiledPredictor) -> QuantizedW1:
    """Inverse of tile_predictor: back to the canonical packed format (CPU)."""
    per_word = codes_per_word(t.bits)
    f, gs, n_groups, wpg = t.out_features, t.group_size, t.n_groups, t.words_per_group
    words = t.words.cpu().permute(0, 2, 1, 3).reshape(-1, wpg)  # [(f_pad · n_groups), wpg]
    slots = unpack_codes(words, t.bits, wpg * per_word).view(-1, n_groups, wpg * per_word)
    codes = slots[:f, :, :gs].reshape(f, n_groups * gs)
    return QuantizedW1(
        packed=pack_codes(codes, t.bits),
        scales=t.scales.cpu()[:, :f].T.contiguous(),
        offsets=t.offsets.cpu()[:, :f].T.contiguous(),
        bits=t.bits,
        group_size=gs,
        in_features=t.in_features,
    )
