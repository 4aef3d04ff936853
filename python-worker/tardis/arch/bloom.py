"""BLOOM: `transformer.h[i].mlp(hidden, residual)` = residual + dense_4h_to_h(gelu(dense_h_to_4h(hidden)))."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.bloom.modeling_bloom import BloomMLP

from tardis.arch.base import FFNSite, MLPModuleAdapter, set_submodule
from tardis.runtime.ffn import TardisFFN


class TardisBloomMLP(nn.Module):
    """BLOOM's MLP signature (hidden, residual) around a TardisFFN; dropout as BLOOM applies it."""

    def __init__(self, ffn: TardisFFN, hidden_dropout: float) -> None:
        super().__init__()
        self.ffn = ffn
        self.hidden_dropout = hidden_dropout

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual + dropout(ffn(hidden))."""
        out = nn.functional.dropout(self.ffn(hidden_states), p=self.hidden_dropout, training=self.training)
        return residual + out


class BloomAdapter(MLPModuleAdapter):
    """BLOOM family adapter (BloomGelu is the tanh approximation)."""

    model_types = ("bloom",)
    mlp_class = BloomMLP
    up, down = "dense_h_to_4h", "dense_4h_to_h"

    def activation_name(self, model: Any) -> str:
        """BLOOM hard-codes its tanh-approximated GELU."""
        return "gelu_tanh"

    def install(self, model: nn.Module, site: FFNSite, ffn: TardisFFN) -> None:
        """Swap the MLP for a wrapper that keeps BLOOM's (hidden, residual) call."""
        dropout = float(getattr(model.config, "hidden_dropout", 0.0))
        set_submodule(model, site.name, TardisBloomMLP(ffn, dropout))
