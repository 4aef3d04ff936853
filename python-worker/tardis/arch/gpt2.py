"""GPT-2 (GPT2LMHeadModel): `transformer.h[i].mlp` = c_fc → act → c_proj, Conv1D weights."""

from transformers.models.gpt2.modeling_gpt2 import GPT2MLP

from tardis.arch.base import MLPModuleAdapter


class GPT2Adapter(MLPModuleAdapter):
    """GPT-2 family adapter."""

    model_types = ("gpt2",)
    mlp_class = GPT2MLP
    up, down, conv1d = "c_fc", "c_proj", True
    act_keys = ("activation_function",)
