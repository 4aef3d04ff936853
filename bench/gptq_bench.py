"""GPTQ's predictor quantization on a GPU: the torch column loop against the Triton block kernel.

Falcon-7B's W1 shape (18176 × 4544, bf16, random) with a Hessian from random correlated inputs; both paths of
`quantize_gptq` (tardis.core.predictor.GPTQ_TRITON) on the same inputs, each timed once after a warm-up on a
smaller matrix (compilation), and their codes, scales and offsets compared. Calibration runs this once per
layer. Prints a table last and writes JSON.

    cd python-worker && python ../bench/gptq_bench.py --out /tmp/gptq_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from tardis.core import predictor
from tardis.core.predictor import quantize_gptq, unpack_codes


def timed(w1: torch.Tensor, h: torch.Tensor, bits: int, gs: int, triton_path: bool) -> tuple[float, object]:
    """Seconds of one quantize_gptq call on this path, and its result."""
    predictor.GPTQ_TRITON = triton_path
    torch.cuda.synchronize()
    t = time.perf_counter()
    q = quantize_gptq(w1, h, bits, gs)
    torch.cuda.synchronize()
    return time.perf_counter() - t, q


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--f", type=int, default=18176)
    ap.add_argument("--d", type=int, default=4544)
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gptq_bench.json"))
    args = ap.parse_args()
    gen = torch.Generator(device="cuda").manual_seed(0)
    f, d = args.f, args.d
    w1 = (torch.randn(f, d, device="cuda", generator=gen) * 0.02).to(torch.bfloat16)
    x = torch.randn(8192, d, device="cuda", generator=gen) @ (torch.randn(d, d, device="cuda", generator=gen) / d**0.5)
    h = x.double().T @ x.double()
    for path in (True, False):  # compile and warm up both paths on a small slice
        timed(w1[:64, :512], h[:512, :512], args.bits, args.group_size, path)
    rows = {}
    results = {}
    for name, path in (("triton", True), ("torch", False)):
        s, q = timed(w1, h, args.bits, args.group_size, path)
        rows[name] = s
        results[name] = q
    predictor.GPTQ_TRITON = True
    a, b = results["triton"], results["torch"]
    n = a.n_groups * a.group_size
    codes_equal = float((unpack_codes(a.packed, args.bits, n) == unpack_codes(b.packed, args.bits, n)).double().mean())
    out = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "shape": [f, d],
        "bits": args.bits,
        "group_size": args.group_size,
        "seconds": rows,
        "speedup": rows["torch"] / rows["triton"],
        "codes_equal_frac": codes_equal,
        "scales_equal_frac": float((a.scales == b.scales).double().mean()),
        "offsets_equal_frac": float((a.offsets == b.offsets).double().mean()),
    }
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"GPTQ int{args.bits} g{args.group_size} W1 {f}x{d} on {out['gpu']}")
    print(f"{'path':8} {'seconds':>8}")
    for k, v in rows.items():
        print(f"{k:8} {v:8.2f}")
    print(
        f"speedup {out['speedup']:.1f}x; codes equal {codes_equal:.5f}, scales {out['scales_equal_frac']:.5f}, "
        f"offsets {out['offsets_equal_frac']:.5f}"
    )


if __name__ == "__main__":
    main()
