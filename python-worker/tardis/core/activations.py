"""Activation functions by name, and the exact linear pieces of piecewise-linear ones.

Names are a closed set so that every engine (reference path, Triton kernels, vLLM) computes the
same function; adapters map each model family's activation onto one of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu_erf(z: torch.Tensor) -> torch.Tensor:
    """GELU with the exact erf form: z·Φ(z)."""
    return torch.nn.functional.gelu(z)


def gelu_tanh(z: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (GPT-2's gelu_new, BLOOM, gelu_pytorch_tanh)."""
    return 0.5 * z * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)))


def relu(z: torch.Tensor) -> torch.Tensor:
    """max(z, 0)."""
    return torch.relu(z)


def quick_gelu(z: torch.Tensor) -> torch.Tensor:
    """z·σ(1.702 z) (CLIP-style quick GELU)."""
    return z * torch.sigmoid(1.702 * z)


def identity(z: torch.Tensor) -> torch.Tensor:
    """z (a linear FFN: folding alone is exact)."""
    return z


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": identity,
    "gelu": gelu_erf,
    "gelu_tanh": gelu_tanh,
    "relu": relu,
    "quick_gelu": quick_gelu,
}

# HF config strings (hidden_act / activation_function / activation) → our names.
HF_ACTIVATION_NAMES: dict[str, str] = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_python_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "bloom_gelu": "gelu_tanh",
    "relu": "relu",
    "quick_gelu": "quick_gelu",
    "linear": "identity",
}


@dataclass(frozen=True)
class LinearPiece:
    """An interval on which the activation is exactly a·z + c."""

    lo: float
    hi: float
    slope: float
    intercept: float


# Activations that are exactly linear on half-lines: ranges snap to these pieces (zero misfit).
EXACT_PIECES: dict[str, tuple[LinearPiece, ...]] = {
    "relu": (LinearPiece(-math.inf, 0.0, 0.0, 0.0), LinearPiece(0.0, math.inf, 1.0, 0.0)),
    "identity": (LinearPiece(-math.inf, math.inf, 1.0, 0.0),),
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function called `name` (one of ACTIVATIONS)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


def from_hf_name(hf_name: str) -> str:
    """Map a transformers activation string to our name, or raise naming the supported ones."""
    try:
        return HF_ACTIVATION_NAMES[hf_name]
    except KeyError:
        raise ValueError(
            f"activation {hf_name!r} is not supported by TARDIS; supported: {sorted(HF_ACTIVATION_NAMES)}"
        ) from None
