"""OPT: the FFN sits on the decoder layer itself (fc1 → activation_fn → fc2); ReLU."""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers.models.opt.modeling_opt import OPTDecoderLayer

from tardis.arch.base import FamilyAdapter, FFNSite, config_activation, linear_weights
from tardis.runtime.ffn import TardisFFN


class OPTAdapter(FamilyAdapter):
    """OPT family adapter: fc1 becomes the TardisFFN, activation_fn and fc2 become identities."""

    model_types = ("opt",)

    def sites(self, model: Any) -> list[FFNSite]:
        """One site per OPTDecoderLayer; its input module is fc1."""
        act = config_activation(model.config, "activation_function")
        out: list[FFNSite] = []
        for name, layer in model.named_modules():
            if isinstance(layer, OPTDecoderLayer):
                w1, b1 = linear_weights(layer.fc1)
                w2, b2 = linear_weights(layer.fc2)
                out.append(FFNSite(len(out), name, layer.fc1, w1, b1, w2, b2, act))
        return out

    def install(self, model: Any, site: FFNSite, ffn: TardisFFN) -> None:
        """fc1 → TardisFFN (whole FFN), activation_fn and fc2 → Identity."""
        layer = model.get_submodule(site.name)
        layer.fc1 = ffn
        layer.activation_fn = nn.Identity()
        layer.fc2 = nn.Identity()
