"""GPU decode kernels for the TARDIS FFN (Triton on CUDA) and the custom op that wraps them.

`layout` repacks the canonical predictor into the kernels' tiled layout, `decode` holds the Triton
kernels and their launcher, `op` registers `tardis::ffn_decode` (CPU: the reference path), and
`policy` picks TARDIS or dense per batch size from a measured union curve. Beside the FFN,
`attention` registers `tardis::mqa_decode_attention` (a multi-query decode step with the cache split
in blocks) and `tardis::rope_kv_write` (a decode token's rotary embedding and static-cache write; kernels
in `attention_triton`), and `norm` registers `tardis::layer_norm_rows` and `tardis::add3` (kernels in
`norm_triton`), which the end-to-end bench can give both models.
"""

from tardis.kernels.layout import TiledPredictor, tile_predictor, untile_predictor
from tardis.kernels.op import KernelPack, attach, ffn_decode

__all__ = ["KernelPack", "TiledPredictor", "attach", "ffn_decode", "tile_predictor", "untile_predictor"]
