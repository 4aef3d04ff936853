"""Does rounding x to int8 (the I8 kernel path) change what the predictor flags? Measured on real models.

For each trained small model (models/tardis-tiny-*, or --model DIR): calibrate with the default
FoldConfig (int2 GPTQ predictor, group 128), run held-out Lee text through the TARDIS model and, at
every FFN input x, compare three flag sets over the folded neurons:
- true outliers: z = W1·x + b1 outside the fitted range [l, u];
- the float predictor (what calibration fitted the margins for): ẑ = Q(W1)·x + b1 outside [l+δ, u−δ];
- the I8 predictor (`tardis.kernels.layout.predict_i8`, what the dp4a kernel computes).
Reports the flag (fallback) rate and the recall of true outliers for both predictors, and how many
(token, neuron) flags differ between them. Also the measured union curve of calibration (the fraction
of neurons a decode batch of b held-out tokens recomputes, mean over layers) next to what independent
tokens would give, 1 − (1 − p)^b (ffn_bench's pessimistic assumption). Float64 math on the CPU; prints
tables last, writes JSON.

    cd python-worker && python ../bench/i8_predictor.py --out /tmp/i8_predictor.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import torch
import transformers

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python-worker"))

from tardis import FoldConfig, calibrate, corpora  # noqa: E402
from tardis.engines import hf  # noqa: E402
from tardis.kernels.layout import predict_i8, tile_predictor  # noqa: E402

MODELS = ("tardis-tiny-gpt2", "tardis-tiny-neox", "tardis-tiny-opt")


def ffn_inputs(model: Any, modules: list[Any], tok: Any, texts: list[str], tokens: int, seq: int) -> list[torch.Tensor]:
    """Each TARDIS module's inputs [tokens, d] on held-out text (windows of `seq` tokens)."""
    ids = torch.tensor(tok("\n\n".join(texts), add_special_tokens=False)["input_ids"][:tokens])
    seen: list[list[torch.Tensor]] = [[] for _ in modules]
    hooks = [
        m.register_forward_pre_hook(lambda _m, args, i=i: seen[i].append(args[0].reshape(-1, args[0].shape[-1])))
        for i, m in enumerate(modules)
    ]
    try:
        with torch.no_grad():
            for s in range(0, len(ids), seq):
                model(input_ids=ids[s : s + seq][None])
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(xs).double() for xs in seen]


def compare_layer(x: torch.Tensor, module: Any, predictor: Any, hot: torch.Tensor) -> dict[str, float]:
    """Flag counts of the float and the I8 predictor against the true outliers on inputs x [T, d]."""
    b1 = module.b1.double()
    z = x @ module.w1.double().T + b1
    outside = (z < module.lo.double()) | (z > module.hi.double())
    lo_in, hi_in = module.lo_in.double(), module.hi_in.double()
    zf = x @ predictor.dequantize(torch.float64).T + b1
    z8 = predict_i8(x, tile_predictor(predictor)) + b1
    ff = (zf < lo_in) | (zf > hi_in)
    f8 = (z8 < lo_in) | (z8 > hi_in)
    keep = ~hot  # hot neurons always fall back, under either predictor
    outside, ff, f8 = outside[:, keep], ff[:, keep], f8[:, keep]
    return {
        "pairs": float(outside.numel()),
        "outside": float(outside.sum()),
        "flag_float": float(ff.sum()),
        "flag_i8": float(f8.sum()),
        "hit_float": float((ff & outside).sum()),
        "hit_i8": float((f8 & outside).sum()),
        "differ": float((ff != f8).sum()),
    }


def run_model(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Calibrate one model, then compare the predictors layer by layer on held-out text."""
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    cfg = FoldConfig(calib_tokens=args.calib_tokens, predictor_bits=2)
    variant = calibrate(model, tok, corpora.lee_calibration(), cfg)
    modules = hf.install(model, variant, prefill="tardis")
    xs = ffn_inputs(model, modules, tok, corpora.lee_heldout(), args.heldout_tokens, args.seq_len)
    layers = [
        compare_layer(x, m, layer.predictor, layer.hot) for x, m, layer in zip(xs, modules, variant.layers, strict=True)
    ]
    total = {k: sum(r[k] for r in layers) for k in layers[0]}
    curves = [s["union_curve"] for s in variant.layer_stats]
    p1 = sum(c["1"] for c in curves) / len(curves)
    union = {b: sum(c[b] for c in curves) / len(curves) for b in curves[0]}
    return {
        "model": path.name,
        "union_curve_mean": union,
        "union_independent": {b: 1.0 - (1.0 - p1) ** int(b) for b in union},
        "group_size": cfg.group_size,
        "layers": layers,
        "fallback_float": total["flag_float"] / total["pairs"],
        "fallback_i8": total["flag_i8"] / total["pairs"],
        "true_outlier_rate": total["outside"] / total["pairs"],
        "recall_float": total["hit_float"] / max(total["outside"], 1.0),
        "recall_i8": total["hit_i8"] / max(total["outside"], 1.0),
        "flags_differ": total["differ"] / total["pairs"],
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every model, print the table, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", help="a model directory (default: the three small models)")
    ap.add_argument("--calib-tokens", type=int, default=8192)
    ap.add_argument("--heldout-tokens", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--out", default="i8_predictor.json")
    args = ap.parse_args(argv)
    paths = [Path(p) for p in args.model] if args.model else [REPO / "models" / m for m in MODELS]
    torch.manual_seed(0)
    rows = [run_model(p, args) for p in paths]
    out = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "device": "cpu", "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"{'model':18} {'true out':>8} {'fb float':>8} {'fb i8':>8} {'rec float':>9} {'rec i8':>8} {'differ':>8}")
    for r in rows:
        print(
            f"{r['model']:18} {r['true_outlier_rate']:8.4f} {r['fallback_float']:8.4f} {r['fallback_i8']:8.4f} "
            f"{r['recall_float']:9.4f} {r['recall_i8']:8.4f} {r['flags_differ']:8.5f}"
        )
    sizes = list(rows[0]["union_curve_mean"])
    print("\nunion of a decode batch of b tokens, measured (independent tokens):")
    print(f"{'model':18} " + " ".join(f"{'b=' + b:>15}" for b in sizes))
    for r in rows:
        cells = [f"{r['union_curve_mean'][b]:.3f} ({r['union_independent'][b]:.3f})" for b in sizes]
        print(f"{r['model']:18} " + " ".join(f"{c:>15}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
