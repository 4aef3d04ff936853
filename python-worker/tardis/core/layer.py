"""FoldedLayer: everything TARDIS adds to one FFN, and its tensor names in `tardis.safetensors`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tardis.core.predictor import QuantizedW1, flag_thresholds


@dataclass
class FoldedLayer:
    """One folded FFN: y = Wf·x + bf + Σ_{flagged i} W2[:, i]·(act(z_i) − a_i·z_i − c_i).

    Shapes: wf [d, d], bf [d], lo/hi/margin/slope/intercept [f] (float32), hot [f] bool.
    """

    wf: torch.Tensor
    bf: torch.Tensor
    predictor: QuantizedW1
    lo: torch.Tensor
    hi: torch.Tensor
    margin: torch.Tensor
    slope: torch.Tensor
    intercept: torch.Tensor
    hot: torch.Tensor
    act: str

    def thresholds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inner bounds [l + δ, u − δ] for the predictor test (hot neurons: always flagged)."""
        return flag_thresholds(self.lo, self.hi, self.margin, self.hot)

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Named tensors for safetensors (contiguous, CPU)."""
        t = {
            "wf": self.wf,
            "bf": self.bf,
            "predictor.packed": self.predictor.packed,
            "predictor.scales": self.predictor.scales,
            "predictor.offsets": self.predictor.offsets,
            "lo": self.lo,
            "hi": self.hi,
            "margin": self.margin,
            "slope": self.slope,
            "intercept": self.intercept,
            "hot": self.hot.to(torch.uint8),
        }
        return {f"{prefix}{k}": v.detach().cpu().contiguous() for k, v in t.items()}

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, torch.Tensor], prefix: str, *, act: str, bits: int, group_size: int, in_features: int
    ) -> FoldedLayer:
        """Inverse of to_tensors; a missing tensor is a KeyError naming it."""

        def get(name: str) -> torch.Tensor:
            key = f"{prefix}{name}"
            if key not in tensors:
                raise KeyError(f"tensor {key!r} missing from tardis.safetensors")
            return tensors[key]

        return cls(
            wf=get("wf"),
            bf=get("bf"),
            predictor=QuantizedW1(
                packed=get("predictor.packed"),
                scales=get("predictor.scales"),
                offsets=get("predictor.offsets"),
                bits=bits,
                group_size=group_size,
                in_features=in_features,
            ),
            lo=get("lo"),
            hi=get("hi"),
            margin=get("margin"),
            slope=get("slope"),
            intercept=get("intercept"),
            hot=get("hot").bool(),
            act=act,
        )
