"""Fallback rate vs perplexity: the coverage knob alone, and the band tolerance (FoldConfig.band_tolerance).

For each trained small model (models/tardis-tiny-*, or --models DIR ...) and each (coverage, band
tolerance) pair: calibrate on WikiText-2 valid (Lee background corpus without the shared data), score
perplexity on the first --eval-tokens of WikiText-2 test (Lee test corpus) through the PyTorch
reference path with every token through the folded FFN (prefill "tardis"), and count the fallback
rate on that same text. Coverage alone trades fallback for accuracy by widening the range the lines
are fitted on; the band keeps the fitted range and stops recomputing neurons where the line is still
as good as inside it. Compare rows at equal fallback (or equal perplexity). Prints a table last, writes
JSON after every row.

    cd python-worker && python ../bench/band_tolerance.py --out /tmp/band_tolerance.json
"""

from __future__ import annotations

import argparse
import copy
import datetime
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import transformers

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python-worker"))

from tardis import FoldConfig, calibrate  # noqa: E402
from tardis.engines.hf import install, tardis_modules  # noqa: E402
from tardis.eval.accuracy import Settings, eval_fallback, first_tokens, load_eval_data  # noqa: E402
from tardis.eval.perplexity import perplexity  # noqa: E402

MODELS = ("tardis-tiny-gpt2", "tardis-tiny-neox", "tardis-tiny-opt")


def score(model: Any, tok: Any, texts: list[str]) -> dict[str, float]:
    """Perplexity on `texts` and the mean over layers of the fallback rate on them."""
    for m in tardis_modules(model):
        m.reset_counters()
    with torch.no_grad():
        out = perplexity(model, tok, texts, context=256, stride=128)
    out.update(eval_fallback(model))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--coverages", type=float, nargs="+", default=[0.8, 0.85, 0.9, 0.95])
    p.add_argument("--tolerances", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0])
    p.add_argument("--target-recalls", type=float, nargs="+", default=[FoldConfig().target_recall])
    p.add_argument("--calib-tokens", type=int, default=16384)
    p.add_argument("--heldout-tokens", type=int, default=2048)
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--out", default="band_tolerance.json")
    args = p.parse_args(argv)
    settings = Settings(
        calib_tokens=args.calib_tokens, fallback_tokens=args.heldout_tokens, eval_tokens=args.eval_tokens
    )
    data = load_eval_data(settings)
    result: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "device": f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "calibration": data.calib_name,
        "heldout": data.heldout_name,
        "args": vars(args),
        "rows": [],
    }
    rows: list[dict[str, Any]] = result["rows"]

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(json.dumps(row), flush=True)

    for name in args.models:
        path = Path(name) if Path(name).is_dir() else REPO / "models" / name
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
        tok = transformers.AutoTokenizer.from_pretrained(str(path))
        texts = first_tokens(tok, data.heldout_texts, args.eval_tokens)
        dense = score(model, tok, texts)
        add({"model": path.name, "method": "dense", **dense})
        for cov, tol, recall in itertools.product(args.coverages, args.tolerances, args.target_recalls):
            cfg = FoldConfig(
                coverage=cov,
                band_tolerance=tol,
                target_recall=recall,
                calib_tokens=args.calib_tokens,
                heldout_tokens=args.heldout_tokens,
                prefill="tardis",
            )
            t0 = time.perf_counter()
            variant = calibrate(model, tok, data.calib_texts, cfg)
            calib_s = time.perf_counter() - t0
            rep = variant.report()
            folded = copy.deepcopy(model)
            install(folded, variant, prefill="tardis")
            s = score(folded, tok, texts)
            add(
                {
                    "model": path.name,
                    "method": "tardis",
                    "coverage": cov,
                    "band_tolerance": tol,
                    "target_recall": recall,
                    "ppl_vs_dense": s["ppl"] / dense["ppl"] - 1.0,
                    "calib_fallback_rate": rep["measured_fallback_rate"],
                    "band_widening": statistics.fmean(r["band_widening"] for r in variant.layer_stats),
                    "predictor_recall_mean": rep["predictor_recall_mean"],
                    "calibrate_s": calib_s,
                    **s,
                }
            )
            del folded

    print(
        "\n| model | coverage | band tolerance | target recall | band / range width "
        "| fallback (eval) | ppl | vs dense |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["method"] == "dense":
            print(f"| {r['model']} | dense | | | | | {r['ppl']:.2f} | |")
        else:
            print(
                f"| {r['model']} | {r['coverage']:g} | {r['band_tolerance']:g} | {r['target_recall']:g} "
                f"| {r['band_widening']:.2f} | "
                f"{100 * r['eval_fallback_rate']:.1f}% | {r['ppl']:.2f} | {100 * r['ppl_vs_dense']:+.1f}% |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
