"""Per-batch TARDIS/dense policy from a measured union curve (METHOD.md §4, Batches).

The cost of a TARDIS step grows with the union of flagged neurons over the batch; dense wins past a
break-even union fraction. `fit_policy` finds that break-even from measured (union, time) points;
the engine then picks per batch size from its calibrated union curve, and the kernels' static grids
bound the work on the device for a batch whose union overshoots the curve.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    """Run TARDIS while the expected union fraction stays at or below `max_union`, dense above."""

    max_union: float

    def use_tardis(self, union_frac: float) -> bool:
        """Whether a batch whose expected union fraction is `union_frac` should run TARDIS."""
        return union_frac <= self.max_union

    def choose(self, union_curve: dict[int, float]) -> dict[int, str]:
        """'tardis' or 'dense' for each batch size of a union curve {batch: union fraction}."""
        return {b: "tardis" if self.use_tardis(u) else "dense" for b, u in sorted(union_curve.items())}


def fit_policy(union_curve: dict[int, float], times: dict[int, tuple[float, float]]) -> Policy:
    """The largest union fraction below which every measured TARDIS time beat dense.

    union_curve {batch: union fraction}; times {batch: (tardis µs, dense µs)} at the same batches.
    """
    points = sorted((union_curve[b], t, dn) for b, (t, dn) in times.items() if b in union_curve)
    max_union = -1.0
    for u, t, dn in points:
        if t > dn:
            break
        max_union = u
    return Policy(max_union)
