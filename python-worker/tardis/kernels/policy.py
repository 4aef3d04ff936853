"""Per-batch TARDIS/dense policy from a measured union curve (METHOD.md §4, Batches).

The cost of a TARDIS step grows with the union of flagged neurons over the batch; dense wins past a
break-even union fraction. `fit_policy` finds that break-even from measured (union, time) points;
the engine then picks per batch size from its calibrated union curve, and the kernels' static grids
bound the work on the device for a batch whose union overshoots the curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    return fit_policy_points([(union_curve[b], t, dn) for b, (t, dn) in times.items() if b in union_curve])


def fit_policy_points(points: list[tuple[float, float, float]]) -> Policy:
    """`fit_policy` over (union fraction, TARDIS µs, dense µs) points, e.g. every batch and rate of a run."""
    max_union = -1.0
    for u, t, dn in sorted(points):
        if t > dn:
            break
        max_union = u
    return Policy(max_union)


def policy_from_bench(rows: list[dict[str, Any]], d: int, f: int) -> Policy:
    """The policy an ffn_bench.py run measured for a layer of shape (d, f): its rows' (union, time) points."""
    points = [(r["union_frac"], r["tardis_us"], r["dense_us"]) for r in rows if (r["d"], r["f"]) == (d, f)]
    if not points:
        raise ValueError(f"the benchmark has no rows for d={d}, f={f}: run bench/ffn_bench.py for this shape")
    return fit_policy_points(points)


def decode_token_limit(union_curve: dict[str, float], policy: Policy, cap: int = 64) -> int:
    """The most tokens a decode step may hold and still run TARDIS under `policy`: the largest batch
    size b of a layer's measured union curve ({b: union fraction}, calibration's `union_curve`) whose
    union, and every smaller one's, the policy accepts (sizes between measured ones count as the
    larger); 0 when not even one token does. `cap`: the most the kernels take."""
    limit = 0
    for b, u in sorted((int(k), float(v)) for k, v in union_curve.items()):
        if b > cap or not policy.use_tardis(u):
            break
        limit = b
    return limit
