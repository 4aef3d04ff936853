"""Per-neuron pre-activation statistics in bounded memory, collected in streaming passes.

For a layer with f neurons and B histogram bins the state is O(f·B) numbers, independent of the
number of calibration tokens: pass 1 keeps 7 numbers a neuron, pass 2 two histograms of B (+2)
counts a neuron, pass 3 the line-fit sums and the margin depths (with a band tolerance the depths
are a pass of their own after the fit, since the band needs the lines: FoldConfig.band_tolerance).
Every `update` takes z = W1·x + b1 and ẑ (the predictor's estimate) as [N, f] tensors for one
batch of N tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

WINDOW_SIGMAS = 8.0  # histogram window: mean ± 8σ, clipped to [min, max]; the tails go to edge bins


@dataclass
class MomentStats:
    """Pass 1: count, min, max, mean and variance of z; max |z − ẑ|; count of z ≤ 0."""

    count: int
    zmin: torch.Tensor
    zmax: torch.Tensor
    zsum: torch.Tensor  # float64
    zsq: torch.Tensor  # float64
    rmax: torch.Tensor
    nonpos: torch.Tensor  # int64

    @classmethod
    def empty(cls, f: int, device: torch.device | str = "cpu") -> MomentStats:
        """Accumulators for f neurons."""
        return cls(
            count=0,
            zmin=torch.full((f,), float("inf"), device=device),
            zmax=torch.full((f,), float("-inf"), device=device),
            zsum=torch.zeros(f, dtype=torch.float64, device=device),
            zsq=torch.zeros(f, dtype=torch.float64, device=device),
            rmax=torch.zeros(f, device=device),
            nonpos=torch.zeros(f, dtype=torch.int64, device=device),
        )

    def update(self, z: torch.Tensor, zhat: torch.Tensor) -> None:
        """Fold one batch z, ẑ [N, f] into the accumulators."""
        self.count += z.shape[0]
        self.zmin = torch.minimum(self.zmin, z.amin(0))
        self.zmax = torch.maximum(self.zmax, z.amax(0))
        z64 = z.double()
        self.zsum += z64.sum(0)
        self.zsq += (z64 * z64).sum(0)
        self.rmax = torch.maximum(self.rmax, (z - zhat).abs().amax(0))
        self.nonpos += (z <= 0).sum(0)

    def window(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-neuron histogram window [max(min, μ−8σ), min(max, μ+8σ)], never empty."""
        mean = self.zsum / self.count
        std = (self.zsq / self.count - mean * mean).clamp_min(0).sqrt()
        wlo = torch.maximum(self.zmin.double(), mean - WINDOW_SIGMAS * std).float()
        whi = torch.minimum(self.zmax.double(), mean + WINDOW_SIGMAS * std).float()
        whi = torch.maximum(whi, wlo + 1e-6)
        return wlo, whi


@dataclass
class HistogramStats:
    """Pass 2: a histogram of z (B window bins + one underflow and one overflow bin) and of |z − ẑ|.

    Bin k of the z histogram covers [edges[k], edges[k+1]) with edges = [min, wlo, …, whi, max].
    """

    edges: torch.Tensor  # [f, B+3]
    counts: torch.Tensor  # int64 [f, B+2]
    rwidth: torch.Tensor  # [f] width of a residual bin
    rcounts: torch.Tensor  # int64 [f, B]
    count: int = 0

    @classmethod
    def from_moments(cls, m: MomentStats, bins: int) -> HistogramStats:
        """Bins laid out from pass 1's window."""
        wlo, whi = m.window()
        f = wlo.shape[0]
        steps = torch.linspace(0, 1, bins + 1, device=wlo.device)
        inner = wlo.unsqueeze(1) + (whi - wlo).unsqueeze(1) * steps
        edges = torch.cat([m.zmin.unsqueeze(1), inner, torch.maximum(m.zmax, whi).unsqueeze(1)], dim=1)
        rwidth = torch.where(m.rmax > 0, m.rmax / bins, torch.ones_like(m.rmax))
        return cls(
            edges=edges,
            counts=torch.zeros(f, bins + 2, dtype=torch.int64, device=wlo.device),
            rwidth=rwidth,
            rcounts=torch.zeros(f, bins, dtype=torch.int64, device=wlo.device),
        )

    @property
    def bins(self) -> int:
        """Window bins (excluding the two edge bins)."""
        return int(self.rcounts.shape[1])

    def update(self, z: torch.Tensor, zhat: torch.Tensor) -> None:
        """Add one batch z, ẑ [N, f] to both histograms."""
        n, f = z.shape
        B = self.bins
        wlo, whi = self.edges[:, 1], self.edges[:, B + 1]
        width = (whi - wlo) / B
        idx = torch.floor((z - wlo) / width).long() + 1
        idx = torch.where(z < wlo, 0, torch.where(z >= whi, B + 1, idx.clamp(1, B)))
        base = torch.arange(f, device=z.device) * (B + 2)
        self.counts += torch.bincount((idx + base).flatten(), minlength=f * (B + 2)).view(f, B + 2)
        ridx = torch.floor((z - zhat).abs() / self.rwidth).long().clamp(0, B - 1)
        rbase = torch.arange(f, device=z.device) * B
        self.rcounts += torch.bincount((ridx + rbase).flatten(), minlength=f * B).view(f, B)
        self.count += n

    def residual_quantile(self, q: float) -> torch.Tensor:
        """Per-neuron upper bound on the q-quantile of |z − ẑ| (upper edge of its bin)."""
        cum = self.rcounts.cumsum(1)
        need = torch.ceil(torch.tensor(q * self.count, dtype=torch.float64)).long().clamp_min(1)
        k = torch.searchsorted(cum, need.expand(cum.shape[0], 1).to(cum.device).contiguous()).squeeze(1)
        return (k.clamp(max=self.bins - 1) + 1).float() * self.rwidth


