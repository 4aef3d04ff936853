"""GPT-J: `transformer.h[i].mlp` = fc_in → act → fc_out."""

from transformers.models.gptj.modeling_gptj import GPTJMLP

from tardis.arch.base import MLPModuleAdapter


class GPTJAdapter(MLPModuleAdapter):
    """GPT-J family adapter."""

    model_types = ("gptj",)
    mlp_class = GPTJMLP
    up, down = "fc_in", "fc_out"
    act_keys = ("activation_function",)
