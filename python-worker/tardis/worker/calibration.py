"""The work of Calibrate and Evaluate jobs: plain functions over a JobContext (no gRPC here)."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

import tardis
from tardis.config import FoldConfig
from tardis.data import token_batches
from tardis.engines import hf
from tardis.eval.baselines import METHODS, Method, collect_input_norms, prune_ffns, sparsity_for_reduction
from tardis.eval.perplexity import perplexity
from tardis.worker.errors import invalid
from tardis.worker.jobs import JobContext
from tardis.worker.sources import load_model

MAX_SAMPLE_TOKENS = 256
REPORT_METRICS = (
    "ffn_reduction_paper",
    "ffn_reduction_read",
    "ffn_reduction_resident",
    "expected_fallback_rate",
    "measured_fallback_rate",
    "true_outlier_rate",
    "predictor_recall_mean",
    "predictor_recall_min",
    "fit_rmse_mean",
    "hot_neurons",
)


@dataclass(frozen=True)
class CalibrationSpec:
    """A validated Calibrate request."""

    model_path: str
    dtype: str | None
    device: str
    texts: list[str]
    config: FoldConfig
    output_path: Path
    base_weights: str
    overwrite: bool


def run_calibration(spec: CalibrationSpec, ctx: JobContext) -> dict[str, Any]:
    """Load the base model, calibrate with checkpoints in the job directory, write and verify the artifact."""
    ctx.emit("progress", phase="load", step=0, steps=1)
    model, tokenizer = load_model(spec.model_path, spec.dtype, spec.device)
    ctx.emit("progress", phase="load", step=1, steps=1)

    def on_event(e: dict[str, Any]) -> None:
        if e["kind"] == "pass":
            ctx.emit("progress", phase=e["pass"], step=e["batch"], steps=e["batches"], resumed=bool(e.get("resumed")))
        elif e["kind"] == "layer":
            ctx.emit("layer", layer=e["layer"], layers=e["layers"], resumed=bool(e["resumed"]), stats=e["stats"])

    variant = tardis.calibrate(
        model,
        tokenizer,
        spec.texts,
        spec.config,
        on_event=on_event,
        should_cancel=ctx.should_cancel,
        checkpoint_dir=ctx.job_dir / "checkpoints",
    )
    path = variant.save(spec.output_path, base_weights=spec.base_weights, model=model, overwrite=spec.overwrite)
    manifest = tardis.verify_artifact(path)
    report = manifest["report"]
    return {
        "manifest": manifest,
        "path": str(path),
        "metrics": {k: report[k] for k in REPORT_METRICS if report.get(k) is not None},
    }


@dataclass(frozen=True)
class EvaluationSpec:
    """A validated Evaluate request."""

    variant_path: Path
    base_path: str
    base_dtype: str | None
    device: str
    texts: list[str]
    context: int
    stride: int
    max_tokens: int | None
    prefill: str
    baselines: tuple[str, ...] = ()
    calibration_texts: list[str] = field(default_factory=list)
    calibration_tokens: int = 4096
    sample_prompt: str | None = None
    sample_tokens: int = 24


def check_comparison(spec: EvaluationSpec) -> None:
    """Reject unknown baselines and out-of-range sample or norm settings before the job starts."""
    unknown = [b for b in spec.baselines if b not in METHODS]
    if unknown:
        raise invalid(f"baselines {unknown} are unknown: expected any of {list(METHODS)}")
    if len(set(spec.baselines)) != len(spec.baselines):
        raise invalid(f"baselines {list(spec.baselines)} name a method twice")
    if not 1 <= spec.sample_tokens <= MAX_SAMPLE_TOKENS:
        raise invalid(f"sample_tokens={spec.sample_tokens} is invalid: expected 1..{MAX_SAMPLE_TOKENS}")
    if spec.baselines and spec.calibration_tokens < 16:
        raise invalid(f"calibration_tokens={spec.calibration_tokens} is invalid: expected ≥ 16")


@torch.no_grad()
def greedy_sample(model: Any, tokenizer: Any, prompt: str, tokens: int) -> str:
    """The greedy continuation of `prompt` (full recompute per token: fine for the small eval models)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id or 0]
    device = next(model.parameters()).device
    x = torch.tensor([ids], device=device)
    for _ in range(tokens):
        nxt = model(input_ids=x).logits[0, -1].argmax()
        if tokenizer.eos_token_id is not None and int(nxt) == tokenizer.eos_token_id:
            break
        x = torch.cat([x, nxt.view(1, 1)], dim=1)
    return str(tokenizer.decode(x[0, len(ids) :].tolist()))


