"""The accuracy benchmark: dense vs TARDIS at several coverages vs magnitude / Wanda / RIA pruning.

For one causal LM: calibrate TARDIS (every token then runs through the folded FFNs: prefill
"tardis"), prune copies of the dense model at fixed sparsities and at TARDIS's paper-definition FFN
reduction, and score every variant on the same held-out text: sliding-window perplexity, the cloze
proxy and the next-sentence proxy (tardis.eval.proxies). `bench/accuracy.py` is the command line.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tardis.calibrate import calibrate
from tardis.config import FoldConfig
from tardis.corpora import lee_calibration, lee_heldout
from tardis.data import token_batches
from tardis.engines.hf import counters, install, tardis_modules
from tardis.eval.baselines import METHODS, InputNorms, collect_input_norms, prune_ffns, sparsity_for_reduction
from tardis.eval.perplexity import perplexity
from tardis.eval.proxies import ChoiceItem, ClozeItem, choice_accuracy, choice_items, cloze_accuracy, cloze_items

Log = Callable[[str], None]
REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Settings:
    """What the benchmark runs; the defaults keep three ~5M-parameter models under ~10 min on 2 CPU cores."""

    coverages: tuple[float, ...] = (0.85, 0.9, 0.95)
    sparsities: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8)
    methods: tuple[str, ...] = METHODS
    calib_tokens: int = 8192
    """Calibration tokens for TARDIS and for the Wanda/RIA input norms (the same tokens)."""
    fallback_tokens: int = 2048
    """Tokens after the calibration ones on which calibrate() measures fallback rate and recall."""
    seq_len: int = 256
    eval_tokens: int = 8192
    """Held-out tokens scored for perplexity."""
    context: int = 256
    stride: int = 128
    cloze_items: int = 100
    choice_items: int = 60
    seed: int = 0


@dataclass
class EvalData:
    """Calibration text, held-out text and the proxy items built from the held-out text."""

    calib_name: str
    calib_texts: list[str]
    heldout_name: str
    heldout_texts: list[str]
    cloze: list[ClozeItem] = field(default_factory=list)
    choice: list[ChoiceItem] = field(default_factory=list)


def shared_data_dir() -> Path | None:
    """The read-only shared data folder ($TARDIS_SHARED_DATA, else beside the checkout), if it has WikiText-2."""
    for root in (os.environ.get("TARDIS_SHARED_DATA"), REPO.parent / "shared" / "data"):
        if root and (Path(root) / "wikitext-2" / "test.txt").is_file():
            return Path(root)
    return None


def wikitext_paragraphs(path: Path) -> list[str]:
    """Non-empty lines of a WikiText-2 file (tokenized v1 text, `<unk>` kept), section titles dropped."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not (line.startswith("=") and line.endswith("="))]


def load_eval_data(settings: Settings, data_dir: Path | None = None) -> EvalData:
    """WikiText-2 valid (calibration) and test (held out) when the shared data is there, else the Lee corpus."""
    data_dir = data_dir or shared_data_dir()
    if data_dir is not None:
        calib = ("WikiText-2 valid", wikitext_paragraphs(data_dir / "wikitext-2" / "valid.txt"))
        held = ("WikiText-2 test", wikitext_paragraphs(data_dir / "wikitext-2" / "test.txt"))
    else:
        calib = ("Lee background corpus (gensim test data)", lee_calibration())
        held = ("Lee test corpus (gensim test data)", lee_heldout())
    return EvalData(
        calib_name=calib[0],
        calib_texts=calib[1],
        heldout_name=held[0],
        heldout_texts=held[1],
        cloze=cloze_items(held[1], settings.cloze_items, settings.seed),
        choice=choice_items(held[1], settings.choice_items, settings.seed),
    )


def first_tokens(tokenizer: Any, texts: list[str], tokens: int) -> list[str]:
    """The leading texts that together hold at least `tokens` tokens (all of them if fewer)."""
    out, count = [], 0
    for t in texts:
        out.append(t)
        count += len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1
        if count >= tokens:
            break
    return out


