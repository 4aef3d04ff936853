"""The vLLM general plugin: registers the TARDIS architectures, and reads their counters from an engine.

`register` is the entry point (group `vllm.general_plugins`). It registers lazy "module:Class" strings,
so nothing imports vLLM's model code (or initializes CUDA) until vLLM resolves an architecture. A
variant directory's config.json names `Tardis<BaseArchitecture>`, a name no vLLM or transformers class
has: if this plugin did not register (not installed, import failed, or a vLLM outside the supported
range), vLLM refuses the directory ("Model architectures ['Tardis…'] are not supported") instead of
serving the dense model. Nothing here imports vLLM at module level, so the package imports without it.
"""

from __future__ import annotations

from typing import Any

# Base architecture of each TARDIS class (vLLM 0.32 has its own model classes for these four).
ARCHITECTURES = {
    "TardisGPT2LMHeadModel": "GPT2LMHeadModel",
    "TardisOPTForCausalLM": "OPTForCausalLM",
    "TardisFalconForCausalLM": "FalconForCausalLM",
    "TardisBloomForCausalLM": "BloomForCausalLM",
}

# The model classes subclass vLLM internals (module attribute names, make_layers stages, the forward
# context's attention metadata, AutoWeightsLoader's per-parameter weight_loader) that change between
# minor releases: only the minor series tested against a real engine is accepted.
SUPPORTED_VLLM = ((0, 32), (0, 33))  # [lowest, first unsupported)
MODELS_MODULE = "tardis.engines.vllm.models"
WORKER_EXTENSION = "tardis.engines.vllm.worker.TardisWorkerExtension"


def vllm_version_supported(version: str) -> bool:
    """Whether a vLLM version string (e.g. "0.32.0", "0.32.1.dev3+cpu") is in SUPPORTED_VLLM."""
    parts = version.split("+")[0].split(".")
    try:
        major_minor = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        return False
    lo, hi = SUPPORTED_VLLM
    return lo <= major_minor < hi


def register() -> None:
    """Register every TARDIS architecture with vLLM's ModelRegistry (idempotent; vLLM calls it per process)."""
    import vllm
    from vllm import ModelRegistry

    if not vllm_version_supported(vllm.__version__):
        lo, hi = SUPPORTED_VLLM
        raise RuntimeError(
            f"TARDIS plugin: vLLM {vllm.__version__} is not supported (need >={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}); "
            "TARDIS variants will be refused. Install a supported vLLM (see docs/vllm.md)."
        )
    for arch in ARCHITECTURES:
        ModelRegistry.register_model(arch, f"{MODELS_MODULE}:{arch}")


def merge_ranks(per_rank: list[list[dict[str, int]]]) -> list[dict[str, int]]:
    """One counter dict per layer from every worker's lists.

    Tensor-parallel ranks hold disjoint neuron blocks, so flagged pairs, union sizes and neurons add up;
    tokens, steps and dense tokens are the same on every rank of a stage (the max is taken). Pipeline
    stages hold disjoint layers.
    """
    merged: dict[int, dict[str, int]] = {}
    for rank in per_rank:
        for c in rank:
            m = merged.setdefault(c["layer"], {"layer": c["layer"], "flagged": 0, "union": 0, "neurons": 0})
            for k in ("flagged", "union", "neurons"):
                m[k] += c[k]
            for k in ("tokens", "steps", "dense_tokens"):
                m[k] = max(m.get(k, 0), c[k])
    return [merged[i] for i in sorted(merged)]


def counters(llm: Any) -> list[dict[str, int]]:
    """Per-layer fallback counters of a vLLM `LLM` serving a TARDIS variant, merged over its workers.

    The engine must run with `worker_extension_cls=WORKER_EXTENSION`. Each dict: layer, flagged
    (token, neuron) pairs corrected, tokens run through TARDIS, union (sum over steps of the neurons
    corrected in the step), steps, dense_tokens (prefill tokens run dense), neurons. Fallback rate =
    flagged / (tokens · neurons).
    """
    per_rank: list[list[dict[str, int]]] = llm.collective_rpc("tardis_counters")
    return merge_ranks(per_rank)


def reset_counters(llm: Any) -> None:
    """Zero the counters on every worker."""
    llm.collective_rpc("tardis_reset_counters")
