"""GPT-NeoX / Pythia: `gpt_neox.layers[i].mlp` = dense_h_to_4h → act → dense_4h_to_h."""

from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXMLP

from tardis.arch.base import MLPModuleAdapter


class GPTNeoXAdapter(MLPModuleAdapter):
    """GPT-NeoX family adapter."""

    model_types = ("gpt_neox",)
    mlp_class = GPTNeoXMLP
    up, down = "dense_h_to_4h", "dense_4h_to_h"
    act_keys = ("hidden_act",)