def evaluate(model: nn.Module, tokenizer: Any, data: EvalData, settings: Settings) -> dict[str, float]:
    """Perplexity on the first `eval_tokens` held-out tokens, then the two proxies."""
    texts = first_tokens(tokenizer, data.heldout_texts, settings.eval_tokens)
    for m in tardis_modules(model):
        m.reset_counters()
    out = perplexity(model, tokenizer, texts, context=settings.context, stride=settings.stride)
    live = counters(model)
    if live:
        # fallback rate on the held-out text itself: flagged (neuron, token) pairs per neuron and token
        rates = [c["flagged"] / max(c["tokens"] * c["neurons"], 1) for c in live]
        out["eval_fallback_rate"] = statistics.fmean(rates)
    out.update(cloze_accuracy(model, tokenizer, data.cloze))
    out.update(choice_accuracy(model, tokenizer, data.choice))
    return out


def _calib_batches(tokenizer: Any, data: EvalData, settings: Settings) -> list[torch.Tensor]:
    config = FoldConfig(calib_tokens=settings.calib_tokens, heldout_tokens=0, seq_len=settings.seq_len)
    return token_batches(tokenizer, data.calib_texts, config)[0]


def run_model(
    name: str, model: nn.Module, tokenizer: Any, data: EvalData, settings: Settings, log: Log = print
) -> dict[str, Any]:
    """Every method on one dense causal LM; returns {"model", "rows", "settings", "data"}."""
    model.eval()
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any], m: nn.Module) -> None:
        t0 = time.perf_counter()
        row.update(evaluate(m, tokenizer, data, settings))
        row["eval_s"] = time.perf_counter() - t0
        rows.append(row)
        log(format_row(row))

    add({"method": "dense", "setting": "-", "ffn_reduction": 0.0}, model)

    reductions = []
    for cov in settings.coverages:
        config = FoldConfig(
            coverage=cov,
            calib_tokens=settings.calib_tokens,
            heldout_tokens=settings.fallback_tokens,
            seq_len=settings.seq_len,
            prefill="tardis",
        )
        t0 = time.perf_counter()
        variant = calibrate(model, tokenizer, data.calib_texts, config)
        calib_s = time.perf_counter() - t0
        rep = variant.report()
        folded = copy.deepcopy(model)
        install(folded, variant, prefill="tardis")
        reductions.append(rep["ffn_reduction_paper"])
        add(
            {
                "method": "tardis",
                "setting": f"coverage {cov:g}",
                "coverage": cov,
                "ffn_reduction": rep["ffn_reduction_paper"],
                "ffn_reduction_paper": rep["ffn_reduction_paper"],
                "ffn_reduction_read": rep["ffn_reduction_read"],
                "ffn_reduction_resident": rep["ffn_reduction_resident"],
                "measured_fallback_rate": rep["measured_fallback_rate"],
                "predictor_recall_mean": rep["predictor_recall_mean"],
                "predictor_recall_min": rep["predictor_recall_min"],
                "layers": [
                    {k: s.get(k) for k in ("layer", "measured_fallback_rate", "predictor_recall", "fit_rmse")}
                    for s in rep["layers"]
                ],
                "calibrate_s": calib_s,
            },
            folded,
        )
        del folded

    norms: list[InputNorms] = collect_input_norms(model, _calib_batches(tokenizer, data, settings))
    matched = sorted({round(sparsity_for_reduction(r), 4) for r in reductions})
    for method in settings.methods:
        for s in sorted({*settings.sparsities, *matched}):
            pruned = copy.deepcopy(model)
            info = prune_ffns(pruned, method, s, norms)  # type: ignore[arg-type]
            add(
                {
                    "method": method,
                    "setting": f"sparsity {s:.3f}" + (" (= TARDIS paper reduction)" if s in matched else ""),
                    "sparsity": info["sparsity"],
                    "ffn_reduction": info["sparsity"],
                    "matches_tardis": s in matched,
                },
                pruned,
            )
            del pruned
    return {"model": name, "rows": rows, "settings": asdict(settings), "data": _data_info(data)}


