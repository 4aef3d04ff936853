"""BERT-style encoders: `encoder.layer[i]` has intermediate (dense → act) and output (dense → LN(· + input))."""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers.models.bert.modeling_bert import BertLayer

from tardis.arch.base import FamilyAdapter, FFNSite, config_activation, linear_weights
from tardis.runtime.ffn import TardisFFN


class BertAdapter(FamilyAdapter):
    """BERT family adapter: intermediate becomes the TardisFFN, output.dense becomes Identity."""

    model_types = ("bert",)

    def sites(self, model: Any) -> list[FFNSite]:
        """One site per BertLayer; its input module is `intermediate`."""
        act = config_activation(model.config, "hidden_act")
        out: list[FFNSite] = []
        for name, layer in model.named_modules():
            if isinstance(layer, BertLayer):
                w1, b1 = linear_weights(layer.intermediate.dense)
                w2, b2 = linear_weights(layer.output.dense)
                out.append(FFNSite(len(out), name, layer.intermediate, w1, b1, w2, b2, act))
        return out

    def install(self, model: Any, site: FFNSite, ffn: TardisFFN) -> None:
        """intermediate → TardisFFN (whole FFN incl. b2); output keeps dropout and LayerNorm."""
        layer = model.get_submodule(site.name)
        layer.intermediate = ffn
        layer.output.dense = nn.Identity()
