"""The adapter interface: how TARDIS finds, reads and replaces the FFN of one model family."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tardis.core.activations import from_hf_name
from tardis.runtime.ffn import TardisFFN


@dataclass
class FFNSite:
    """One FFN in a model: its weights as [f, d] / [d, f] views and where it lives."""

    index: int
    name: str  # qualified name of the container module (e.g. "transformer.h.3.mlp")
    input_module: nn.Module  # module whose first positional input is the FFN input x [..., d]
    w1: torch.Tensor  # [f, d]
    b1: torch.Tensor  # [f]
    w2: torch.Tensor  # [d, f]
    b2: torch.Tensor  # [d]
    act: str  # one of tardis.core.activations.ACTIVATIONS

    @property
    def w2t(self) -> torch.Tensor:
        """W2ᵀ [f, d], contiguous (one neuron's output column is one row)."""
        return self.w2.T.contiguous()


def linear_weights(linear: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [out, in], b [out]) of an nn.Linear; a missing bias reads as zeros."""
    w: torch.Tensor = linear.weight
    b = (
        linear.bias
        if getattr(linear, "bias", None) is not None
        else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    )
    return w.detach(), b.detach()


def conv1d_weights(conv: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [out, in], b [out]) of a GPT-2 style Conv1D, whose weight is stored [in, out]."""
    return conv.weight.detach().T, conv.bias.detach()


def config_activation(config: Any, *keys: str) -> str:
    """Our activation name from the first of `keys` present on the HF config."""
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, str):
            return from_hf_name(value)
    raise ValueError(f"config of model_type {config.model_type!r} has none of the activation keys {keys}")


def set_submodule(root: nn.Module, qualified_name: str, module: nn.Module) -> None:
    """Replace the submodule at `qualified_name` (dotted path) with `module`."""
    parent_name, _, child = qualified_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


class FamilyAdapter(ABC):
    """One model family: which HF model types it covers, how to find its FFNs, how to install TARDIS."""

    model_types: tuple[str, ...] = ()
    auto_class: str = "AutoModelForCausalLM"

    @abstractmethod
    def sites(self, model: nn.Module) -> list[FFNSite]:
        """Every FFN of the model, in layer order."""

    @abstractmethod
    def install(self, model: nn.Module, site: FFNSite, ffn: TardisFFN) -> None:
        """Replace the FFN at `site` so that the model calls `ffn` on the FFN input instead."""

    def install_all(self, model: nn.Module, modules: list[TardisFFN]) -> None:
        """Install one TardisFFN per site (sites are read before anything is replaced)."""
        sites = self.sites(model)
        if len(sites) != len(modules):
            raise ValueError(f"model has {len(sites)} FFNs but {len(modules)} folded layers were given")
        for site, ffn in zip(sites, modules, strict=True):
            self.install(model, site, ffn)


class MLPModuleAdapter(FamilyAdapter):
    """Families whose FFN is one module `mlp_class` with an up projection, an activation and a down one.

    The module is replaced whole by the TardisFFN (its forward takes the FFN input, returns [..., d]).
    """

    mlp_class: type[nn.Module]
    up: str
    down: str
    conv1d: bool = False  # GPT-2's Conv1D stores weights transposed
    act_keys: tuple[str, ...] = ("hidden_act", "activation_function", "activation")

    def activation_name(self, model: Any) -> str:
        """This model's activation, from its config."""
        return config_activation(model.config, *self.act_keys)

    def sites(self, model: nn.Module) -> list[FFNSite]:
        """Modules of `mlp_class` in definition (= layer) order."""
        act = self.activation_name(model)
        read = conv1d_weights if self.conv1d else linear_weights
        out: list[FFNSite] = []
        for name, module in model.named_modules():
            if isinstance(module, self.mlp_class):
                w1, b1 = read(getattr(module, self.up))
                w2, b2 = read(getattr(module, self.down))
                out.append(FFNSite(len(out), name, module, w1, b1, w2, b2, act))
        return out

    def install(self, model: nn.Module, site: FFNSite, ffn: TardisFFN) -> None:
        """Swap the MLP module for the TardisFFN."""
        set_submodule(model, site.name, ffn)
