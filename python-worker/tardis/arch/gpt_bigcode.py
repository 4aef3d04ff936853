"""GPT-BigCode (StarCoder): `transformer.h[i].mlp` = c_fc → act → c_proj (nn.Linear)."""

from transformers.models.gpt_bigcode.modeling_gpt_bigcode import GPTBigCodeMLP

from tardis.arch.base import MLPModuleAdapter


class GPTBigCodeAdapter(MLPModuleAdapter):
    """GPT-BigCode family adapter."""

    model_types = ("gpt_bigcode",)
    mlp_class = GPTBigCodeMLP
    up, down = "c_fc", "c_proj"
    act_keys = ("activation_function",)
