"""Phi (1, 1.5, 2): `model.layers[i].mlp` = fc1 → act → fc2."""

from transformers.models.phi.modeling_phi import PhiMLP

from tardis.arch.base import MLPModuleAdapter


class PhiAdapter(MLPModuleAdapter):
    """Phi family adapter."""

    model_types = ("phi",)
    mlp_class = PhiMLP
    up, down = "fc1", "fc2"
    act_keys = ("hidden_act",)
