"""calibrate(): defaults, recall on held-out text, reporting, events, cancellation and resume."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import build_model

import tardis
from tardis.core.predictor import quantize_rtn
from tardis.core.reduction import LayerBytes, ffn_reductions


def test_default_config_gives_at_least_80_percent_paper_reduction() -> None:
    cfg = tardis.FoldConfig()
    d, f = 4544, 18176
    q = quantize_rtn(torch.zeros(8, d), cfg.predictor_bits, cfg.group_size)
    pred_bytes = q.nbytes() * f // 8
    r = ffn_reductions([LayerBytes(d=d, f=f, predictor_bytes=pred_bytes, hot=0, fallback_rate=0.05)])
    assert 0.80 <= r["ffn_reduction_paper"] < 0.82
    assert r["ffn_reduction_resident"] < 0


def test_config_errors_name_the_field() -> None:
    with pytest.raises(tardis.ConfigError, match=r"FoldConfig\.predictor_bits=5 is invalid: expected 2, 3 or 4"):
        tardis.FoldConfig(predictor_bits=5)
    with pytest.raises(tardis.ConfigError, match=r"unknown FoldConfig field\(s\) \['covrage'\]"):
        tardis.FoldConfig.from_dict({"covrage": 0.9})


def test_predictor_recall_on_held_out_text_at_the_default_margin(tokenizer: Any, texts: list[str]) -> None:
    model = build_model("gpt2", len(tokenizer), seed=3)
    cfg = tardis.FoldConfig(calib_tokens=8192, heldout_tokens=4096, seq_len=64, group_size=64)
    report = tardis.calibrate(model, tokenizer, texts, cfg).report()
    for row in report["layers"]:
        print(
            f"layer {row['layer']}: recall {row['predictor_recall']:.4f} flag rate {row['flag_rate']:.3f} "
            f"true outliers {row['true_outlier_rate']:.3f} fallback {row['measured_fallback_rate']:.3f}"
        )
        assert row["predictor_recall"] >= 0.99
        assert row["coverage_calib"] >= cfg.coverage
        assert row["true_outlier_rate"] <= row["flag_rate"]
        # the union curve: one token recomputes what it flags; a batch's union grows with it, sub-additively
        curve = {int(b): u for b, u in row["union_curve"].items()}
        assert curve[1] == pytest.approx(row["flag_rate"], rel=1e-12)
        sizes = sorted(curve)
        assert sizes[:5] == [1, 2, 4, 8, 16]
        for a, b in itertools.pairwise(sizes):
            assert curve[a] <= curve[b] <= min(1.0, curve[a] * b / a + 1e-12)


def test_fold_fraction_leaves_the_worst_fitting_neurons_hot(tokenizer: Any, texts: list[str]) -> None:
    model = build_model("gpt_neox", len(tokenizer))
    cfg = tardis.FoldConfig(calib_tokens=2048, heldout_tokens=512, seq_len=64, group_size=32, fold_fraction=0.75)
    variant = tardis.calibrate(model, tokenizer, texts, cfg)
    for layer, row in zip(variant.layers, variant.layer_stats, strict=True):
        assert int(layer.hot.sum()) == row["hot_neurons"] == 64
        assert bool((layer.slope[layer.hot] == 0).all())
        assert row["measured_fallback_rate"] >= 0.25
        assert row["union_curve"]["1"] == pytest.approx(row["measured_fallback_rate"], rel=1e-12)  # hot ones count
    report = variant.report()
    assert report["hot_neurons"] == 128


def test_progress_events_cancellation_and_resume_give_identical_tensors(
    tokenizer: Any, texts: list[str], tmp_path: Path
) -> None:
    cfg = tardis.FoldConfig(calib_tokens=2048, heldout_tokens=512, seq_len=64, group_size=32, histogram_bins=128)
    model = build_model("falcon", len(tokenizer))
    reference = tardis.calibrate(model, tokenizer, texts, cfg)

    events: list[dict[str, Any]] = []
    layers_done = lambda: sum(e["kind"] == "layer" for e in events)  # noqa: E731
    with pytest.raises(tardis.CalibrationCancelled):
        tardis.calibrate(
            model,
            tokenizer,
            texts,
            cfg,
            on_event=events.append,
            should_cancel=lambda: layers_done() >= 1,
            checkpoint_dir=tmp_path,
        )
    assert layers_done() == 1 and {e["pass"] for e in events if e["kind"] == "pass"} == {
        "hessian",
        "predictors",  # quantizing each W1 (one event a layer)
        "moments",
        "histograms",
        "fit",
        "depth",  # the default band tolerance measures the margins against the band: a pass of its own
        "heldout",
    }

    resumed_events: list[dict[str, Any]] = []
    resumed = tardis.calibrate(model, tokenizer, texts, cfg, on_event=resumed_events.append, checkpoint_dir=tmp_path)
    assert [e["resumed"] for e in resumed_events if e["kind"] == "layer"] == [True, False]
    for a, b in zip(reference.layers, resumed.layers, strict=True):
        for (ka, ta), (kb, tb) in zip(a.to_tensors("").items(), b.to_tensors("").items(), strict=True):
            assert ka == kb and torch.equal(ta, tb), ka

    other = tardis.FoldConfig(calib_tokens=2048, heldout_tokens=512, seq_len=64, group_size=32, coverage=0.8)
    with pytest.raises(tardis.ConfigError, match="belongs to a different calibration"):
        tardis.calibrate(model, tokenizer, texts, other, checkpoint_dir=tmp_path)


def test_too_little_text_says_how_much_is_needed(tokenizer: Any) -> None:
    model = build_model("gpt2", len(tokenizer))
    with pytest.raises(tardis.ConfigError, match=r"give \d+ tokens but calib_tokens \+ heldout_tokens need 4096"):
        tardis.calibrate(
            model, tokenizer, ["a short text"], tardis.FoldConfig(calib_tokens=2048, heldout_tokens=2048, seq_len=64)
        )


def test_resume_after_a_cancel_mid_pass_skips_the_finished_passes(
    tokenizer: Any, texts: list[str], tmp_path: Path
) -> None:
    cfg = tardis.FoldConfig(calib_tokens=2048, heldout_tokens=512, seq_len=64, group_size=32, histogram_bins=128)
    model = build_model("bloom", len(tokenizer))
    reference = tardis.calibrate(model, tokenizer, texts, cfg)
    events: list[dict[str, Any]] = []
    in_fit = lambda: any(e.get("pass") == "fit" for e in events)  # noqa: E731
    with pytest.raises(tardis.CalibrationCancelled):
        tardis.calibrate(
            model, tokenizer, texts, cfg, on_event=events.append, should_cancel=in_fit, checkpoint_dir=tmp_path
        )
    assert sorted(p.name for p in tmp_path.glob("pass_*")) == [
        "pass_hessian.safetensors",
        "pass_histograms.safetensors",
        "pass_moments.safetensors",
    ]
    resumed_events: list[dict[str, Any]] = []
    resumed = tardis.calibrate(model, tokenizer, texts, cfg, on_event=resumed_events.append, checkpoint_dir=tmp_path)
    # the predictors are quantized again from W1 and the checkpointed Hessian (deterministic, not checkpointed)
    assert {e["pass"] for e in resumed_events if e["kind"] == "pass"} == {"predictors", "fit", "depth", "heldout"}
    for a, b in zip(reference.layers, resumed.layers, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a.to_tensors("").values(), b.to_tensors("").values(), strict=True))


def test_band_tolerance_widens_the_ranges_and_cuts_the_fallback_rate(tokenizer: Any, texts: list[str]) -> None:
    model = build_model("gpt2", len(tokenizer), seed=3)
    base = dict(calib_tokens=4096, heldout_tokens=2048, seq_len=64, group_size=64)
    plain_events: list[dict[str, Any]] = []
    plain = tardis.calibrate(
        model, tokenizer, texts, tardis.FoldConfig(**base, band_tolerance=0.0), on_event=plain_events.append
    )
    assert "depth" not in {e.get("pass") for e in plain_events}  # without a band: margins in the fit pass
    events: list[dict[str, Any]] = []
    banded = tardis.calibrate(
        model, tokenizer, texts, tardis.FoldConfig(**base, band_tolerance=2.0), on_event=events.append
    )
    assert {e["pass"] for e in events if e["kind"] == "pass"} == {
        "hessian",
        "predictors",  # quantizing each W1 (one event a layer)
        "moments",
        "histograms",
        "fit",
        "depth",
        "heldout",
    }
    for a, b, ra, rb in zip(plain.layers, banded.layers, plain.layer_stats, banded.layer_stats, strict=True):
        # same data, same ranges and lines; the band contains the range, strictly wider for most neurons
        assert torch.equal(a.slope, b.slope) and torch.equal(a.intercept, b.intercept)
        assert bool((b.lo <= a.lo).all()) and bool((b.hi >= a.hi).all())
        assert float(((b.hi - b.lo) > 1.2 * (a.hi - a.lo)).float().mean()) > 0.5
        assert ra["band_widening"] == 1.0 and rb["band_widening"] > 1.2 and rb["band_tolerance"] == 2.0
        # fewer neurons outside the band than outside the range, and fewer flags; recall is against the band
        assert rb["true_outlier_rate"] < 0.8 * ra["true_outlier_rate"]
        assert rb["measured_fallback_rate"] < 0.8 * ra["measured_fallback_rate"]
        assert rb["predictor_recall"] >= 0.95
    # inside the band each flagged-off neuron's misfit is within 2x the largest misfit inside its range
    from tardis.core.activations import activation
    from tardis.core.band import inside_misfit

    layer = banded.layers[0]
    ref = plain.layers[0]
    tau = 2.0 * inside_misfit(layer.act, ref.lo, ref.hi, layer.slope, layer.intercept)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    z = layer.lo.double().unsqueeze(1) + (layer.hi - layer.lo).double().unsqueeze(1) * t
    misfit = (
        activation(layer.act)(z) - layer.slope.double().unsqueeze(1) * z - layer.intercept.double().unsqueeze(1)
    ).abs()
    assert bool((misfit <= tau.unsqueeze(1) * (1 + 1e-4) + 1e-6).all())
