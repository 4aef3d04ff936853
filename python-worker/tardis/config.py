"""FoldConfig: every knob of the method, recorded verbatim in the variant manifest."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from tardis.errors import ConfigError

Prefill = Literal["dense", "tardis"]
MarginPolicy = Literal["recall", "quantile"]
PredictorMethod = Literal["rtn", "gptq"]


@dataclass(frozen=True)
class FoldConfig:
    """Method parameters (METHOD.md §2–3).

    Defaults give a paper-definition FFN reduction of ≈80.5% when f = 4d: the folded d×d matrix
    (12.5% of the dense FFN) plus a 2-bit predictor with one fp16 scale and offset per 128 weights
    (2.25 bits per weight of W1, 7% of the dense FFN).
    """

    coverage: float = 0.85
    """Fraction of each neuron's calibration inputs its range must hold (shortest such interval); the
    lines are fitted there. With the default band (below) 0.85 beats 0.9 on both perplexity and fallback
    rate on the project's GELU models (bench/results/band_tolerance_2026-12-05_cpu.json)."""
    predictor_bits: int = 2
    """Bits per weight of the predictor's quantized copy of W1 (2, 3 or 4)."""
    predictor_method: PredictorMethod = "gptq"
    """How W1 is quantized: "rtn" (round to nearest, no data) or "gptq" (error feedback through the
    calibration Hessian of the FFN inputs: lower ẑ error, so smaller margins and fewer fallbacks)."""
    group_size: int = 128
    """Weights of one W1 row that share a scale and an offset."""
    margin_policy: MarginPolicy = "recall"
    """How δ is chosen: "recall" — the smallest δ whose calibration recall reaches `target_recall` per
    neuron; "quantile" — δ = the `margin_quantile` quantile of |z − ẑ| (recall ≥ that quantile by construction)."""
    target_recall: float = 0.997
    """Per-neuron recall the "recall" margin policy aims for on calibration data."""
    margin_quantile: float = 0.999
    """Quantile of |z − ẑ| used as δ by the "quantile" margin policy."""
    band_tolerance: float = 2.0
    """Recompute a neuron only where its line misfits by more than this many times the largest misfit
    inside its range: the range widens to the band where |act(z) − a·z − c| stays below that
    (tardis.core.band). 0 = recompute everything outside the range (the paper's test). No effect on
    exact pieces (ReLU). Measured on the GELU models: (coverage 0.85, band 2) halves the fallback rate of
    (0.9, 0) with less perplexity lost."""
    fold_fraction: float = 1.0
    """Fraction of neurons folded; the rest ('hot') are computed exactly at every step."""
    calib_tokens: int = 32768
    """Calibration tokens used to fit ranges, lines and margins."""
    heldout_tokens: int = 4096
    """Held-out tokens (taken after the calibration tokens) on which fallback rate and recall are measured."""
    seq_len: int = 256
    """Length of each calibration sequence."""
    batch_size: int = 8
    """Calibration sequences per forward pass."""
    prefill: Prefill = "dense"
    """How multi-token (prefill) steps run: the dense FFN (default; the union of outliers is ~100%) or TARDIS."""
    histogram_bins: int = 512
    """Bins per neuron for the bounded-memory pre-activation histogram."""
    clip_search: bool = True
    """Search a per-group clipping ratio for the round-to-nearest predictor (lower weight MSE)."""

    def __post_init__(self) -> None:
        """Validate every field; errors name the field, the value and the allowed range."""
        checks: list[tuple[str, bool, str]] = [
            ("coverage", 0.0 < self.coverage < 1.0, "a fraction in (0, 1), e.g. 0.9"),
            ("predictor_bits", self.predictor_bits in (2, 3, 4), "2, 3 or 4"),
            ("predictor_method", self.predictor_method in ("rtn", "gptq"), "'rtn' or 'gptq'"),
            ("group_size", self.group_size >= 8, "an integer ≥ 8, e.g. 128"),
            ("margin_policy", self.margin_policy in ("recall", "quantile"), "'recall' or 'quantile'"),
            ("target_recall", 0.5 <= self.target_recall < 1.0, "a fraction in [0.5, 1), e.g. 0.997"),
            ("margin_quantile", 0.5 <= self.margin_quantile < 1.0, "a quantile in [0.5, 1), e.g. 0.999"),
            ("band_tolerance", 0.0 <= self.band_tolerance <= 16.0, "a factor in [0, 16], e.g. 1 (0 = off)"),
            ("fold_fraction", 0.0 <= self.fold_fraction <= 1.0, "a fraction in [0, 1]"),
            ("calib_tokens", self.calib_tokens >= 16, "an integer ≥ 16"),
            ("heldout_tokens", self.heldout_tokens >= 0, "an integer ≥ 0"),
            ("seq_len", self.seq_len >= 2, "an integer ≥ 2"),
            ("batch_size", self.batch_size >= 1, "an integer ≥ 1"),
            ("prefill", self.prefill in ("dense", "tardis"), "'dense' or 'tardis'"),
            ("histogram_bins", 16 <= self.histogram_bins <= 4096, "an integer in [16, 4096]"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"FoldConfig.{name}={getattr(self, name)!r} is invalid: expected {expected}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (for the manifest and the wire)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FoldConfig:
        """Build from a dict, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown FoldConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)
