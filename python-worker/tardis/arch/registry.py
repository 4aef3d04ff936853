"""Which adapter serves which model: one registry line per family; gated FFNs are refused by name."""

from __future__ import annotations

from typing import Any

from tardis.arch.base import FamilyAdapter
from tardis.arch.bert import BertAdapter
from tardis.arch.bloom import BloomAdapter
from tardis.arch.falcon import FalconAdapter
from tardis.arch.gpt2 import GPT2Adapter
from tardis.arch.gpt_bigcode import GPTBigCodeAdapter
from tardis.arch.gpt_neox import GPTNeoXAdapter
from tardis.arch.gptj import GPTJAdapter
from tardis.arch.opt import OPTAdapter
from tardis.arch.phi import PhiAdapter
from tardis.errors import GatedFFNError, UnsupportedModelError

ADAPTERS: dict[str, FamilyAdapter] = {
    a.model_types[0]: a
    for a in (
        GPT2Adapter(),
        GPTNeoXAdapter(),
        FalconAdapter(),
        BloomAdapter(),
        OPTAdapter(),
        PhiAdapter(),
        GPTJAdapter(),
        GPTBigCodeAdapter(),
        BertAdapter(),
    )
}

# Families whose FFN is down(act(gate·x) ∘ up·x): SwiGLU / GeGLU.
GATED_MODEL_TYPES = frozenset(
    {
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
        "gemma3", "gemma3_text", "phi3", "olmo", "olmo2", "cohere", "deepseek_v2", "deepseek_v3",
        "granite", "internlm2", "starcoder2_gated", "stablelm", "exaone", "glm", "glm4", "ministral",
    }
)  # fmt: skip

GATE_PARAM_NAMES = ("gate_proj", "w3", "gate_up_proj", "wi_0")


def _gated_message(model_type: str) -> str:
    return (
        f"model_type {model_type!r} has a gated FFN (down(act(gate·x) ∘ up·x), SwiGLU/GeGLU). TARDIS "
        "cannot fold it: linearizing act makes the FFN the product of two linear maps of x, which is "
        "quadratic in x, so it does not collapse into one d×d matrix. Use a non-gated model: "
        f"{', '.join(sorted(ADAPTERS))}."
    )


def adapter_for(model: Any) -> FamilyAdapter:
    """The adapter for an HF model (or its config); raises GatedFFNError or UnsupportedModelError."""
    config = getattr(model, "config", model)
    model_type = getattr(config, "model_type", None)
    if model_type in ADAPTERS:
        return ADAPTERS[model_type]
    if model_type in GATED_MODEL_TYPES:
        raise GatedFFNError(_gated_message(model_type))
    if hasattr(model, "named_parameters") and any(
        any(part in GATE_PARAM_NAMES for part in name.split(".")) for name, _ in model.named_parameters()
    ):
        raise GatedFFNError(_gated_message(str(model_type)))
    raise UnsupportedModelError(
        f"no TARDIS adapter for model_type {model_type!r}; supported families: {', '.join(sorted(ADAPTERS))}. "
        "Adding one is a new file in tardis/arch/ and one line in tardis/arch/registry.py."
    )