def _data_info(data: EvalData) -> dict[str, Any]:
    return {
        "calibration": data.calib_name,
        "heldout": data.heldout_name,
        "cloze_items": len(data.cloze),
        "choice_items": len(data.choice),
    }


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):.1f}%"


def format_row(row: dict[str, Any]) -> str:
    """One plain-text line of results (for progress output)."""
    extra = ""
    if row["method"] == "tardis":
        extra = (
            f"  read {_pct(row['ffn_reduction_read'])}  fallback {_pct(row['measured_fallback_rate'])}"
            f"  recall {_pct(row['predictor_recall_mean'])}"
        )
    return (
        f"{row['method']:>9} {row['setting']:<40} red {_pct(row['ffn_reduction'])}  ppl {row['ppl']:9.2f}"
        f"  cloze {_pct(row['cloze_acc'])}  choice {_pct(row['choice_acc'])}{extra}"
    )


def markdown_table(result: dict[str, Any]) -> str:
    """The results of one model as a markdown table, dense first."""
    dense = result["rows"][0]
    head = (
        "| method | setting | FFN reduction (paper) | FFN reduction (read) | ppl | ppl vs dense | cloze acc | "
        "choice acc | fallback (calib held-out / eval) | predictor recall (mean / min) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in result["rows"]:
        tardis = r["method"] == "tardis"
        fallback = f"{_pct(r['measured_fallback_rate'])} / {_pct(r.get('eval_fallback_rate'))}" if tardis else "-"
        recall = f"{_pct(r['predictor_recall_mean'])} / {_pct(r['predictor_recall_min'])}" if tardis else "-"
        lines.append(
            f"| {r['method']} | {r['setting']} | {_pct(r['ffn_reduction'])} | "
            f"{_pct(r['ffn_reduction_read']) if tardis else '-'} | {r['ppl']:.2f} | "
            f"{100 * (r['ppl'] / dense['ppl'] - 1):+.1f}% | {_pct(r['cloze_acc'])} | {_pct(r['choice_acc'])} | "
            f"{fallback} | {recall} |"
        )
    return head + "\n".join(lines) + "\n"


METRICS = (
    ("ppl", "perplexity (log scale)"),
    ("cloze_acc", "cloze accuracy (proxy)"),
    ("choice_acc", "next-sentence accuracy (proxy)"),
)
COLORS = {"tardis": "tab:green", "magnitude": "tab:gray", "wanda": "tab:blue", "ria": "tab:orange"}


def plot(result: dict[str, Any], path: Path) -> None:
    """Metric vs FFN reduction, one line per method, dense as a horizontal line; one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    dense = rows[0]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4))
    for ax, (key, label) in zip(axes, METRICS, strict=True):
        ax.axhline(dense[key], color="black", linestyle="--", label="dense")
        for method in ("magnitude", "wanda", "ria", "tardis"):
            pts = sorted((r["ffn_reduction"], r[key]) for r in rows if r["method"] == method)
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            style = "o" if method == "tardis" else "o-"
            ax.plot([100 * x for x in xs], ys, style, color=COLORS[method], label=method)
            if method == "tardis":
                read = sorted((r["ffn_reduction_read"], r[key]) for r in rows if r["method"] == "tardis")
                rx, ry = zip(*read, strict=True)
                ax.plot([100 * x for x in rx], ry, "s:", color=COLORS[method], mfc="none", label="tardis (read)")
        if key == "ppl":
            ax.set_yscale("log")
        ax.set_xlabel("FFN parameter reduction (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{result['model']}: held-out {result['data']['heldout']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
