"""Falcon: `transformer.h[i].mlp` = dense_h_to_4h → act → dense_4h_to_h (biases optional)."""

from transformers.models.falcon.modeling_falcon import FalconMLP

from tardis.arch.base import MLPModuleAdapter


class FalconAdapter(MLPModuleAdapter):
    """Falcon family adapter."""

    model_types = ("falcon",)
    mlp_class = FalconMLP
    up, down = "dense_h_to_4h", "dense_4h_to_h"
    act_keys = ("activation",)
