"""calibrate(): stream calibration text through a dense HF model and fold every FFN.

Passes over the calibration batches collect bounded-memory statistics for every FFN at once
(tardis.core.stats: the GPTQ Hessian, moments, histograms, the line fit and — with a band tolerance,
after the lines are known — the margin depths); then, layer by layer: ranges, lines, bands, margins,
hot neurons, folding, a checkpoint and a progress event. Held-out batches measure fallback rate and predictor recall.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from tardis.arch.base import FFNSite
from tardis.arch.registry import adapter_for
from tardis.config import FoldConfig
from tardis.core.activations import activation
from tardis.core.band import widen_to_band
from tardis.core.fit import fit_lines
from tardis.core.fold import fold
from tardis.core.layer import FoldedLayer
from tardis.core.predictor import QuantizedW1, flag_thresholds, quantize_gptq, quantize_rtn
from tardis.core.ranges import shortest_interval, snap_to_exact_pieces
from tardis.core.stats import FitSums, FlagCounts, HistogramStats, MarginStats, MomentStats
from tardis.data import token_batches
from tardis.errors import CalibrationCancelled, ConfigError
from tardis.variant import Variant, base_reference

EventSink = Callable[[dict[str, Any]], None]
S = TypeVar("S")
BatchFn = Callable[[int, torch.Tensor, torch.Tensor], None]


@contextmanager
def _input_taps(sites: list[FFNSite], fn: Callable[[int, torch.Tensor], None]) -> Iterator[None]:
    """Forward pre-hooks that hand (layer, x [N, d]) to `fn` for every FFN input."""

    def make(site: FFNSite) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            fn(site.index, x.reshape(-1, x.shape[-1]))

        return hook

    handles = [s.input_module.register_forward_pre_hook(make(s), with_kwargs=True) for s in sites]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _ffn_taps(sites: list[FFNSite], w1q: dict[int, torch.Tensor], fn: BatchFn) -> Any:
    """Input taps that hand (layer, z, ẑ) [N, f] float32 to `fn`."""
    by_index = {s.index: s for s in sites}

    def tap(i: int, x2: torch.Tensor) -> None:
        site = by_index[i]
        z = (x2 @ site.w1.T + site.b1).float()
        zhat = (x2 @ w1q[i].T + site.b1).float()
        fn(i, z, zhat)

    return _input_taps(sites, tap)


class _Run:
    """One calibration run: model, batches, event sink and cancellation check."""

    def __init__(self, model: nn.Module, on_event: EventSink | None, should_cancel: Callable[[], bool] | None):
        self.model = model
        self.device = next(model.parameters()).device
        self.on_event = on_event or (lambda _e: None)
        self.should_cancel = should_cancel or (lambda: False)

    def check_cancel(self) -> None:
        if self.should_cancel():
            raise CalibrationCancelled("calibration cancelled by request")

    @torch.no_grad()
    def stream_inputs(
        self, name: str, batches: list[torch.Tensor], sites: list[FFNSite], fn: Callable[[int, torch.Tensor], None]
    ) -> None:
        """Run every batch through the model, handing each FFN input x [N, d] to `fn`."""
        with _input_taps(sites, fn):
            for k, batch in enumerate(batches):
                self.check_cancel()
                self.model(input_ids=batch.to(self.device))
                self.on_event({"kind": "pass", "pass": name, "batch": k + 1, "batches": len(batches)})

    @torch.no_grad()
    def stream(
        self, name: str, batches: list[torch.Tensor], sites: list[FFNSite], w1q: dict[int, torch.Tensor], fn: BatchFn
    ) -> None:
        """Run every batch through the model with taps on `sites`."""
        with _ffn_taps(sites, w1q, fn):
            for k, batch in enumerate(batches):
                self.check_cancel()
                self.model(input_ids=batch.to(self.device))
                self.on_event({"kind": "pass", "pass": name, "batch": k + 1, "batches": len(batches)})


def _fingerprint(
    config: FoldConfig, batches: list[torch.Tensor], held: list[torch.Tensor], base: dict[str, Any]
) -> str:
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for b in (*batches, *held):
        h.update(b.numpy().tobytes())
    h.update(json.dumps(base, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class _Checkpoints:
    """Per-layer checkpoints in a job directory; a fingerprint guards against resuming a different job."""

    def __init__(self, root: Path | None, fingerprint: str):
        self.root = root
        if root is None:
            return
        root.mkdir(parents=True, exist_ok=True)
        fp = root / "fingerprint.txt"
        if fp.exists() and fp.read_text().strip() != fingerprint:
            raise ConfigError(
                f"checkpoint directory {root} belongs to a different calibration (model, data or config differ); "
                "use a fresh directory or delete it"
            )
        _write_atomic(fp, lambda p: p.write_text(fingerprint))

    def load(
        self, index: int, *, act: str, bits: int, group_size: int, d: int
    ) -> tuple[FoldedLayer, dict[str, Any]] | None:
        if self.root is None:
            return None
        t, s = self.root / f"layer_{index:04d}.safetensors", self.root / f"layer_{index:04d}.json"
        if not (t.exists() and s.exists()):
            return None
        layer = FoldedLayer.from_tensors(
            load_file(str(t)), "", act=act, bits=bits, group_size=group_size, in_features=d
        )
        return layer, json.loads(s.read_text())

    def load_pass(self, name: str, cls: type[S], indices: list[int]) -> dict[int, S] | None:
        """Statistics of a finished pass for `indices`, if this run already checkpointed them."""
        if self.root is None or not (self.root / f"pass_{name}.safetensors").exists():
            return None
        path = self.root / f"pass_{name}.safetensors"
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            keys = set(fh.keys())
            out: dict[int, S] = {}
            for i in indices:
                kwargs: dict[str, Any] = {}
                for fld in dataclasses.fields(cls):  # type: ignore[arg-type]
                    key = f"{i}.{fld.name}"
                    if key in keys:
                        kwargs[fld.name] = fh.get_tensor(key)
                    elif key in meta:
                        kwargs[fld.name] = int(meta[key])
                    else:
                        return None
                out[i] = cls(**kwargs)
        return out

    def save_pass(self, name: str, stats: dict[int, Any]) -> None:
        """Checkpoint the statistics of a finished pass (bounded: O(f·bins) per layer)."""
        if self.root is None:
            return
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, str] = {}
        for i, obj in stats.items():
            for fld in dataclasses.fields(obj):
                value = getattr(obj, fld.name)
                if isinstance(value, torch.Tensor):
                    tensors[f"{i}.{fld.name}"] = value.detach().cpu().contiguous()
                else:
                    meta[f"{i}.{fld.name}"] = str(int(value))
        _write_atomic(self.root / f"pass_{name}.safetensors", lambda p: save_file(tensors, str(p), metadata=meta))

    def save(self, index: int, layer: FoldedLayer, stats: dict[str, Any]) -> None:
        if self.root is None:
            return
        _write_atomic(self.root / f"layer_{index:04d}.safetensors", lambda p: save_file(layer.to_tensors(""), str(p)))
        _write_atomic(
            self.root / f"layer_{index:04d}.json",
            lambda p: p.write_text(json.dumps(stats, sort_keys=True)),
        )


def _to_device(obj: S, device: torch.device) -> S:
    """The same statistics dataclass with its tensors on `device`."""
    changes = {
        f.name: getattr(obj, f.name).to(device)
        for f in dataclasses.fields(obj)  # type: ignore[arg-type]
        if isinstance(getattr(obj, f.name), torch.Tensor)
    }
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


def _rate(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


def _widening(
    fit_range: tuple[torch.Tensor, torch.Tensor], band: tuple[torch.Tensor, torch.Tensor], keep: torch.Tensor
) -> float:
    w = (fit_range[1] - fit_range[0]).double().cpu()
    wb = (band[1] - band[0]).double().cpu()
    ok = keep & torch.isfinite(w) & (w > 0)
    return float((wb[ok] / w[ok]).mean()) if bool(ok.any()) else 1.0


def _finish_layer(
    site: FFNSite,
    config: FoldConfig,
    predictor: QuantizedW1,
    moments: MomentStats,
    fit_sums: FitSums,
    calib: FlagCounts,
    held: FlagCounts,
    fit_range: tuple[torch.Tensor, torch.Tensor],
    band: tuple[torch.Tensor, torch.Tensor],
    margin: torch.Tensor,
    snapped: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[FoldedLayer, dict[str, Any]]:
    """Lines, hot neurons and the fold for one layer, plus its report row.

    `fit_range` is where the lines were fitted, `band` (⊇ fit_range) where they are trusted: the layer
    stores the band as its [lo, hi], so flags, recall and the oracle test are against the band."""
    f = site.w1.shape[0]
    lo, hi = band
    slope, intercept, sse = fit_lines(fit_sums)
    if snapped is not None:  # exact linear pieces (ReLU): no misfit
        slope, intercept = snapped
        sse = torch.zeros_like(sse)
    n_hot = round((1.0 - config.fold_fraction) * f)
    hot = torch.zeros(f, dtype=torch.bool)
    if n_hot > 0:
        # Leave unfolded the neurons whose in-range misfit costs the most output energy per token.
        w2_norm2 = site.w2.detach().double().cpu().pow(2).sum(0)
        score = sse.cpu() / max(moments.count, 1) * w2_norm2
        hot[score.topk(n_hot).indices] = True
    slope = torch.where(hot, 0.0, slope.cpu())
    intercept = torch.where(hot, 0.0, intercept.cpu())
    wf, bf = fold(site.w1, site.b1, site.w2, site.b2, slope, intercept)
    dtype = site.w1.dtype
    layer = FoldedLayer(
        wf=wf.to(dtype),
        bf=bf.to(dtype),
        predictor=predictor,
        lo=lo.float().cpu(),
        hi=hi.float().cpu(),
        margin=margin.float().cpu(),
        slope=slope.float(),
        intercept=intercept.float(),
        hot=hot,
        act=site.act,
    )
    folded = ~hot
    nf = int(folded.sum())
    fc = lambda t: float(t.cpu()[folded].sum())  # noqa: E731
    n_in = fit_sums.n.cpu()
    stats = {
        "layer": site.index,
        "neurons": f,
        "hot_neurons": n_hot,
        "coverage_target": config.coverage,
        "coverage_calib": float((n_in[folded] / max(moments.count, 1)).mean()) if nf else None,
        "fit_rmse": math.sqrt(fc(sse) / fc(n_in)) if nf and fc(n_in) > 0 else 0.0,
        "band_tolerance": config.band_tolerance,
        # mean over folded neurons with a finite range of (band width) / (fitted range width)
        "band_widening": _widening(fit_range, band, folded),
        "margin_mean": float(margin.cpu()[folded].mean()) if nf else 0.0,
        "expected_fallback_rate": _rate(fc(calib.flagged) + n_hot * calib.tokens, calib.tokens * f),
        "measured_fallback_rate": _rate(fc(held.flagged) + n_hot * held.tokens, held.tokens * f),
        "flag_rate": _rate(fc(held.flagged), held.tokens * nf),
        "true_outlier_rate": _rate(fc(held.outside), held.tokens * nf),
        "predictor_recall": _rate(fc(held.outside) - fc(held.missed), fc(held.outside)),
        "predictor_recall_calib": _rate(fc(calib.outside) - fc(calib.missed), fc(calib.outside)),
        "calib_tokens": calib.tokens,
        "heldout_tokens": held.tokens,
        # {b: fraction of neurons a decode batch of b tokens recomputes} on the held-out tokens (the
        # per-batch TARDIS/dense policy reads it: kernels.policy.decode_token_limit)
        "union_curve": held.union_curve(folded, n_hot),
        "exact_pieces": snapped is not None,
    }
    return layer, stats


def calibrate(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    config: FoldConfig | None = None,
    *,
    on_event: EventSink | None = None,
    should_cancel: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> Variant:
    """Fold every FFN of a non-gated HF model on calibration `texts`; returns the Variant.

    `on_event` receives progress dicts (`kind` = "pass" per batch, "layer" per folded layer);
    `should_cancel` is polled between batches and layers (CalibrationCancelled is raised);
    with `checkpoint_dir`, each finished layer is checkpointed and a rerun resumes after it,
    producing tensors identical to an uninterrupted run.
    """
    config = config or FoldConfig()
    adapter = adapter_for(model)
    model.eval()
    run = _Run(model, on_event, should_cancel)
    sites = adapter.sites(model)
    calib_batches, held_batches = token_batches(tokenizer, texts, config)
    base = base_reference(model)
    ckpt = _Checkpoints(
        Path(checkpoint_dir) if checkpoint_dir else None,
        _fingerprint(config, calib_batches, held_batches, {k: base[k] for k in ("architecture", "files")}),
    )
    layers: dict[int, FoldedLayer] = {}
    layer_stats: dict[int, dict[str, Any]] = {}
    for s in sites:
        found = ckpt.load(
            s.index,
            act=s.act,
            bits=config.predictor_bits,
            group_size=min(config.group_size, s.w1.shape[1]),
            d=s.w1.shape[1],
        )
        if found:
            layers[s.index], layer_stats[s.index] = found
            run.on_event({"kind": "layer", "layer": s.index, "layers": len(sites), "resumed": True, "stats": found[1]})
    todo = [s for s in sites if s.index not in layers]
    if todo:
        _fold_layers(run, config, todo, len(sites), calib_batches, held_batches, ckpt, layers, layer_stats)
    return Variant(
        config=config,
        family=str(model.config.model_type),
        base=base,
        layers=[layers[s.index] for s in sites],
        layer_stats=[layer_stats[s.index] for s in sites],
        tokenizer=tokenizer,
    )


def _build_predictors(
    run: _Run, config: FoldConfig, todo: list[FFNSite], calib_batches: list[torch.Tensor], ckpt: _Checkpoints
) -> dict[int, QuantizedW1]:
    """Quantize each W1: round to nearest, or GPTQ with H = Σ x·xᵀ from an extra pass over the calibration batches."""
    if config.predictor_method == "rtn":
        hessians: dict[int, _Hessian] | None = None
    else:
        hessians = _hessians(run, todo, calib_batches, ckpt)
    out: dict[int, QuantizedW1] = {}
    bits, gs, clip = config.predictor_bits, config.group_size, config.clip_search
    for k, s in enumerate(todo):  # one progress event a layer: on a 7B model this is a pass of its own
        run.check_cancel()
        if hessians is None:
            out[s.index] = quantize_rtn(s.w1, bits, gs, clip)
        else:
            out[s.index] = quantize_gptq(s.w1, hessians[s.index].h, bits, gs, clip)
        run.on_event({"kind": "pass", "pass": "predictors", "batch": k + 1, "batches": len(todo)})
    return out


def _hessians(
    run: _Run, todo: list[FFNSite], calib_batches: list[torch.Tensor], ckpt: _Checkpoints
) -> dict[int, _Hessian]:
    """H = Σ x·xᵀ of each FFN's inputs over the calibration batches (a checkpointed pass)."""
    idx = [s.index for s in todo]
    loaded = ckpt.load_pass("hessian", _Hessian, idx)
    if loaded is None:
        hess = {
            s.index: _Hessian(torch.zeros(s.w1.shape[1], s.w1.shape[1], dtype=torch.float64, device=run.device))
            for s in todo
        }

        def add(i: int, x2: torch.Tensor) -> None:
            xd = x2.double()
            hess[i].h += xd.T @ xd

        run.stream_inputs("hessian", calib_batches, todo, add)
        ckpt.save_pass("hessian", hess)
        loaded = hess
    return loaded


