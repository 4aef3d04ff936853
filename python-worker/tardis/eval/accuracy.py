"""The accuracy benchmark: dense vs TARDIS at several coverages vs magnitude / Wanda / RIA pruning.

For one model: calibrate TARDIS (every token then runs through the folded FFNs: prefill "tardis"),
prune copies of the dense model at fixed sparsities and at TARDIS's paper-definition FFN reduction,
and score every variant the same way — a causal LM by sliding-window perplexity and the cloze and
next-sentence proxies (tardis.eval.proxies) on held-out text; a sentence encoder by its embeddings'
agreement with the dense model's (tardis.eval.embeddings). `bench/accuracy.py` is the command line.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from tardis.calibrate import calibrate
from tardis.config import FoldConfig
from tardis.corpora import lee_calibration, lee_heldout
from tardis.data import token_batches
from tardis.engines.hf import counters, install, tardis_modules
from tardis.eval.baselines import METHODS, InputNorms, collect_input_norms, prune_ffns, sparsity_for_reduction
from tardis.eval.embeddings import agreement, embed, heldout_sentences
from tardis.eval.perplexity import perplexity
from tardis.eval.proxies import ChoiceItem, ClozeItem, choice_accuracy, choice_items, cloze_accuracy, cloze_items

Log = Callable[[str], None]
REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Settings:
    """What the benchmark runs. The defaults take a few minutes per model on one GPU; `QUICK` suits a CPU."""

    coverages: tuple[float, ...] = (0.85, 0.9, 0.95)
    band_tolerances: tuple[float, ...] = (0.0, 2.0)
    """FoldConfig.band_tolerance values; TARDIS runs at every (coverage, band tolerance) pair (0: the
    paper's test, 2: the default band)."""
    sparsities: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8)
    methods: tuple[str, ...] = METHODS
    calib_tokens: int = 32768
    """Calibration tokens for TARDIS and for the Wanda/RIA input norms (the same tokens)."""
    fallback_tokens: int = 4096
    """Tokens after the calibration ones on which calibrate() measures fallback rate and recall."""
    seq_len: int = 256
    eval_tokens: int = 65536
    """Held-out tokens scored for perplexity."""
    context: int = 256
    stride: int = 128
    cloze_items: int = 400
    choice_items: int = 200
    encoder_sentences: int = 500
    """Held-out sentences embedded for the encoder metrics."""
    seed: int = 0


QUICK = Settings(
    coverages=(0.85,),
    band_tolerances=(2.0,),
    calib_tokens=4096,
    fallback_tokens=1024,
    eval_tokens=4096,
    cloze_items=50,
    choice_items=30,
    encoder_sentences=150,
)
"""A smoke-sized run (minutes on 2 CPU cores; the numbers are noisy)."""


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


Scorer = Callable[[nn.Module], dict[str, float]]

DECODER_METRICS = (
    ("ppl", "perplexity (log scale)"),
    ("cloze_acc", "cloze accuracy (proxy)"),
    ("choice_acc", "next-sentence accuracy (proxy)"),
)
ENCODER_METRICS = (
    ("cosine_mean", "cosine similarity to dense embeddings"),
    ("top10_agreement", "top-10 retrieval agreement with dense"),
)


def eval_fallback(model: nn.Module) -> dict[str, float]:
    """Mean over layers of flagged (neuron, token) pairs per neuron and token since the last reset."""
    live = counters(model)
    if not live:
        return {}
    return {"eval_fallback_rate": statistics.fmean(c["flagged"] / max(c["tokens"] * c["neurons"], 1) for c in live)}


def evaluate(model: nn.Module, tokenizer: Any, data: EvalData, settings: Settings) -> dict[str, float]:
    """Perplexity on the first `eval_tokens` held-out tokens, then the two proxies."""
    texts = first_tokens(tokenizer, data.heldout_texts, settings.eval_tokens)
    for m in tardis_modules(model):
        m.reset_counters()
    out = perplexity(model, tokenizer, texts, context=settings.context, stride=settings.stride)
    out.update(eval_fallback(model))  # on the perplexity text itself
    out.update(cloze_accuracy(model, tokenizer, data.cloze))
    out.update(choice_accuracy(model, tokenizer, data.choice))
    return out