@dataclass
class FitSums:
    """Pass 3 (calibration data): least-squares sums over the samples inside each neuron's range."""

    n: torch.Tensor  # float64 [f] (all sums float64)
    sz: torch.Tensor
    szz: torch.Tensor
    sh: torch.Tensor
    szh: torch.Tensor
    shh: torch.Tensor

    @classmethod
    def empty(cls, f: int, device: torch.device | str = "cpu") -> FitSums:
        """Zeroed sums for f neurons."""
        z = [torch.zeros(f, dtype=torch.float64, device=device) for _ in range(6)]
        return cls(*z)

    def update(self, z: torch.Tensor, h: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Accumulate samples with lo ≤ z ≤ hi; h = act(z)."""
        inside = ((z >= lo) & (z <= hi)).double()
        z64, h64 = z.double() * inside, h.double() * inside
        self.n += inside.sum(0)
        self.sz += z64.sum(0)
        self.szz += (z64 * z64).sum(0)
        self.sh += h64.sum(0)
        self.szh += (z64 * h64).sum(0)
        self.shh += (h64 * h64).sum(0)


UNION_BATCHES = (1, 2, 4, 8, 16, 32, 64)  # batch sizes of the measured union curve (decode steps)


def _no_union() -> torch.Tensor:
    return torch.zeros(0, dtype=torch.int64)


@dataclass
class FlagCounts:
    """Pass 3 (calibration or held-out data): how often each neuron is flagged, out of range, missed.

    The union curve: for each batch size b of UNION_BATCHES, each chunk of tokens is cut into groups
    of b spread evenly over it (group j: tokens j, j + n, j + 2n, … with n = tokens // b, so in a chunk
    of several sequences a group holds tokens of different ones, as a decode batch does); `union[k, i]`
    counts the groups in which neuron i is flagged for any token, `groups[k]` the groups.
    """

    tokens: int
    flagged: torch.Tensor  # int64 [f]: ẑ outside [l+δ, u−δ]
    outside: torch.Tensor  # int64 [f]: z outside [l, u]
    missed: torch.Tensor  # int64 [f]: outside but not flagged (costs accuracy)
    union: torch.Tensor = field(default_factory=_no_union)  # int64 [len(UNION_BATCHES), f] (or empty)
    groups: torch.Tensor = field(default_factory=_no_union)  # int64 [len(UNION_BATCHES)] (or empty)

    @classmethod
    def empty(cls, f: int, device: torch.device | str = "cpu") -> FlagCounts:
        """Zeroed counters for f neurons."""

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, dtype=torch.int64, device=device)

        n = len(UNION_BATCHES)
        return cls(0, zeros(f), zeros(f), zeros(f), union=zeros(n, f), groups=zeros(n))

    def union_curve(self, folded: torch.Tensor, n_hot: int) -> dict[str, float]:
        """{b: expected fraction of all f neurons a batch of b decode tokens recomputes}: the union of
        the folded neurons' flags over the batch, plus the hot neurons (always recomputed)."""
        if self.union.numel() == 0:
            return {}
        f = int(folded.numel())
        out = {}
        for k, b in enumerate(UNION_BATCHES):
            g = int(self.groups[k])
            if g > 0:
                out[str(b)] = (float(self.union[k].cpu()[folded].sum()) + n_hot * g) / (g * f)
        return out

    def update(
        self,
        z: torch.Tensor,
        zhat: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
        lo_in: torch.Tensor,
        hi_in: torch.Tensor,
    ) -> None:
        """Count flags (from ẑ and the inner bounds) against the truth (z and the range)."""
        flagged = (zhat < lo_in) | (zhat > hi_in)
        outside = (z < lo) | (z > hi)
        self.tokens += z.shape[0]
        self.flagged += flagged.sum(0)
        self.outside += outside.sum(0)
        self.missed += (outside & ~flagged).sum(0)
        if self.union.numel():
            for k, b in enumerate(UNION_BATCHES):
                n = flagged.shape[0] // b
                if n == 0:
                    break
                self.union[k] += flagged[: n * b].view(b, n, -1).any(0).sum(0)
                self.groups[k] += n


@dataclass
class MarginStats:
    """Pass 3 (calibration data): how far inside the band each ẑ sits, for out-of-band and all samples.

    `lo`, `hi` of `update` are the band (the range itself when FoldConfig.band_tolerance is 0).

    m = min(ẑ − l, u − ẑ); a sample is flagged at margin δ iff m < δ. Bins: m < 0, then B bins over
    [0, rmax) (rmax = max |z − ẑ| from pass 1: no out-of-range sample needs a larger δ), then m ≥ rmax.
    """

    width: torch.Tensor  # [f] bin width rmax / B
    out_counts: torch.Tensor  # int64 [f, B+2]
    all_counts: torch.Tensor  # int64 [f, B+2]
    count: int = 0

    @classmethod
    def from_moments(cls, m: MomentStats, bins: int) -> MarginStats:
        """Bins sized from pass 1's max residual."""
        f = m.rmax.shape[0]
        width = torch.where(m.rmax > 0, m.rmax / bins, torch.ones_like(m.rmax))
        zeros = lambda: torch.zeros(f, bins + 2, dtype=torch.int64, device=m.rmax.device)  # noqa: E731
        return cls(width=width, out_counts=zeros(), all_counts=zeros())

    @property
    def bins(self) -> int:
        """Bins over [0, rmax)."""
        return int(self.out_counts.shape[1]) - 2

    def update(self, z: torch.Tensor, zhat: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Add one batch: depth of ẑ inside [lo, hi], split by whether z itself is outside."""
        n, f = z.shape
        B = self.bins
        depth = torch.minimum(zhat - lo, hi - zhat)
        idx = torch.floor(depth / self.width).clamp(-1, B).long() + 1  # m<0 → 0, m≥rmax → B+1
        base = torch.arange(f, device=z.device) * (B + 2)
        flat = (idx + base).flatten()
        self.all_counts += torch.bincount(flat, minlength=f * (B + 2)).view(f, B + 2)
        outside = ((z < lo) | (z > hi)).flatten()
        self.out_counts += torch.bincount(flat[outside], minlength=f * (B + 2)).view(f, B + 2)
        self.count += n

    def margin_for_recall(self, target: float) -> torch.Tensor:
        """Smallest bin-edge δ per neuron whose misses on calibration are ≤ (1 − target) of its outliers."""
        n_out = self.out_counts.sum(1)
        allowed = torch.floor((1.0 - target) * n_out.double()).long()
        # misses at δ = e_k (k = 1..B+1, e_k = (k−1)·width) = out samples in bins k..B+1.
        tail = self.out_counts.flip(1).cumsum(1).flip(1)[:, 1:]  # [f, B+1]: tail[:, k-1] = Σ_{j≥k}
        ok = tail <= allowed.unsqueeze(1)
        k = ok.float().argmax(1)  # first k-1 index where misses are within budget (tail is non-increasing)
        return k.float() * self.width

    def snap_up(self, margin: torch.Tensor) -> torch.Tensor:
        """Round margins up to this histogram's bin edges (so calibration counts at them are exact)."""
        return torch.ceil(margin / self.width - 1e-6).clamp(0, self.bins) * self.width

    def counts_at(self, margin: torch.Tensor) -> FlagCounts:
        """Calibration flag / outlier / miss counts per neuron at bin-edge margins δ = i·width."""
        i = torch.round(margin / self.width).long().clamp(0, self.bins)
        flagged = self.all_counts.cumsum(1).gather(1, i.unsqueeze(1)).squeeze(1)
        tail = self.out_counts.flip(1).cumsum(1).flip(1)  # tail[:, j] = Σ_{b≥j}
        missed = tail.gather(1, (i + 1).unsqueeze(1)).squeeze(1)
        return FlagCounts(self.count, flagged, self.out_counts.sum(1), missed)
