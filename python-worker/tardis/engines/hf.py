"""HuggingFace transformers engine: install TARDIS modules into a model, load a variant, read counters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from tardis.arch.bert import BertAdapter
from tardis.arch.registry import adapter_for
from tardis.core.artifact import read_variant
from tardis.errors import ArtifactError
from tardis.kernels.policy import Policy, decode_token_limit
from tardis.runtime.ffn import DECODE_MAX_TOKENS, Mode, TardisFFN
from tardis.runtime.reference import FlagMode
from tardis.variant import Variant

ENCODER_ADAPTERS = (BertAdapter,)


def tardis_modules(model: nn.Module) -> list[TardisFFN]:
    """The TardisFFN modules of a model, in layer order."""
    return [m for m in model.modules() if isinstance(m, TardisFFN)]


def _mark_prefill(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    ids = kwargs.get("input_ids")
    if ids is None:
        ids = kwargs.get("inputs_embeds")
    if ids is None and args:
        ids = args[0]
    prefill = ids is not None and ids.dim() >= 2 and ids.shape[1] > 1
    modules = tardis_modules(model)
    for m in modules:
        m.is_prefill = prefill
    if ids is not None and ids.dim() >= 2:
        count_policy_dense(modules, int(ids.shape[0] * ids.shape[1]))


def count_policy_dense(modules: list[TardisFFN], tokens: int) -> None:
    """Count, in one launch for the whole model, this step's policy dense steps (`dense_steps`) of every layer
    whose decode policy will run a step of `tokens` tokens dense; those layers then skip their own count (one
    tiny kernel per layer and step otherwise: ≈ 0.5% of a batch-16 decode step, bench/NOTES.md v9)."""
    due = []
    for m in modules:
        m.dense_counted = m.path_at(tokens, cuda=m.w1.is_cuda) == "policy_dense"
        if m.dense_counted:
            due.append(m.dense_step_count)
    if due:
        with torch.no_grad():
            torch._foreach_add_(due, 1)  # one multi-tensor launch on CUDA


def install(model: Any, variant: Variant, *, prefill: str | None = None) -> list[TardisFFN]:
    """Replace every FFN of `model` with a TardisFFN built from `variant`; returns the modules.

    Decoders get a pre-forward hook that marks multi-token steps as prefill (run dense unless
    `prefill="tardis"`); encoders run TARDIS on every token.
    """
    adapter = adapter_for(model)
    if variant.family != model.config.model_type:
        raise ArtifactError(f"variant was made for model_type {variant.family!r}, not {model.config.model_type!r}")
    sites = adapter.sites(model)
    if len(sites) != len(variant.layers):
        raise ArtifactError(f"model has {len(sites)} FFNs but the variant has {len(variant.layers)} folded layers")
    policy = prefill or variant.config.prefill
    modules = []
    for site, layer in zip(sites, variant.layers, strict=True):
        if tuple(layer.wf.shape) != (site.w1.shape[1], site.w1.shape[1]) or layer.lo.shape[0] != site.w1.shape[0]:
            raise ArtifactError(f"layer {site.index}: folded shapes do not match the model's FFN (wrong base model?)")
        ffn = TardisFFN(w1=site.w1, b1=site.b1, w2t=site.w2t, b2=site.b2, folded=layer, prefill=policy)
        if ffn.w1.is_cuda:  # decode steps run the Triton op, which reads the packed predictor
            from tardis.kernels import attach

            attach(ffn, layer.predictor)
        modules.append(ffn)
    adapter.install_all(model, modules)
    if not isinstance(adapter, ENCODER_ADAPTERS):
        model.register_forward_pre_hook(_mark_prefill, with_kwargs=True)
    return modules


def load(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[nn.Module, Any]:
    """Load a variant directory as (model, tokenizer): a transformers model whose FFNs are TARDIS modules.

    Every file is checked against the manifest's hashes first; a bad file is an ArtifactError naming
    it (never a silent fallback to the dense model).
    """
    root = Path(path)
    variant = read_variant(root)
    arch = variant.base["architecture"]
    cls = getattr(transformers, arch, None)
    if cls is None:
        raise ArtifactError(f"{root}: base architecture {arch!r} is not in this transformers version")
    model = cls.from_pretrained(str(root), dtype=dtype or "auto").to(device).eval()
    install(model, variant)
    tokenizer = None
    if (root / "tokenizer_config.json").exists() or (root / "tokenizer.json").exists():
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(root))
    return model, tokenizer


def set_mode(model: nn.Module, mode: Mode) -> None:
    """Run every TardisFFN as "tardis" or as the original "dense" FFN."""
    for m in tardis_modules(model):
        m.mode = mode


def set_flag_mode(model: nn.Module, flag_mode: FlagMode) -> None:
    """Choose flags: "predict" (the predictor), "predict_i8" (the predictor with x rounded to int8 per group,
    as the GPU's I8 kernels run it; int2 predictors, reference path), "oracle" (exact z), "all" (every neuron:
    exact FFN)."""
    for m in tardis_modules(model):
        m.flag_mode = flag_mode


def set_prefill(model: nn.Module, prefill: str) -> None:
    """Run multi-token steps "dense" or "tardis"."""
    for m in tardis_modules(model):
        m.prefill = prefill


def set_decode_policy(model: nn.Module, max_tokens: int) -> None:
    """On CUDA, run decode steps with more than `max_tokens` tokens dense instead of the TARDIS op.

    0 runs every step dense; DECODE_MAX_TOKENS (64) or more runs the op on every step it supports.
    The CPU reference path ignores the policy.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise ValueError(f"set_decode_policy: max_tokens must be an integer ≥ 0, got {max_tokens!r}")
    for m in tardis_modules(model):
        m.max_tardis_tokens = max_tokens


def set_decode_policy_from_curves(model: nn.Module, variant: Variant, policy: Policy) -> list[int]:
    """Per layer, the most tokens a decode step may hold and still run the TARDIS op: from the layer's
    measured union curve (calibration's `union_curve`) and a policy fitted on kernel timings
    (`kernels.policy.policy_from_bench`). A variant without union curves keeps the current limits.
    Returns the limits set, layer by layer."""
    modules = tardis_modules(model)
    if len(modules) != len(variant.layer_stats):
        raise ValueError(f"the model has {len(modules)} TARDIS layers, the variant {len(variant.layer_stats)}")
    limits = []
    for m, stats in zip(modules, variant.layer_stats, strict=True):
        curve = stats.get("union_curve") or {}
        if curve:
            m.max_tardis_tokens = decode_token_limit(curve, policy, DECODE_MAX_TOKENS)
        limits.append(m.max_tardis_tokens)
    return limits


def counters(model: nn.Module) -> list[dict[str, int]]:
    """Per-layer live counters (flagged pairs, tokens, unions, steps, policy dense steps, neurons)."""
    return [m.counters() for m in tardis_modules(model)]


def reset_counters(model: nn.Module) -> None:
    """Zero every TardisFFN's live counters."""
    for m in tardis_modules(model):
        m.reset_counters()
