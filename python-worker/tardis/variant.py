"""Variant: the result of calibration — folded layers, their stats, and where the base weights live."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from tardis.config import FoldConfig
from tardis.core.hashing import sha256_file
from tardis.core.layer import FoldedLayer
from tardis.core.reduction import LayerBytes, ffn_reductions

WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")


def base_weight_files(path: Path) -> list[Path]:
    """Weight files of an HF model directory (not TARDIS's own sidecar)."""
    files = {p for pat in WEIGHT_PATTERNS for p in path.glob(pat)}
    return sorted(p for p in files if p.name != "tardis.safetensors")


def base_reference(model: nn.Module) -> dict[str, Any]:
    """What the variant records about its base model: class, type, directory and weight hashes."""
    config: Any = model.config
    src = getattr(config, "_name_or_path", "") or ""
    path = Path(src) if src and Path(src).is_dir() else None
    files = {p.name: sha256_file(p) for p in base_weight_files(path)} if path else {}
    return {
        "architecture": type(model).__name__,
        "model_type": config.model_type,
        "path": str(path.resolve()) if path and files else None,
        "files": files,
        "config": config.to_dict(),
    }


@dataclass
class Variant:
    """A folded model: FoldConfig, per-layer FoldedLayers and stats, and the base model reference."""

    config: FoldConfig
    family: str
    base: dict[str, Any]
    layers: list[FoldedLayer]
    layer_stats: list[dict[str, Any]]
    tokenizer: Any = None
    metrics: dict[str, Any] = field(default_factory=dict)
    variant_id: str | None = None

    def layer_bytes(self) -> list[LayerBytes]:
        """Sizes per layer, with the measured (held-out) fallback rate where there is one."""
        out = []
        for layer, st in zip(self.layers, self.layer_stats, strict=True):
            rate = st.get("measured_fallback_rate")
            if rate is None:
                rate = st.get("expected_fallback_rate") or 0.0
            out.append(
                LayerBytes(
                    d=int(layer.wf.shape[0]),
                    f=int(layer.lo.shape[0]),
                    predictor_bytes=layer.predictor.nbytes(),
                    hot=int(layer.hot.sum()),
                    fallback_rate=float(rate),
                )
            )
        return out

    def report(self) -> dict[str, Any]:
        """Per-layer stats, the three FFN reductions, summary rates and the method parameters."""

        def values(key: str) -> list[float]:
            return [float(s[key]) for s in self.layer_stats if s.get(key) is not None]

        def mean(key: str) -> float | None:
            v = values(key)
            return statistics.fmean(v) if v else None

        recalls = values("predictor_recall")
        return {
            "variant_id": self.variant_id,
            "family": self.family,
            "base_architecture": self.base["architecture"],
            "method": self.config.to_dict(),
            "layers": self.layer_stats,
            **ffn_reductions(self.layer_bytes()),
            "expected_fallback_rate": mean("expected_fallback_rate"),
            "measured_fallback_rate": mean("measured_fallback_rate"),
            "true_outlier_rate": mean("true_outlier_rate"),
            "predictor_recall_mean": statistics.fmean(recalls) if recalls else None,
            "predictor_recall_min": min(recalls) if recalls else None,
            "fit_rmse_mean": mean("fit_rmse"),
            "hot_neurons": sum(int(s.get("hot_neurons", 0)) for s in self.layer_stats),
            "metrics": self.metrics,
            "note": "ffn_reduction_resident is negative by design: W1 and W2 stay resident for the exact fallback.",
        }

    def save(
        self, path: str | Path, *, base_weights: str = "link", model: nn.Module | None = None, overwrite: bool = False
    ) -> Path:
        """Write the artifact directory (temporary path, then rename); returns its path.

        base_weights="link" symlinks the base model's weight files (the default: never a silent copy);
        "copy" copies them, or writes them from `model` when the base has no files on disk.
        """
        from tardis.core.artifact import write_variant

        return write_variant(self, Path(path), base_weights=base_weights, model=model, overwrite=overwrite)