def run_methods(
    name: str,
    model: nn.Module,
    tokenizer: Any,
    calib_texts: list[str],
    score: Scorer,
    settings: Settings,
    log: Log = print,
) -> list[dict[str, Any]]:
    """Dense, TARDIS at each coverage, and each pruning method at each sparsity, scored by `score`.

    TARDIS variants are installed with prefill "tardis" (every token through the folded FFN); the
    pruning sparsities are `settings.sparsities` plus the ones equal to TARDIS's paper reductions.
    """
    model.eval()
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any], m: nn.Module) -> None:
        t0 = time.perf_counter()
        row.update(score(m))
        row["eval_s"] = time.perf_counter() - t0
        rows.append(row)
        log(f"{name}: {format_row(row)}")

    add({"method": "dense", "setting": "-", "ffn_reduction": 0.0}, model)

    reductions = []
    for cov, band in itertools.product(settings.coverages, settings.band_tolerances):
        config = FoldConfig(
            coverage=cov,
            band_tolerance=band,
            calib_tokens=settings.calib_tokens,
            heldout_tokens=settings.fallback_tokens,
            seq_len=settings.seq_len,
            prefill="tardis",
        )
        t0 = time.perf_counter()
        variant = calibrate(model, tokenizer, calib_texts, config)
        calib_s = time.perf_counter() - t0
        rep = variant.report()
        folded = copy.deepcopy(model)
        for m in install(folded, variant, prefill="tardis"):
            # Score through the PyTorch reference path (the ground truth, METHOD.md §4): the Triton
            # decode kernels that install() attaches on CUDA are built for decode batches, not windows.
            setattr(m, "kernel_pack", None)  # noqa: B010 (a plain attribute, set by tardis.kernels.attach)
        reductions.append(rep["ffn_reduction_paper"])
        add(
            {
                "method": "tardis",
                "setting": f"coverage {cov:g}" + (f", band {band:g}" if band else ""),
                "coverage": cov,
                "band_tolerance": band,
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

    batches = token_batches(
        tokenizer,
        calib_texts,
        FoldConfig(calib_tokens=settings.calib_tokens, heldout_tokens=0, seq_len=settings.seq_len),
    )[0]
    norms: list[InputNorms] = collect_input_norms(model, batches)
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
    return rows


def run_decoder(
    name: str, model: nn.Module, tokenizer: Any, data: EvalData, settings: Settings, log: Log = print
) -> dict[str, Any]:
    """Every method on one causal LM, scored by perplexity and the two proxies."""
    rows = run_methods(
        name, model, tokenizer, data.calib_texts, lambda m: evaluate(m, tokenizer, data, settings), settings, log
    )
    return {
        "model": name,
        "kind": "decoder",
        "metrics": DECODER_METRICS,
        "rows": rows,
        "settings": asdict(settings),
        "data": _data_info(data),
    }


def run_encoder(
    name: str,
    model: nn.Module,
    tokenizer: Any,
    data: EvalData,
    settings: Settings,
    log: Log = print,
) -> dict[str, Any]:
    """Every method on a sentence encoder, scored against the dense model's embeddings of held-out sentences."""
    sents = heldout_sentences(data.heldout_texts, settings.encoder_sentences, settings.seed)
    dense_emb = embed(model, tokenizer, sents)

    def score(m: nn.Module) -> dict[str, float]:
        for t in tardis_modules(m):
            t.reset_counters()
        out = agreement(dense_emb, embed(m, tokenizer, sents), k=10)
        out.update(eval_fallback(m))
        return out

    enc_settings = dataclasses.replace(settings, seq_len=min(settings.seq_len, 128))
    rows = run_methods(name, model, tokenizer, data.calib_texts, score, enc_settings, log)
    info = _data_info(data)
    info["sentences"] = len(sents)
    return {
        "model": name,
        "kind": "encoder",
        "metrics": ENCODER_METRICS,
        "rows": rows,
        "settings": asdict(enc_settings),
        "data": info,
    }


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
    metrics = "  ".join(
        f"{k} {row[k]:.4g}" for k in ("ppl", "cloze_acc", "choice_acc", "cosine_mean", "top10_agreement") if k in row
    )
    extra = ""
    if row["method"] == "tardis":
        extra = (
            f"  read {_pct(row['ffn_reduction_read'])}  fallback {_pct(row['measured_fallback_rate'])}"
            f"  recall {_pct(row['predictor_recall_mean'])}"
        )
    return f"{row['method']:>9} {row['setting']:<28} red {_pct(row['ffn_reduction'])}  {metrics}{extra}"


def _metric(key: str, value: float) -> str:
    return f"{value:.2f}" if key == "ppl" else _pct(value)


def markdown_table(result: dict[str, Any]) -> str:
    """The results of one model as a markdown table, dense first."""
    dense = result["rows"][0]
    metrics = [k for k, _ in result["metrics"]]
    names = {"ppl": "ppl", "cloze_acc": "cloze acc", "choice_acc": "choice acc", "cosine_mean": "cosine to dense",
             "top10_agreement": "top-10 agreement"}  # fmt: skip
    cols = ["method", "setting", "FFN reduction (paper)", "FFN reduction (read)"]
    cols += [names.get(k, k) for k in metrics]
    if "ppl" in metrics:
        cols.append("ppl vs dense")
    cols += ["fallback (calib held-out / eval)", "predictor recall (mean / min)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in result["rows"]:
        tardis = r["method"] == "tardis"
        cells = [r["method"], r["setting"], _pct(r["ffn_reduction"]), _pct(r["ffn_reduction_read"]) if tardis else "-"]
        cells += [_metric(k, r[k]) for k in metrics]
        if "ppl" in metrics:
            cells.append(f"{100 * (r['ppl'] / dense['ppl'] - 1):+.1f}%")
        cells.append(f"{_pct(r['measured_fallback_rate'])} / {_pct(r.get('eval_fallback_rate'))}" if tardis else "-")
        cells.append(f"{_pct(r['predictor_recall_mean'])} / {_pct(r['predictor_recall_min'])}" if tardis else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


COLORS = {"tardis": "tab:green", "magnitude": "tab:gray", "wanda": "tab:blue", "ria": "tab:orange"}


def plot(result: dict[str, Any], path: Path) -> None:
    """Metric vs FFN reduction, one line per method, dense as a horizontal line; one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    dense = rows[0]
    metrics = [tuple(m) for m in result["metrics"]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], metrics, strict=True):
        ax.axhline(dense[key], color="black", linestyle="--", label="dense")
        for method in ("magnitude", "wanda", "ria", "tardis"):
            pts = sorted((r["ffn_reduction"], r[key]) for r in rows if r["method"] == method)
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            if method == "tardis":
                ax.plot([100 * x for x in xs], ys, "o", color=COLORS[method], label="tardis (paper reduction)")
                read = sorted(
                    (r["ffn_reduction_read"], r[key], r["coverage"], r.get("band_tolerance", 0.0))
                    for r in rows
                    if r["method"] == method
                )
                ax.plot([100 * p[0] for p in read], [p[1] for p in read], "s:", color=COLORS[method], mfc="none",
                        label="tardis (read reduction)")  # fmt: skip
                for x, y, cov, band in read:
                    tag = f"c={cov:g}" + (f",b={band:g}" if band else "")
                    ax.annotate(tag, (100 * x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            else:
                ax.plot([100 * x for x in xs], ys, "o-", color=COLORS[method], label=method)
        if key == "ppl":
            ax.set_yscale("log")
        ax.set_xlabel("FFN parameter reduction (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{result['model']}: held-out {result['data']['heldout']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