@dataclasses.dataclass
class _Hessian:
    """Σ x·xᵀ of one FFN's inputs over the calibration tokens (d×d: bounded)."""

    h: torch.Tensor


def _fold_layers(
    run: _Run,
    config: FoldConfig,
    todo: list[FFNSite],
    n_layers: int,
    calib_batches: list[torch.Tensor],
    held_batches: list[torch.Tensor],
    ckpt: _Checkpoints,
    layers: dict[int, FoldedLayer],
    layer_stats: dict[int, dict[str, Any]],
) -> None:
    dev = run.device
    predictors = _build_predictors(run, config, todo, calib_batches, ckpt)
    w1q = {i: p.to(dev).dequantize(torch.float32).to(dtype=todo[0].w1.dtype) for i, p in predictors.items()}
    f_of = {s.index: s.w1.shape[0] for s in todo}

    idx = list(f_of)
    moments = ckpt.load_pass("moments", MomentStats, idx)
    if moments is None:
        moments = {i: MomentStats.empty(f, dev) for i, f in f_of.items()}
        run.stream("moments", calib_batches, todo, w1q, lambda i, z, zh: moments[i].update(z, zh))  # type: ignore[index]
        ckpt.save_pass("moments", moments)
    moments = {i: _to_device(m, dev) for i, m in moments.items()}
    hists = ckpt.load_pass("histograms", HistogramStats, idx)
    if hists is None:
        hists = {i: HistogramStats.from_moments(m, config.histogram_bins) for i, m in moments.items()}
        run.stream("histograms", calib_batches, todo, w1q, lambda i, z, zh: hists[i].update(z, zh))  # type: ignore[index]
        ckpt.save_pass("histograms", hists)
    hists = {i: _to_device(h, dev) for i, h in hists.items()}

    ranges: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    snapped: dict[int, tuple[torch.Tensor, torch.Tensor] | None] = {}
    for s in todo:
        h = hists[s.index]
        lo, hi = shortest_interval(h.counts, h.edges, config.coverage)
        nonpos = moments[s.index].nonpos.double() / moments[s.index].count
        lo, hi, a, c = snap_to_exact_pieces(s.act, nonpos, lo, hi)
        snapped[s.index] = None if a is None or c is None else (a.cpu(), c.cpu())
        ranges[s.index] = (lo, hi)

    acts = {s.index: activation(s.act) for s in todo}
    # With a band tolerance the margins are measured against the band, which needs the fitted lines:
    # a separate "depth" pass after the "fit" pass. Without one, both run in the same pass.
    separate_depth = config.band_tolerance > 0
    loaded_fit = ckpt.load_pass("fit", FitSums, idx)
    loaded_depth = ckpt.load_pass("depth", MarginStats, idx)
    if loaded_fit is None or (loaded_depth is None and not separate_depth):
        fit_sums = {i: FitSums.empty(f, dev) for i, f in f_of.items()}
        joint = (
            None
            if separate_depth
            else {i: MarginStats.from_moments(m, config.histogram_bins) for i, m in moments.items()}
        )

        def fit_pass(i: int, z: torch.Tensor, zh: torch.Tensor) -> None:
            lo, hi = ranges[i]
            fit_sums[i].update(z, acts[i](z), lo, hi)
            if joint is not None:
                joint[i].update(z, zh, lo, hi)

        run.stream("fit", calib_batches, todo, w1q, fit_pass)
        if joint is not None:
            ckpt.save_pass("depth", joint)
            loaded_depth = joint
        ckpt.save_pass("fit", fit_sums)
    else:
        fit_sums = {i: _to_device(v, dev) for i, v in loaded_fit.items()}

    bands = ranges
    if separate_depth:
        bands = {}
        for s in todo:
            i = s.index
            slope, intercept = snapped[i] or fit_lines(fit_sums[i])[:2]
            lo, hi = widen_to_band(s.act, *ranges[i], slope.to(dev), intercept.to(dev), config.band_tolerance)
            bands[i] = (lo.to(dev), hi.to(dev))
    if loaded_depth is None:
        fresh = {i: MarginStats.from_moments(m, config.histogram_bins) for i, m in moments.items()}
        run.stream("depth", calib_batches, todo, w1q, lambda i, z, zh: fresh[i].update(z, zh, *bands[i]))
        ckpt.save_pass("depth", fresh)
        loaded_depth = fresh
    depth = {i: _to_device(v, dev) for i, v in loaded_depth.items()}

    margins: dict[int, torch.Tensor] = {}
    thresholds: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for s in todo:
        i = s.index
        if config.margin_policy == "recall":
            margins[i] = depth[i].margin_for_recall(config.target_recall)
        else:
            margins[i] = depth[i].snap_up(hists[i].residual_quantile(config.margin_quantile))
        thresholds[i] = flag_thresholds(*bands[i], margins[i], torch.zeros(f_of[i], dtype=torch.bool, device=dev))
    loaded_held = ckpt.load_pass("heldout", FlagCounts, idx)
    if loaded_held is None:
        held_flags = {i: FlagCounts.empty(f, dev) for i, f in f_of.items()}

        def held_pass(i: int, z: torch.Tensor, zh: torch.Tensor) -> None:
            held_flags[i].update(z, zh, *bands[i], *thresholds[i])

        run.stream("heldout", held_batches, todo, w1q, held_pass)
        ckpt.save_pass("heldout", held_flags)
    else:
        held_flags = {i: _to_device(v, dev) for i, v in loaded_held.items()}

    for s in todo:
        run.check_cancel()
        i = s.index
        layer, stats = _finish_layer(
            s,
            config,
            predictors[i],
            moments[i],
            fit_sums[i],
            depth[i].counts_at(margins[i]),
            held_flags[i],
            ranges[i],
            bands[i],
            margins[i],
            snapped[i],
        )
        ckpt.save(i, layer, stats)
        layers[i], layer_stats[i] = layer, stats
        run.on_event({"kind": "layer", "layer": i, "layers": n_layers, "resumed": False, "stats": stats})