def _norm_batches(tokenizer: Any, spec: EvaluationSpec) -> list[torch.Tensor]:
    seq = min(spec.context, 128)
    config = FoldConfig(calib_tokens=max(spec.calibration_tokens, seq), heldout_tokens=0, seq_len=seq)
    return token_batches(tokenizer, spec.calibration_texts, config)[0]


def _cap_tokens(tokenizer: Any, texts: list[str], max_tokens: int | None) -> list[str]:
    if max_tokens is None:
        return texts
    out, total = [], 0
    for t in texts:
        if total >= max_tokens:
            break
        out.append(t)
        total += len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1
    return out


def run_evaluation(spec: EvaluationSpec, ctx: JobContext) -> dict[str, Any]:
    """Perplexity of the base model and of the variant on the same text, and the live fallback rate."""
    steps = 3
    ctx.emit("progress", phase="load", step=0, steps=steps)
    model, tokenizer = hf.load(spec.variant_path, device=spec.device)
    base, base_tok = load_model(spec.base_path, spec.base_dtype, spec.device)
    tokenizer = tokenizer or base_tok
    texts = _cap_tokens(tokenizer, spec.texts, spec.max_tokens)
    ctx.emit("progress", phase="load", step=1, steps=steps)
    if ctx.should_cancel():
        raise tardis.CalibrationCancelled("evaluation cancelled")
    manifest = json.loads((spec.variant_path / "manifest.json").read_text())
    report = manifest["report"]
    steps += len(spec.baselines)

    def row(name: str, m: Any, reduction: float, t0: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Perplexity (live counters see only it), then the sample; `seconds` counts from t0."""
        ppl = perplexity(m, tokenizer, texts, context=spec.context, stride=spec.stride)
        counted = hf.counters(m)
        sample = greedy_sample(m, tokenizer, spec.sample_prompt, spec.sample_tokens) if spec.sample_prompt else ""
        out = {"name": name, "ffn_reduction": reduction, "perplexity": ppl["ppl"], "sample": sample}
        return {**out, "seconds": time.perf_counter() - t0}, {**ppl, "counters": counted}

    dense_row, dense = row("dense", base, 0.0, time.perf_counter())
    norms = collect_input_norms(base, _norm_batches(tokenizer, spec)) if spec.baselines else None
    ctx.emit("progress", phase="base", step=2, steps=steps)
    if ctx.should_cancel():
        raise tardis.CalibrationCancelled("evaluation cancelled")
    hf.set_prefill(model, spec.prefill)
    tardis_row, folded = row("tardis", model, float(report.get("ffn_reduction_paper") or 0.0), time.perf_counter())
    live = folded.pop("counters")
    pairs = sum(c["tokens"] * c["neurons"] for c in live)
    ctx.emit("progress", phase="variant", step=3, steps=steps)
    comparison = [dense_row, tardis_row]
    sparsity = sparsity_for_reduction(float(report.get("ffn_reduction_paper") or 0.0))
    for i, method in enumerate(spec.baselines):
        if ctx.should_cancel():
            raise tardis.CalibrationCancelled("evaluation cancelled")
        t0 = time.perf_counter()
        pruned = copy.deepcopy(base)
        info = prune_ffns(pruned, cast(Method, method), sparsity, norms)
        baseline_row, _ = row(method, pruned, float(info["sparsity"]), t0)
        comparison.append(baseline_row)
        del pruned
        ctx.emit("progress", phase=method, step=4 + i, steps=steps)
    del base
    for r in comparison:
        r["perplexity_ratio"] = r["perplexity"] / dense["ppl"]
    metrics = {k: report[k] for k in REPORT_METRICS if report.get(k) is not None}
    metrics.update(
        perplexity_base=dense["ppl"],
        perplexity_variant=folded["ppl"],
        perplexity_ratio=folded["ppl"] / dense["ppl"],
        eval_tokens=int(folded["tokens"]),
    )
    if pairs:
        metrics["live_fallback_rate"] = sum(c["flagged"] for c in live) / pairs
    return {"manifest": manifest, "path": str(spec.variant_path), "metrics": metrics, "comparison": comparison}
