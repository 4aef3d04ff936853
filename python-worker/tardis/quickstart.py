"""Quickstart: fold the project's smallest trained model on public text and compare it with the dense one.

    python -m tardis.quickstart [--model models/tardis-tiny-gpt2] [--out .cache/quickstart/variant]

Calibrates on the Lee background news corpus, saves the variant, reloads it (verifying hashes),
and prints perplexity on the held-out Lee test corpus, fallback rate, predictor recall, the three
FFN reductions, and a greedy sample from each model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import transformers

import tardis
from tardis.corpora import REPO, lee_calibration, lee_heldout
from tardis.engines import hf
from tardis.eval.perplexity import perplexity

PROMPT = "The government said on Tuesday that"


def _generate(model: Any, tok: Any, n: int = 24) -> str:
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
    return str(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)).replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    """Run the quickstart; returns the process exit code."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / "models" / "tardis-tiny-gpt2"))
    ap.add_argument("--out", default=str(REPO / ".cache" / "quickstart" / "variant"))
    ap.add_argument("--calib-tokens", type=int, default=16384)
    ap.add_argument("--coverage", type=float, default=tardis.FoldConfig.coverage)
    ap.add_argument("--json", help="also write the results as JSON to this path")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    t0 = time.perf_counter()
    base = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(args.model)
    config = tardis.FoldConfig(calib_tokens=args.calib_tokens, heldout_tokens=4096, coverage=args.coverage)
    print(f"calibrating {Path(args.model).name} on the Lee news corpus ({config.calib_tokens} tokens) ...")
    variant = tardis.calibrate(base, tok, lee_calibration(), config)
    path = variant.save(args.out, overwrite=True)
    t_cal = time.perf_counter() - t0
    model, _ = tardis.load(path)
    held = lee_heldout()
    dense_ppl = perplexity(base, tok, held)
    hf.set_prefill(model, "tardis")  # score every token through the folded FFNs
    tardis_ppl = perplexity(model, tok, held)
    live = hf.counters(model)
    live_rate = sum(c["flagged"] for c in live) / max(1, sum(c["tokens"] * c["neurons"] for c in live))
    hf.set_prefill(model, "dense")
    rep = variant.report()
    rows = [
        ("dense", dense_ppl["ppl"], "", "", ""),
        (
            "tardis",
            tardis_ppl["ppl"],
            f"{100 * (tardis_ppl['ppl'] / dense_ppl['ppl'] - 1):+.1f}%",
            f"{live_rate:.3f}",
            f"{rep['predictor_recall_min']:.4f}",
        ),
    ]
    print(f"\nvariant {rep['variant_id'][:12]} at {path} (calibrated in {t_cal:.0f} s)")
    print(
        f"FFN reduction: paper {rep['ffn_reduction_paper']:.1%}  read {rep['ffn_reduction_read']:.1%}  "
        f"resident {rep['ffn_reduction_resident']:.1%} (W1/W2 stay resident for the exact fallback)"
    )
    print(f"\n{'model':<8} {'ppl (Lee held-out)':>18} {'vs dense':>9} {'fallback':>9} {'recall(min)':>11}")
    for name, ppl, delta, fb, rec in rows:
        print(f"{name:<8} {ppl:>18.2f} {delta:>9} {fb:>9} {rec:>11}")
    print(f'\nprompt: "{PROMPT}"')
    print(f"  dense : {_generate(base, tok)}")
    print(f"  tardis: {_generate(model, tok)}")
    if args.json:
        result = {"report": rep, "dense_ppl": dense_ppl, "tardis_ppl": tardis_ppl, "live_fallback_rate": live_rate}
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
