"""The work of Calibrate and Evaluate jobs: plain functions over a JobContext (no gRPC here)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tardis
from tardis.config import FoldConfig
from tardis.engines import hf
from tardis.eval.perplexity import perplexity
from tardis.worker.jobs import JobContext
from tardis.worker.sources import load_model

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
    dense = perplexity(base, tokenizer, texts, context=spec.context, stride=spec.stride)
    del base
    ctx.emit("progress", phase="base", step=2, steps=steps)
    if ctx.should_cancel():
        raise tardis.CalibrationCancelled("evaluation cancelled")
    hf.set_prefill(model, spec.prefill)
    folded = perplexity(model, tokenizer, texts, context=spec.context, stride=spec.stride)
    live = hf.counters(model)
    pairs = sum(c["tokens"] * c["neurons"] for c in live)
    ctx.emit("progress", phase="variant", step=3, steps=steps)
    manifest = json.loads((spec.variant_path / "manifest.json").read_text())
    report = manifest["report"]
    metrics = {k: report[k] for k in REPORT_METRICS if report.get(k) is not None}
    metrics.update(
        perplexity_base=dense["ppl"],
        perplexity_variant=folded["ppl"],
        perplexity_ratio=folded["ppl"] / dense["ppl"],
        eval_tokens=int(folded["tokens"]),
    )
    if pairs:
        metrics["live_fallback_rate"] = sum(c["flagged"] for c in live) / pairs
    return {"manifest": manifest, "path": str(spec.variant_path), "metrics": metrics}
