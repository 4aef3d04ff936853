"""vLLM model classes for TARDIS variants: vLLM's own classes with every FFN replaced after construction.

One class per family; each names the base class, where its FFNs are and how its layer calls them. The
base weights load through the base class's `load_weights` (GPT-2's loader transposes names containing
`c_fc`/`c_proj`, which still name the same parameters here); the sidecar `tardis.safetensors` is read,
hash-checked, and attached per layer. vLLM also streams the sidecar's own tensors (it loads every
`*.safetensors` of the directory): those names are dropped before the base loader sees them.
Imported by vLLM only (through the registry strings in `tardis.engines.vllm`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from vllm.model_executor.models.bloom import BloomForCausalLM
from vllm.model_executor.models.falcon import FalconForCausalLM
from vllm.model_executor.models.gpt2 import GPT2LMHeadModel
from vllm.model_executor.models.opt import OPTForCausalLM

from tardis.core.artifact import SIDECAR, read_variant
from tardis.engines.vllm.ffn import PassThrough, TardisVllmFFN, register_op
from tardis.errors import ArtifactError, TardisError

Weights = Iterable[tuple[str, torch.Tensor]]


class TardisSites:
    """The TARDIS FFNs of one vLLM model (by global layer index) and the variant directory they load from."""

    def __init__(self, vllm_config: Any, base_architecture: str, ffns: dict[int, TardisVllmFFN]) -> None:
        config = vllm_config.model_config.hf_config
        meta = getattr(config, "tardis", None)
        root = Path(vllm_config.model_config.model)
        if not isinstance(meta, dict) or meta.get("base_architecture") != base_architecture:
            raise ArtifactError(
                f"{root}: config.json has no TARDIS section for {base_architecture} (found {meta!r}); serve a "
                "directory written by Variant.save()"
            )
        graphs = getattr(vllm_config.compilation_config, "cudagraph_mode", None)
        if graphs is not None and getattr(graphs, "name", "NONE") != "NONE":
            raise TardisError(
                f"TARDIS variants need CUDA graphs off in this plugin version (cudagraph_mode={graphs.name}): the "
                "per-step choice between the dense FFN (prefill tokens) and TARDIS (decode tokens) is made on the "
                "host, which a captured graph would freeze. Serve with --enforce-eager, or keep torch.compile "
                "with -O.cudagraph_mode=NONE"
            )
        if not (root / SIDECAR).is_file():
            raise ArtifactError(f"{root / SIDECAR} is missing: serve a TARDIS variant from its local directory")
        self.root = root
        self.ffns = ffns
        for i, ffn in ffns.items():
            register_op(ffn, f"tardis.ffn.{i}", vllm_config)

    def load(self, weights: Weights, base_load: Callable[[Weights], set[str]]) -> set[str]:
        """Load the base weights with vLLM's loader, then verify and attach the folded layers."""
        with safe_open(str(self.root / SIDECAR), framework="pt") as f:
            sidecar_names = set(f.keys())
        loaded = base_load((name, t) for name, t in weights if name not in sidecar_names)
        variant = read_variant(self.root)  # checks every recorded sha256 first
        if len(variant.layers) < max(self.ffns, default=-1) + 1:
            raise ArtifactError(
                f"{self.root}: the variant has {len(variant.layers)} folded layers, fewer than the model"
            )
        for i, ffn in self.ffns.items():
            ffn.attach(variant.layers[i], prefill=variant.config.prefill)
        return loaded

    def counters(self) -> list[dict[str, int]]:
        """Per-layer counters of this rank, each with its global layer index."""
        return [{"layer": i, **ffn.counters()} for i, ffn in sorted(self.ffns.items())]

    def reset_counters(self) -> None:
        """Zero every layer's counters."""
        for ffn in self.ffns.values():
            ffn.reset_counters()


def _layers(stack: Any) -> Iterable[tuple[int, Any]]:
    """(global index, layer) for the layers this pipeline stage holds."""
    start, end = getattr(stack, "start_layer", 0), getattr(stack, "end_layer", None)
    layers = stack.h if hasattr(stack, "h") else stack.layers
    for i in range(start, len(layers) if end is None else end):
        yield i, layers[i]


def replace_mlp(layer: nn.Module, up: str, down: str, **kw: Any) -> TardisVllmFFN:
    """`layer.mlp` → a TardisVllmFFN that keeps the MLP's two linears as children under their names."""
    mlp = layer.mlp
    ffn = TardisVllmFFN(getattr(mlp, up), getattr(mlp, down), **kw)
    ffn.add_module(up, getattr(mlp, up))
    ffn.add_module(down, getattr(mlp, down))
    layer.mlp = ffn
    return ffn


class TardisGPT2LMHeadModel(GPT2LMHeadModel):
    """GPT-2: `transformer.h[i].mlp` (c_fc → act → c_proj) → TardisVllmFFN."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        ffns = {i: replace_mlp(b, "c_fc", "c_proj") for i, b in _layers(self.transformer)}
        self.tardis = TardisSites(vllm_config, "GPT2LMHeadModel", ffns)

    def load_weights(self, weights: Weights) -> set[str]:
        """Base weights through GPT-2's loader, then the folded layers."""
        return self.tardis.load(weights, super().load_weights)


class TardisOPTForCausalLM(OPTForCausalLM):
    """OPT: FFN on the decoder layer: fc1 → TardisVllmFFN (whole FFN), activation → identity, fc2 → pass-through."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        ffns = {}
        for i, layer in _layers(self.model.decoder):
            ffn = TardisVllmFFN(layer.fc1, layer.fc2, output="pair")
            for name, p in layer.fc1.named_parameters(recurse=False):  # fc1.weight / fc1.bias keep their names
                ffn.register_parameter(name, p)
            layer.fc1, layer.activation_fn, layer.fc2 = ffn, nn.Identity(), PassThrough(layer.fc2)
            ffns[i] = ffn
        self.tardis = TardisSites(vllm_config, "OPTForCausalLM", ffns)

    def load_weights(self, weights: Weights) -> set[str]:
        """Base weights through OPT's loader, then the folded layers."""
        return self.tardis.load(weights, super().load_weights)


class TardisFalconForCausalLM(FalconForCausalLM):
    """Falcon: `transformer.h[i].mlp` returns (out, bias); with parallel attention the layer does the all-reduce."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        ffns = {
            i: replace_mlp(b, "dense_h_to_4h", "dense_4h_to_h", output="pair", reduce=b.mlp.reduce_row_parallel_results)
            for i, b in _layers(self.transformer)
        }
        self.tardis = TardisSites(vllm_config, "FalconForCausalLM", ffns)

    def load_weights(self, weights: Weights) -> set[str]:
        """Base weights through Falcon's loader, then the folded layers."""
        return self.tardis.load(weights, super().load_weights)


class TardisBloomForCausalLM(BloomForCausalLM):
    """BLOOM: `transformer.h[i].mlp` (dense_h_to_4h → gelu → dense_4h_to_h) → TardisVllmFFN."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        ffns = {i: replace_mlp(b, "dense_h_to_4h", "dense_4h_to_h") for i, b in _layers(self.transformer)}
        self.tardis = TardisSites(vllm_config, "BloomForCausalLM", ffns)

    def load_weights(self, weights: Weights) -> set[str]:
        """Base weights through BLOOM's loader, then the folded layers."""
        return self.tardis.load(weights, super().load_weights)
