"""The predictor's tiled "plane" layout for the decode kernels, and its exact conversion from `QuantizedW1`.

Canonical (`QuantizedW1`): codes packed little-endian along d, `32 // bits` a word, words running
across group boundaries. Tiled: each group of `group_size` codes fills `words_per_group` words (a
power of two, wpg); inside a group, code s of word j is column s·wpg + j ("plane order"), so code
plane s of a row's wpg words multiplies the contiguous slice x[g·gs + s·wpg : g·gs + (s+1)·wpg].
Rows are cut into blocks of `block_rows`; each (row block, group) tile is contiguous and stored word
position-major, [wpg, block_rows], so a thread's vector load holds the same word position of several
rows (one x value serves all of them). Scales and offsets are group-major [n_groups, f_pad] so a
tile's scales are one contiguous load. Padding rows and codes are zero and read x = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tardis.core.predictor import QuantizedW1, codes_per_word, pack_codes, unpack_codes
from tardis.kernels.blocks import PRED_ROWS

BLOCK_ROWS = PRED_ROWS  # predictor rows per tile (the kernels' programs take one or several tiles)
# x's int8 words for the I8 predictor programs: (words, s_x, word sums), see pack_x_i8
Int8X = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _next_pow2(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def fills_code_words(bits: int, group_size: int) -> bool:
    """Whether groups of `group_size` int`bits` codes fill whole 16-code words in the tiled layout (int2,
    16 × a power of two codes a group): what the int8-x (I8) and fp16x2 (H2) predictor paths take."""
    return bits == 2 and group_size == 16 * _next_pow2(-(-group_size // 16))


@dataclass
class TiledPredictor:
    """A predictor in the kernels' layout: words [f_pad // block_rows, n_groups, wpg, block_rows]."""

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
        return int(self.words.shape[2])

    @property
    def fills_code_words(self) -> bool:
        """Whether every group fills whole 16-code words (`fills_code_words`)."""
        return fills_code_words(self.bits, self.group_size)

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

    def codes(self) -> torch.Tensor:
        """int32 codes [f_pad, n_groups, wpg · per_word] in column order inside each group."""
        per_word = codes_per_word(self.bits)
        rb, g, wpg, br = self.words.shape
        shifts = torch.arange(per_word, device=self.words.device, dtype=torch.int32) * self.bits
        codes = (self.words.unsqueeze(-1) >> shifts) & ((1 << self.bits) - 1)  # [rb, g, wpg, br, s]
        # column s·wpg + j ← code s of word j
        return codes.permute(0, 3, 1, 4, 2).reshape(rb * br, g, per_word * wpg)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense [f, d] matrix these codes stand for, on the codes' device (= QuantizedW1's)."""
        codes = self.codes()[:, :, : self.group_size]
        w = codes.to(torch.float32) * self.scales.T.float()[:, :, None] + self.offsets.T.float()[:, :, None]
        return w.reshape(w.shape[0], -1)[: self.out_features, : self.in_features].to(dtype)


def pack_plane_tiles(codes: torch.Tensor, bits: int, wpg: int, block_rows: int) -> torch.Tensor:
    """int codes [f_pad, n_groups, ≤ wpg · per_word] (column order) → words [f_pad // br, n_groups, wpg, br]."""
    per_word = codes_per_word(bits)
    f_pad, n_groups, gs = codes.shape
    slots = torch.zeros(f_pad, n_groups, per_word * wpg, dtype=torch.int64, device=codes.device)
    slots[:, :, :gs] = codes
    # word j holds columns {s·wpg + j}: [f_pad, g, s, j] → [f_pad, g, j, s], packed along s
    slots = slots.view(f_pad, n_groups, per_word, wpg).transpose(2, 3)
    shifts = torch.arange(per_word, dtype=torch.int64, device=codes.device) * bits
    words = (slots << shifts).sum(-1)
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)  # [f_pad, g, wpg]
    return words.view(f_pad // block_rows, block_rows, n_groups, wpg).permute(0, 2, 3, 1).contiguous()


def tile_predictor(q: QuantizedW1, block_rows: int = BLOCK_ROWS) -> TiledPredictor:
    """Repack a canonical `QuantizedW1` into the tiled layout (exact), on the predictor's device."""
    per_word = codes_per_word(q.bits)
    gs, n_groups, f = q.group_size, q.n_groups, q.packed.shape[0]
    wpg = _next_pow2(-(-gs // per_word))
    f_pad = -(-f // block_rows) * block_rows
    dev = q.packed.device  # computed where the predictor lives (a GPU tiles a 7B layer in milliseconds)
    codes = torch.zeros(f_pad, n_groups, gs, dtype=torch.int64, device=dev)
    codes[:f] = unpack_codes(q.packed, q.bits, n_groups * gs).view(f, n_groups, gs)
    scales = torch.zeros(n_groups, f_pad, dtype=torch.float16, device=dev)
    offsets = torch.zeros(n_groups, f_pad, dtype=torch.float16, device=dev)
    scales[:, :f] = q.scales.to(dev).T
    offsets[:, :f] = q.offsets.to(dev).T
    return TiledPredictor(
        words=pack_plane_tiles(codes, q.bits, wpg, block_rows),
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
    f, gs = t.out_features, t.group_size
    codes = t.to("cpu").codes()[:f, :, :gs].reshape(f, -1)
    return QuantizedW1(
        packed=pack_codes(codes, t.bits),
        scales=t.scales.cpu()[:, :f].T.contiguous(),
        offsets=t.offsets.cpu()[:, :f].T.contiguous(),
        bits=t.bits,
        group_size=gs,
        in_features=t.in_features,
    )


def quantize_x_i8(x: torch.Tensor, group_size: int, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [n, d] → (int8-valued codes [n, n_groups, group_size] float32, scales [n, n_groups] float32) as
    the I8 kernels round it: per token and group, q = x·(127 / absmax) rounded half to even, s_x =
    absmax / 127, each step one IEEE fp32 operation (the kernel divides with div_rn and rounds the
    product with cvt.rni, so an x at a rounding boundary gets the same int8 on both sides); columns
    past d are zero."""
    n, d = x.shape
    xf = torch.zeros(n, n_groups * group_size, dtype=torch.float32, device=x.device)
    xf[:, :d] = x.float()
    xg = xf.view(n, n_groups, group_size)
    amax = xg.abs().amax(-1)
    # tensor / tensor: torch turns `127.0 / amax` into amax.reciprocal() * 127 (two roundings, an ulp off the
    # kernel's division in about a quarter of the groups), and on CUDA `amax / 127.0` into amax · (1/127)
    c127 = torch.full_like(amax, 127.0)
    inv = torch.where(amax > 0, c127 / amax, torch.zeros_like(amax))
    return torch.round(xg * inv[..., None]), amax / c127


def pack_x_i8(x: torch.Tensor, group_size: int, words_per_group: int, n_groups: int) -> Int8X:
    """x [n, d] → the int8 x words the I8 predictor programs read, as the decode op's int8 x kernel writes them:
    (words int32 [n, n_groups, wpg, 4], s_x float32 [n, n_groups], Σ x over each word's 16 columns float32
    [n, n_groups, wpg]). Byte b of word (j, k) holds the int8 (`quantize_x_i8`) of column (4b + k)·wpg + j of the
    group, the column code plane 4b + k of word j multiplies; group_size = 16 · words_per_group (int2,
    `fills_code_words`)."""
    if group_size != 16 * words_per_group:
        raise ValueError(f"int8 x words: group size {group_size} is not 16 codes × {words_per_group} words")
    n = x.shape[0]
    q8, sx = quantize_x_i8(x, group_size, n_groups)
    q = q8.to(torch.int32).view(n, n_groups, 4, 4, words_per_group) & 255  # [n, G, b, k, j]
    words = (q << (8 * torch.arange(4, device=x.device, dtype=torch.int32)).view(1, 1, 4, 1, 1)).sum(
        2, dtype=torch.int32
    )
    xf = torch.zeros(n, n_groups * group_size, dtype=torch.float32, device=x.device)
    xf[:, : x.shape[1]] = x.float()
    sums = xf.view(n, n_groups, 16, words_per_group).sum(2)
    return words.transpose(2, 3).contiguous(), sx, sums


def predict_i8(x: torch.Tensor, pred: TiledPredictor) -> torch.Tensor:
    """Q(W1)·x [n, f] (float64, without b1) as the I8 kernels compute it: Σ over groups of
    s·s_x·Σ code·q + o·Σ x, with x rounded per group by `quantize_x_i8` (the integer sums are exact)."""
    gs, n_groups, f = pred.group_size, pred.n_groups, pred.out_features
    q8, sx = quantize_x_i8(x, gs, n_groups)
    codes = pred.codes()[:f, :, :gs].to(torch.float32)  # [f, G, gs]
    dots = torch.stack([q8[:, g] @ codes[:, g].T for g in range(n_groups)], -1).double()  # [n, f, G], exact
    xsum = torch.zeros(x.shape[0], n_groups * gs, dtype=torch.float64, device=x.device)
    xsum[:, : x.shape[1]] = x.double()
    xsum = xsum.view(x.shape[0], n_groups, gs).sum(-1)  # [n, G]
    s = pred.scales[:, :f].T.double()  # [f, G]
    o = pred.offsets[:, :f].T.double()
    return (dots * s[None] * sx.double()[:, None, :] + o[None] * xsum[:, None, :]).sum(-1)
