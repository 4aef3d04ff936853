"""Accuracy benchmark: dense vs TARDIS vs magnitude / Wanda / RIA on the project's trained decoders.

    python bench/accuracy.py --out docs/accuracy

For each model in models/ (missing ones are skipped with a message) prints a table and writes
<out>/<model>.json and <out>/<model>.png; then writes <out>.md (e.g. docs/accuracy.md) with every
table and the command that made them. Runs on CPU; the defaults take a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python-worker"))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from tardis.eval.accuracy import EvalData, Settings, load_eval_data, markdown_table, plot, run_model  # noqa: E402

MODELS = ("tardis-tiny-gpt2", "tardis-tiny-neox", "tardis-tiny-opt")


def main() -> None:
    """Parse arguments, run every present model, write JSON, PNG and the markdown summary."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/accuracy", help="folder for JSON and PNG; the summary goes to <out>.md")
    p.add_argument("--models", nargs="*", default=list(MODELS), help="names under models/ (or paths)")
    p.add_argument("--coverages", type=float, nargs="*", default=list(Settings.coverages))
    p.add_argument("--sparsities", type=float, nargs="*", default=list(Settings.sparsities))
    p.add_argument("--calib-tokens", type=int, default=Settings.calib_tokens)
    p.add_argument("--eval-tokens", type=int, default=Settings.eval_tokens)
    p.add_argument("--cloze-items", type=int, default=Settings.cloze_items)
    p.add_argument("--choice-items", type=int, default=Settings.choice_items)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    settings = Settings(
        coverages=tuple(args.coverages),
        sparsities=tuple(args.sparsities),
        calib_tokens=args.calib_tokens,
        eval_tokens=args.eval_tokens,
        cloze_items=args.cloze_items,
        choice_items=args.choice_items,
    )
    data = load_eval_data(settings)
    print(f"calibration: {data.calib_name}; held-out: {data.heldout_name}")
    print(
        f"proxies (built from the held-out text, not the real benchmarks): {len(data.cloze)} cloze items, "
        f"{len(data.choice)} 4-way next-sentence items"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections: list[tuple[str, str, float]] = []
    t_all = time.perf_counter()
    for name in args.models:
        path = Path(name) if Path(name).is_dir() else REPO / "models" / name
        if not (path / "config.json").is_file():
            print(f"skipping {name}: no model at {path} (train it with bench/train_models.sh)")
            continue
        print(f"\n== {path.name} ==")
        t0 = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
        result = run_model(path.name, model, tokenizer, data, settings)
        result["seconds"] = time.perf_counter() - t0
        (out / f"{path.name}.json").write_text(json.dumps(result, indent=1))
        plot(result, out / f"{path.name}.png")
        table = markdown_table(result)
        print(table)
        sections.append((path.name, table, result["seconds"]))
    if not sections:
        print("no models found: nothing written")
        return
    command = "python bench/accuracy.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_summary(out, sections, data, settings, command, time.perf_counter() - t_all)


def write_summary(
    out: Path, sections: list[tuple[str, str, float]], data: EvalData, settings: Settings, command: str, seconds: float
) -> None:
    """docs/accuracy.md: how it was made, then one table and plot per model."""
    md = out.with_suffix(".md")
    rel = out.name
    parts = [
        "# Accuracy: dense vs TARDIS vs magnitude / Wanda / RIA (FFN weights only)\n",
        f"Made by `{command}` (CPU, float32, {seconds / 60:.1f} min).\n",
        f"- Calibration (TARDIS and the Wanda/RIA input norms): {data.calib_name}, {settings.calib_tokens} tokens.",
        f"- Perplexity: {data.heldout_name}, first ≈{settings.eval_tokens} tokens, sliding window of "
        f"{settings.context} tokens, stride {settings.stride}.",
        f"- Proxies, built deterministically (seed {settings.seed}) from the same held-out text — *proxies*, "
        f"not LAMBADA or HellaSwag: cloze = greedy last word of a passage ({len(data.cloze)} items); "
        f"choice = true next sentence vs 3 sentences from other passages, length-normalised "
        f"log-likelihood ({len(data.choice)} items, chance 25%).",
        '- TARDIS runs every token through the folded FFN (prefill "tardis"). Its FFN reduction is the paper '
        "definition (folded d×d + 2-bit predictor vs dense W1, W2); *read* adds the recomputed outlier "
        "neurons per token. Resident memory goes up (W1, W2 stay for the exact fallback); see the JSON.",
        "- Fallback: the measured rate on calibrate()'s held-out tokens / on the perplexity text. Recall: the "
        "predictor's recall of true out-of-range neurons (mean / min over layers).",
        "- Pruning: magnitude layer-wise, Wanda and RIA per output row, on W1 and W2 of every FFN; the "
        "sparsity equal to TARDIS's paper reduction is marked.\n",
    ]
    for name, table, secs in sections:
        parts.append(f"## {name}\n\n![{name}]({rel}/{name}.png)\n\n{table}\n({secs:.0f} s)\n")
    md.write_text("\n".join(parts))
    print(f"wrote {md} and {out}/")


if __name__ == "__main__":
    main()
