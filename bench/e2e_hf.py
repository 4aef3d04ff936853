"""End-to-end greedy decode in HF transformers: dense vs TARDIS at Falcon-7B shape (issue #5).

Builds a Falcon-7B-shaped model (random bf16 weights, or --checkpoint), calibrates it on the Lee
corpus, and times greedy decode (static KV cache, one CUDA graph per decode step, argmax inside the
graph) for the dense model first and then with TARDIS modules installed (decode policy: the op at
≤ max_tardis_tokens tokens per step, dense above). Per batch it reports tokens/s, the decode
fallback rate from the on-device counters, the steps the policy ran dense, the FFN share of a dense
step (dense graph vs the same graph with every FFN replaced by a zero output), the FFN speedup S of
one layer (dense module vs TARDIS, CUDA graph over 8 distinct layers) and the bound 1/((1−s) + s/S)
of METHOD.md §5. Then the project's small models: greedy tokens on the GPU (TARDIS op, bf16 and
fp32) vs the CPU reference (float32), with the CPU logit margin at every first divergence.

    cd python-worker && python ../bench/e2e_hf.py --out $OUT/e2e_hf.json
    # --compile: every decode step's forward torch.compile'd before the graph capture (all batches);
    # --compile-batches 1,4: those batches also timed compiled, after the --batches rows (one calibration)
    # CPU smoke run: --device cpu --layers 2 --hidden 64 --ffn 256 --heads 4 --vocab 512 ...
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

# The device machine runs the image's python3 without the package installed (as bench/ffn_bench.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python-worker"))

from tardis import corpora
from tardis.arch.base import set_submodule
from tardis.arch.registry import adapter_for
from tardis.calibrate import calibrate
from tardis.config import FoldConfig
from tardis.data import join_tokens
from tardis.engines import hf
from tardis.kernels.attention import (
    attention_ticket,
    mqa_decode_attention,
    mqa_decode_reference,
    mqa_rope_attention,
    rope_kv_reference,
    rope_kv_write,
)
from tardis.kernels.blocks import zero_counters
from tardis.kernels.gemv import decode_linear
from tardis.kernels.greedy import greedy_step, greedy_step_reference
from tardis.kernels.layout import Int8X, pack_x_i8
from tardis.kernels.norm import add3, add3_layer_norm, add3_layer_norm_i8, layer_norm_rows
from tardis.kernels.op import set_fp32_out
from tardis.kernels.policy import policy_from_bench
from tardis.runtime.ffn import TARDIS_MAX_DECODE_TOKENS, TardisFFN

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
SMALL_MODELS = ("tardis-tiny-gpt2", "tardis-tiny-neox", "tardis-tiny-opt")
TOKENIZER = MODELS / "tardis-tiny-gpt2"
TIMED_LAYERS = 8  # distinct layers per FFN timing graph, so one folded matrix cannot stay in L2 (METHOD.md §5)


# ---------------------------------------------------------------------------------------------- model


def falcon_config(args: argparse.Namespace) -> transformers.FalconConfig:
    """Falcon-7B's shape (or the smaller one the flags ask for): multi-query, parallel attention, no bias."""
    return transformers.FalconConfig(
        hidden_size=args.hidden,
        num_attention_heads=args.heads,
        num_hidden_layers=args.layers,
        ffn_hidden_size=args.ffn,
        vocab_size=args.vocab,
        multi_query=True,
        parallel_attn=True,
        new_decoder_architecture=False,
        bias=False,
        alibi=False,
        attn_implementation="sdpa",
    )


@torch.no_grad()
def random_falcon(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A Falcon model built directly on `device` in `dtype`: weights N(0, 0.02), LayerNorm weight 1, bias 0."""
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = transformers.FalconForCausalLM._from_config(falcon_config(args), dtype=dtype)
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        else:
            for p in module.parameters(recurse=False):
                nn.init.normal_(p, mean=0.0, std=0.02)
    return model.eval()


def load_model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """--checkpoint when given, else the random Falcon-shaped model."""
    if args.checkpoint:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            args.checkpoint, dtype=dtype, attn_implementation="sdpa"
        )
        return model.to(device).eval()
    return random_falcon(args, device, dtype)


def make_falcon_graph_safe(model: nn.Module) -> None:
    """HF Falcon's multi-query `_split_heads` indexes with Python lists (a host index tensor, which breaks
    CUDA-graph capture); replace it on each attention module by the value-identical slices."""
    from transformers.models.falcon.modeling_falcon import FalconAttention

    def split_heads(self: Any, fused_qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, s, _ = fused_qkv.shape
        qkv = fused_qkv.view(b, s, self.num_heads + 2, self.head_dim)
        return qkv[..., :-2, :], qkv[..., -2:-1, :], qkv[..., -1:, :]

    for m in model.modules():
        if isinstance(m, FalconAttention) and m.multi_query and not m.new_decoder_architecture:
            m._split_heads = split_heads.__get__(m)  # type: ignore[method-assign]


def mqa_decode_forward(self: Any, hidden_states: torch.Tensor, alibi: Any, attention_mask: Any, *args: Any, **kw: Any):
    """FalconAttention.forward for a multi-query decode step (one query token, rotary): the query heads become
    the query rows of the single key/value head, so the attention meets equal head counts (one) and needs no
    broadcast of the cached keys and values to every head. The attention itself is SDPA's (mode "mqa") or
    `tardis::mqa_decode_attention` (mode "mqa_triton": the cache split in blocks over the SMs). Mode "mqa_fused"
    also replaces the rotary embedding and the static cache's update (about fifteen small kernels) by
    `tardis::rope_kv_write` (one), where the cache layer is a static one and the step is not being compiled (inductor
    fuses those ops itself there); mode "fused_layer" does all of it in `tardis::mqa_rope_attention` (the attention's
    kernels rotate and write themselves), and modes "fused_gemv" and "fused_model" also run the two projections
    through `tardis::decode_linear` (one launch each at batch 1 where cuBLAS runs a split-K kernel and its reduce).
    Mode "fused_step"'s model forward hands every layer the rotary tables (LengthRope) instead of the step's cos and
    sin and no mask: the attention reads the tables at the cache's write position and masks the slots past it.
    Anything else goes to the original forward."""
    from transformers.models.falcon.modeling_falcon import apply_rotary_pos_emb

    past = kw.get("layer_past", args[1] if len(args) > 1 else None)
    emb = kw.get("position_embeddings", args[4] if len(args) > 4 else None)
    output_attentions = kw.get("output_attentions", args[3] if len(args) > 3 else False)
    if alibi is not None or hidden_states.shape[1] != 1 or output_attentions or emb is None:
        return self._stock_forward(hidden_states, alibi, attention_mask, *args, **kw)
    b = hidden_states.shape[0]
    fused_qkv = project(self, self.query_key_value, hidden_states)
    layer = getattr(past, "layers", [None] * (self.layer_idx + 1))[self.layer_idx]
    static = (
        type(layer) is transformers.cache_utils.StaticLayer
        and layer.is_initialized
        and not torch.compiler.is_compiling()
    )
    mask = None if attention_mask is None else attention_mask[:, 0, -1]  # the decode row [B, L] (the tardis ops')
    by_length = isinstance(emb, LengthRope)
    if by_length and not (self._mqa_kernel == "rope_attention" and static):
        raise RuntimeError(
            "mqa_decode_forward: the rotary tables (LengthRope: the fused_step model forward's) need the "
            f"rope_attention kernel and an initialized static cache layer; this layer has {self._mqa_kernel!r} and "
            f"a {type(layer).__name__} (set_decode_attention's fused_step mode sets both)"
        )
    if self._mqa_kernel == "rope_attention" and static:  # the rotary embedding inside the attention's kernels
        out = mqa_rope_attention(fused_qkv, emb[0], emb[1], layer.keys, layer.values, layer.cumulative_length,
                                 self._rope_ticket, self.num_heads, mask, by_length=by_length)  # fmt: skip
        return project(self, self.dense, out.reshape(b, 1, -1)), None
    if self._mqa_kernel == "fused" and static:
        q = rope_kv_write(fused_qkv, emb[0], emb[1], layer.keys, layer.values, layer.cumulative_length,
                          self._rope_ticket, self.num_heads)[:, :, None]  # fmt: skip
        k, v = layer.keys, layer.values  # [B, 1, L, hd], the token's key and value written
    else:
        q, k, v = self._split_heads(fused_qkv)  # [B, 1, H, hd], [B, 1, 1, hd] twice
        q, k = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), *emb)  # [B, H, 1, hd], [B, 1, 1, hd]
        v = v.transpose(1, 2)
        if past is not None:
            k, v = past.update(k, v, self.layer_idx)  # [B, 1, L, hd]
    if self._mqa_kernel != "sdpa":  # q [B, H, hd] against k / v [B, L, hd]
        out = mqa_decode_attention(q[:, :, 0], k[:, 0], v[:, 0], mask)
    else:  # [B, 1, H, hd]: H query rows of one head; the mask [B, 1, 1, L] holds for every row
        out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=attention_mask)
    return project(self, self.dense, out.reshape(b, 1, -1)), None


def project(attention: Any, linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One of the attention's projections of x: `tardis::decode_linear` in mode fused_gemv, else the module."""
    if vars(attention).get("_gemv"):
        return decode_linear(x, linear.weight, linear.bias)
    return linear(x)


def fused_decoder_forward(self: Any, hidden_states: torch.Tensor, *args: Any, **kw: Any) -> tuple[torch.Tensor, Any]:
    """FalconDecoderLayer.forward for a decode step of a parallel-attention layer (one layer norm feeding both the
    attention and the MLP): the layer norm by `tardis::layer_norm_rows` and the two residual adds by one
    `tardis::add3`, or, where set_decode_attention linked the next decoder layer, by `tardis::add3_layer_norm`,
    which also norms the output for that layer (it takes the norm when its input is this output, one launch a layer
    fewer). Anything else (prefill, the new decoder architecture, training, a step being compiled) goes to the
    original forward."""
    if torch.compiler.is_compiling():  # first: dynamo in torch 2.11 breaks the graph at the pop below (a resume
        # frame a layer, guarded on its index, past the recompile limit with three models compiled)
        return self._stock_forward(hidden_states, *args, **kw)
    cfg = self.config
    pre = vars(self).pop("_pre_norm", None)  # (the previous layer's output, its norm by this layer's layer norm)
    if hidden_states.shape[1] != 1 or cfg.new_decoder_architecture or not cfg.parallel_attn or self.training or args:
        return self._stock_forward(hidden_states, *args, **kw)
    ln = self.input_layernorm
    x_i8 = None  # the MLP's int8 x words, where the previous layer's norm wrote them (FFN output "fp32_xq")
    if pre is not None and pre[0] is hidden_states:
        x, x_i8 = pre[1], pre[2]
    else:
        x = layer_norm_rows(hidden_states, ln.weight, ln.bias, ln.eps)
    side = vars(self).get("_side_stream")  # set on CUDA layers only (set_branch_streams)
    if side is None:
        attn, weights = self.self_attention(x, **kw)
        mlp = layer_mlp(self, x, x_i8)
    else:
        # two branch streams: one branch on the side stream (the attention, or with priority "mlp" the MLP), the
        # other on the current one, joined before the adds. Every tensor the side stream allocates is freed after
        # the join, and the side stream's next work (the next layer's fork) waits for everything queued here, so
        # neither stream can reuse a block the other still reads.
        cur = torch.cuda.current_stream(x.device)
        if cur == side:  # the fork and join would be no-ops: one stream, silently (see capture_stream)
            raise RuntimeError(f"the side stream {side} is the current stream: the branches would not overlap")
        side.wait_stream(cur)
        if vars(self).get("_side_mlp"):
            with torch.cuda.stream(side):
                mlp = layer_mlp(self, x, x_i8)
            attn, weights = self.self_attention(x, **kw)
        else:
            with torch.cuda.stream(side):
                attn, weights = self.self_attention(x, **kw)
            mlp = layer_mlp(self, x, x_i8)
        cur.wait_stream(side)
    nxt = vars(self).get("_next_layer")
    if nxt is None:
        fin = vars(self).get("_final_norm")  # mode fused_model's last layer: the model's final norm here too
        if fin is None:
            return add3(mlp, attn, hidden_states), weights
        out, normed = add3_layer_norm(mlp, attn, hidden_states, fin[0].weight, fin[0].bias, fin[0].eps)
        fin[0]._pre_norm = (out, normed)
        return out, weights
    nln = nxt[0].input_layernorm
    layout = norm_int8_x_layout(nxt[0].mlp, hidden_states.numel() // hidden_states.shape[-1])
    if layout is None:
        out, x_next = add3_layer_norm(mlp, attn, hidden_states, nln.weight, nln.bias, nln.eps)
        nxt[0]._pre_norm = (out, x_next, None)
    else:  # the next layer's norm also as its MLP's int8 x words (and that op call's counters zeroed)
        out, x_next, x_i8_next = add3_layer_norm_i8(
            mlp, attn, hidden_states, nln.weight, nln.bias, nln.eps, layout, nxt[0].mlp.kernel_pack.workspace
        )
        nxt[0]._pre_norm = (out, x_next, x_i8_next)
    return out, weights


def final_norm_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """The final LayerNorm's forward in mode fused_model: the norm the last decoder layer's add3_layer_norm wrote,
    where x is that layer's output; else (prefill, a compiled step) the module's own."""
    if torch.compiler.is_compiling():
        return self._stock_forward(x)
    pre = vars(self).pop("_pre_norm", None)
    return pre[1] if pre is not None and pre[0] is x else self._stock_forward(x)


def table_rotary_forward(self: Any, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotary embedding's forward in mode fused_model for a decode step (one position a row): cos and sin
    looked up in a table of every position below max_position_embeddings, computed once by the module's own forward
    (so the values are the same bits; an index past the table fails the lookup loudly, it is never clamped), two
    kernels instead of about eight (casts, an sgemm, a cat, cos, sin, two multiplies). Prefill, a step being
    compiled, a RoPE type other than the default (its frequencies can change with the length) and the first call
    for a device and dtype while a CUDA graph is being captured go to the module's own forward."""
    if (
        position_ids.ndim != 2
        or position_ids.shape[1] != 1
        or self.rope_type != "default"
        or torch.compiler.is_compiling()
    ):
        return self._stock_forward(x, position_ids)
    found = rotary_tables(self, x)
    if found is None:
        return self._stock_forward(x, position_ids)
    cos, sin = found
    idx = position_ids.reshape(-1)
    shape = (*position_ids.shape, cos.shape[-1])
    return cos.index_select(0, idx).view(shape), sin.index_select(0, idx).view(shape)


def rotary_tables(rotary: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The rotary embedding's cos and sin [P, hd] of every position below max_position_embeddings for x's device
    and dtype, computed once by the module's own forward and kept; None where they are not built yet and a CUDA
    graph is being captured (building them there would put their kernels into the graph)."""
    tables = vars(rotary).setdefault("_tables", {})
    key = (x.device, x.dtype)
    if key not in tables:
        if x.is_cuda and torch.cuda.is_current_stream_capturing():
            return None
        every = torch.arange(rotary.config.max_position_embeddings, device=x.device)[None]
        fwd = vars(rotary).get("_stock_forward", rotary.forward)
        cos, sin = fwd(x, every)
        tables[key] = (cos[0].contiguous(), sin[0].contiguous())
    return tables[key]


class LengthRope(tuple):
    """The position embeddings the fused_step model forward hands each layer: the rotary tables (cos, sin), each
    [P, hd], which the attention reads at its cache's write position (mqa_rope_attention's by_length)."""


def step_model_forward(
    self: Any,
    input_ids: torch.Tensor | None = None,
    past_key_values: Any = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    use_cache: bool | None = None,
    output_attentions: bool | None = None,
    output_hidden_states: bool | None = None,
    return_dict: bool | None = None,
    **kwargs: Any,
) -> Any:
    """FalconModel.forward for a decode step in mode fused_step: the embedding, the decoder layers and the final
    norm, without HF's per-step code for the positions (an arange and an add), the causal mask (about seven small
    kernels) and the rotary embedding's lookup: every layer gets the rotary tables (LengthRope) and no mask, and its
    attention (`tardis::mqa_rope_attention` with by_length) reads the tables at the static cache's write position
    and masks the slots past it, which is what HF's mask and positions say for a static cache without padding.
    Anything else (prefill, a mask or positions given, a cache that is not an initialized static one of one write
    position for every row, attention or hidden-state outputs, a step being compiled, the first step while a CUDA
    graph is captured and the tables are not built) goes to the original forward."""
    cfg = self.config
    use_cache = cfg.use_cache if use_cache is None else use_cache
    layers = getattr(past_key_values, "layers", None)
    n_slots = layers[0].keys.shape[2] if layers and getattr(layers[0], "is_initialized", False) else None
    plain = (
        not torch.compiler.is_compiling()
        and input_ids is not None
        and input_ids.shape[1] == 1
        and inputs_embeds is None
        and attention_mask is None
        and position_ids is None
        and use_cache
        and not (cfg.output_attentions if output_attentions is None else output_attentions)
        and not (cfg.output_hidden_states if output_hidden_states is None else output_hidden_states)
        and not kwargs
        and vars(self).get("_step_layers") == len(self.h)
        and n_slots is not None
        and len(layers) == len(self.h)
        and all(type(lay) is transformers.cache_utils.StaticLayer and lay.is_initialized for lay in layers)
        and n_slots <= cfg.max_position_embeddings
    )
    stock = {
        "input_ids": input_ids, "past_key_values": past_key_values, "attention_mask": attention_mask,
        "position_ids": position_ids, "inputs_embeds": inputs_embeds, "use_cache": use_cache,
        "output_attentions": output_attentions, "output_hidden_states": output_hidden_states,
        "return_dict": return_dict,
    }  # fmt: skip
    if not plain:
        return self._stock_forward(**stock, **kwargs)
    tables = rotary_tables(self.rotary_emb, self.word_embeddings.weight)  # (the embeddings' device and dtype)
    if tables is None:
        return self._stock_forward(**stock)
    emb = LengthRope(tables)
    hidden = self.word_embeddings(input_ids)
    for block in self.h:
        hidden = block(hidden, layer_past=past_key_values, attention_mask=None, position_ids=None, use_cache=use_cache,
                       output_attentions=False, alibi=None, position_embeddings=emb)[0]  # fmt: skip
    hidden = self.ln_f(hidden)
    if not (cfg.return_dict if return_dict is None else return_dict):
        return hidden, past_key_values
    return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden, past_key_values=past_key_values)


def layer_mlp(layer: Any, x: torch.Tensor, x_i8: Int8X | None = None) -> torch.Tensor:
    """The decoder layer's MLP on x for fused_decoder_forward, whose adds also take a float32 MLP output: a TardisFFN
    returns one where its kernel pack is in the float32-output mode (set_ffn_output "fp32"), else x's dtype; x_i8:
    x's int8 words from the previous layer's norm (norm_int8_x_layout)."""
    mlp = layer.mlp
    return mlp(x, fp32_ok=True, x_i8=x_i8) if isinstance(mlp, TardisFFN) else mlp(x)


def norm_int8_x_layout(mlp: nn.Module, tokens: int) -> tuple[int, int, int] | None:
    """The int8 x layout in which the previous layer's norm writes this MLP's x (set_ffn_output "fp32_xq" set
    `_norm_int8_x`), where its op call at this many tokens takes int8 x (TardisFFN.int8_x_layout); else None."""
    if not (isinstance(mlp, TardisFFN) and vars(mlp).get("_norm_int8_x")):
        return None
    return mlp.int8_x_layout(tokens)


def is_fused(layer: nn.Module) -> bool:
    """Whether set_decode_attention gave this decoder layer fused_decoder_forward."""
    return getattr(vars(layer).get("forward"), "__func__", None) is fused_decoder_forward


def fused_layers(model: nn.Module) -> int:
    """How many of the model's modules run fused_decoder_forward."""
    return sum(is_fused(m) for m in model.modules())


# side streams per device and priority (True: the device's highest; CUDA graphs keep a kernel's stream priority, as
# PyTorch instantiates them with per-node priorities)
SIDE_STREAMS: dict[tuple[torch.device, bool], torch.cuda.Stream] = {}
# the stream every Replayable graph is captured on, per device. torch.cuda.Stream() hands out PyTorch's pool streams in
# turn (32 a priority), so two calls 32 apart return the same stream: a side stream drawn after 32 others (warm-up
# streams, torch.cuda.graph's own default capture stream) could be the capture stream, and the branches then ran on
# one stream without an error (v31's and v32's "2" rows, equal to one stream's). Side streams are drawn until they
# differ from this one and from each other.
CAPTURE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def capture_stream(device: torch.device | None = None) -> torch.cuda.Stream:
    """The device's graph-capture stream (the current device's by default), drawn once."""
    dev = torch.device("cuda", torch.cuda.current_device() if device is None or device.index is None else device.index)
    if dev not in CAPTURE_STREAMS:
        CAPTURE_STREAMS[dev] = torch.cuda.Stream(dev)
    return CAPTURE_STREAMS[dev]


def side_stream(dev: torch.device, high: bool) -> torch.cuda.Stream:
    """The device's side stream of that priority, drawn once: never the capture stream, the default stream or the
    other side stream (a pool stream equal to one of them is drawn past)."""
    cap = capture_stream(dev)
    dev = cap.device  # with its index
    if (dev, high) not in SIDE_STREAMS:
        taken = {cap, torch.cuda.default_stream(dev), *SIDE_STREAMS.values()}
        for _ in range(65):  # two pools' worth: a pool has 32 streams of a priority
            s = torch.cuda.Stream(dev, priority=-1 if high else 0)  # -1: PyTorch clamps it to the device's highest
            if s not in taken:
                SIDE_STREAMS[dev, high] = s
                break
        else:
            raise RuntimeError(f"no side stream on {dev} other than {taken}")
    return SIDE_STREAMS[dev, high]


# with two branch streams, which branch gets the scheduler's preference: neither (the attention on a side stream of
# the same priority), the attention (on a high-priority side stream) or the MLP (on a high-priority side stream, the
# attention on the current one)
BRANCH_PRIORITIES = ("none", "attention", "mlp")


def set_branch_streams(model: nn.Module, n: int, priority: str = "none") -> int:
    """n = 2: every decoder layer in a fused mode (FUSED_LAYER_MODES) on a CUDA device runs its two branches on two
    streams (Falcon's parallel attention: both read the same layer norm), the attention on a side stream and the MLP
    on the current one, or with `priority` (BRANCH_PRIORITIES) one branch on a high-priority side stream; n = 1: one
    stream. Returns how many layers run two streams."""
    from transformers.models.falcon.modeling_falcon import FalconDecoderLayer

    if n not in (1, 2):
        raise ValueError(f"branch streams {n!r}: want 1 or 2")
    if priority not in BRANCH_PRIORITIES:
        raise ValueError(f"branch priority {priority!r}: want one of {', '.join(BRANCH_PRIORITIES)}")
    high = priority != "none"
    k = 0
    for m in model.modules():
        if not isinstance(m, FalconDecoderLayer):
            continue
        dev = m.input_layernorm.weight.device
        if n == 2 and is_fused(m) and dev.type == "cuda":
            m._side_stream = side_stream(dev, high)
            m._side_mlp = priority == "mlp"
            k += 1
        else:
            m._side_stream = None
            m._side_mlp = False
    return k


# the configurations branch_streams_ab times (stream count, priority): one stream, then two with each priority
STREAM_CONFIGS = ((1, "none"), *((2, p) for p in BRANCH_PRIORITIES))


def stream_key(n: int, priority: str) -> str:
    """A configuration's suffix in the JSON's step-time keys: 1, 2, 2_attention, 2_mlp."""
    return str(n) if priority == "none" else f"{n}_{priority}"


# the decode step's attention: HF's own; the multi-query rows as one head's queries through SDPA; the same rows
# through tardis::mqa_decode_attention; that with the rotary embedding and cache write in tardis::rope_kv_write;
# and (fused_layer) the rotary embedding and cache write inside the attention's kernels (tardis::mqa_rope_attention),
# the layer's norm and residual adds in tardis::layer_norm_rows and tardis::add3, the adds and the next layer's norm
# in tardis::add3_layer_norm; (fused_gemv) that with the attention's projections in tardis::decode_linear;
# (fused_model) that with the model's own step code trimmed: the rotary embedding's cos and sin looked up in a table
# instead of computed (about eight kernels), the final layer norm in the last layer's tardis::add3_layer_norm;
# (fused_step) that with the model's decode forward skipping HF's positions and mask (step_model_forward): the
# attention reads the rotary tables at the cache's write position and masks the slots past it itself
ATTENTION_MODES = (
    "stock", "mqa", "mqa_triton", "mqa_fused", "fused_layer", "fused_gemv", "fused_model", "fused_step",
)  # fmt: skip
MQA_KERNELS = {
    "mqa": "sdpa", "mqa_triton": "triton", "mqa_fused": "fused", "fused_layer": "rope_attention",
    "fused_gemv": "rope_attention", "fused_model": "rope_attention", "fused_step": "rope_attention",
}  # fmt: skip
# the decoder layer's forward is fused_decoder_forward
FUSED_LAYER_MODES = ("fused_layer", "fused_gemv", "fused_model", "fused_step")
GEMV_MODES = ("fused_gemv", "fused_model", "fused_step")  # the attention's projections in tardis::decode_linear
TRIMMED_MODES = ("fused_model", "fused_step")  # the rotary table and the final norm in the last layer's adds


def mqa_attentions(model: nn.Module) -> list[nn.Module]:
    """The attention modules mqa_decode_forward serves: multi-query Falcon, old decoder architecture, rotary."""
    from transformers.models.falcon.modeling_falcon import FalconAttention

    return [
        m
        for m in model.modules()
        if isinstance(m, FalconAttention) and m.multi_query and not m.new_decoder_architecture and not m.config.alibi
    ]


def set_decode_attention(model: nn.Module, mode: str) -> int:
    """Put ATTENTION_MODES' `mode` in force on every multi-query Falcon attention module of the model (old decoder
    architecture, rotary): mqa_decode_forward with its kernel, or HF's own forward ("stock"); returns how many
    modules it applies to."""
    from transformers.models.falcon.modeling_falcon import FalconDecoderLayer, FalconModel

    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention mode {mode!r}: want one of {', '.join(ATTENTION_MODES)}")

    def set_forward(m: nn.Module, patched: Callable[..., Any] | None) -> None:
        """m's forward: `patched` bound to m, or (None) the module's own, which is kept on first use."""
        if "_stock_forward" not in vars(m):
            m._stock_forward = m.forward
        m.forward = m._stock_forward if patched is None else patched.__get__(m)  # type: ignore[method-assign]

    layers = [m for m in model.modules() if isinstance(m, FalconDecoderLayer)]
    attentions = mqa_attentions(model)
    trimmed = mode in TRIMMED_MODES
    final = None  # fused_model: the final norm the last layer's adds also compute, in a tuple (as _next_layer)
    for m in model.modules():  # fused_model: the rotary table, and the final norm taken from the last layer's adds
        if isinstance(m, FalconModel):
            set_forward(m.rotary_emb, table_rotary_forward if trimmed else None)
            set_forward(m.ln_f, final_norm_forward if trimmed else None)
            vars(m.ln_f).pop("_pre_norm", None)
            if trimmed and layers and m.h[-1] is layers[-1]:
                final = (m.ln_f,)
            # fused_step: the model's decode forward without positions or mask, where every layer is a parallel-
            # attention one (fused_decoder_forward) with a multi-query rotary attention (mqa_decode_forward)
            own = [a for a in attentions if any(a is blk.self_attention for blk in m.h)]
            step = (
                mode == "fused_step"
                and len(own) == len(m.h)
                and m.config.parallel_attn
                and not m.config.new_decoder_architecture
            )
            set_forward(m, step_model_forward if step else None)
            m._step_layers = len(m.h) if step else None
    for i, m in enumerate(layers):  # fused_layer: the layer's norm and residual adds too, and the next one's norm
        set_forward(m, fused_decoder_forward if mode in FUSED_LAYER_MODES else None)
        m._side_stream, m._side_mlp = None, False  # one stream (set_branch_streams: two)
        # the next layer in a tuple, not an attribute of its own (that would make it a submodule of this one)
        m._next_layer = (layers[i + 1],) if mode in FUSED_LAYER_MODES and i + 1 < len(layers) else None
        m._final_norm = final if i + 1 == len(layers) else None
        vars(m).pop("_pre_norm", None)
    for m in attentions:
        m._mqa_kernel = MQA_KERNELS.get(mode, "sdpa")
        m._gemv = mode in GEMV_MODES
        if mode in ("mqa_fused", *FUSED_LAYER_MODES) and "_rope_ticket" not in vars(m):  # rotary scratch
            m._rope_ticket = attention_ticket(m.num_heads, 64, m.query_key_value.weight.device)
        set_forward(m, None if mode == "stock" else mqa_decode_forward)
    return len(attentions)


def float32_weights(model: nn.Module) -> Callable[[], None]:
    """Put every floating parameter and buffer of the model in float32 (copies; the originals are kept, not
    cast back) and return the function that puts the originals back, tensor for tensor."""
    saved: list[tuple[nn.Module, str, bool, torch.Tensor]] = []
    for m in model.modules():
        for is_param, table in ((True, m._parameters), (False, m._buffers)):
            for name, t in table.items():
                if t is not None and t.is_floating_point() and t.dtype != torch.float32:
                    saved.append((m, name, is_param, t))
    for m, name, is_param, t in saved:
        if is_param:
            m._parameters[name] = nn.Parameter(t.detach().float(), requires_grad=False)
        else:
            m._buffers[name] = t.float()

    def restore() -> None:
        for m, name, is_param, t in saved:
            (m._parameters if is_param else m._buffers)[name] = t

    return restore


def rel_max_diff(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest absolute difference relative to the reference's largest magnitude."""
    return float((a.float() - ref.float()).abs().max() / ref.float().abs().max())


# --attention auto in bf16 / fp16: a multi-query path's largest logit error against float32 may be at most this
# many times HF's own path's (the paths round differently; none of them is the reference)
ATTENTION_ERR_RATIO = 1.5


@torch.no_grad()
def attention_ab(model: nn.Module, prompts: torch.Tensor, args: argparse.Namespace, use_graph: bool) -> dict[str, Any]:
    """The decode step's attention, HF's own ("stock") against the multi-query paths ("mqa": SDPA, "mqa_triton":
    tardis::mqa_decode_attention), on the same model: the logits of one decode step after a prefill, and a batch-1
    decode with every FFN zeroed (all but the FFNs: the attention's share) timed each way; `choice` is the fastest
    correct one (stock where the multi-query paths do not apply). Correct: in float32 a path's logits agree with
    stock's (relative 1e-4); a bf16 / fp16 model is also run with float32 copies of its weights, the reference,
    and a path's logit error against it must be at most ATTENTION_ERR_RATIO times stock's (the paths round
    differently, so their bf16 logits differ by more than either's own error). A path that fails is left out,
    its error recorded under `errors`. The model is left with the choice in force."""
    if set_decode_attention(model, "stock") == 0:
        return {"applies": False, "choice": "stock"}
    device = next(model.parameters()).device
    low = next(model.parameters()).dtype in (torch.bfloat16, torch.float16)
    ids = prompts[:1].to(device)
    out: dict[str, Any] = {"applies": True, "errors": {}}

    def step_logits(mode: str, first: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The decode step's logits after a prefill of ids, the step's token `first` (None: the prefill's
        argmax, returned too, so every run decodes the same token)."""
        set_decode_attention(model, mode)
        cache = transformers.StaticCache(config=model.config, max_cache_len=ids.shape[1] + 8)
        pre = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        tok = pre if first is None else first
        return model(input_ids=tok, past_key_values=cache, use_cache=True).logits.float(), tok

    def zero_ffn_step_ms(mode: str) -> float:
        set_decode_attention(model, mode)
        z = with_zero_ffns(model, lambda: time_decode(model, ids, args.new_tokens, args.repeats, use_graph))
        return z["step_ms"]

    def attempt(mode: str, fn: Callable[[], Any]) -> Any:
        """fn() for a multi-query path; None, its error recorded, where it fails now or failed before (such a
        path is left out: it must not lose the run)."""
        if mode in out["errors"]:
            return None
        try:
            return fn()
        except Exception as e:
            traceback.print_exc()
            out["errors"][mode] = repr(e)[:400]
            return None

    modes = ATTENTION_MODES[1:]
    stock, first = step_logits("stock", None)
    logits = {m: attempt(m, lambda m=m: step_logits(m, first)[0]) for m in modes}
    if low:  # one float32 copy of the weights for every path's reference run
        restore = float32_weights(model)
        try:
            ref = step_logits("stock", first)[0]
            ref32 = {m: attempt(m, lambda m=m: step_logits(m, first)[0]) for m in modes}
        finally:
            restore()
        out["stock_err_vs_float32"] = rel_max_diff(stock, ref)
    out["stock_zero_ffn_step_ms"] = zero_ffn_step_ms("stock")
    candidates = ["stock"]
    for mode in modes:
        if mode in out["errors"]:
            continue
        out[f"{mode}_logits_max_rel_diff"] = rel_max_diff(logits[mode], stock)
        if not low:
            ok = out[f"{mode}_logits_max_rel_diff"] < 1e-4
        else:
            out[f"{mode}_float32_max_rel_diff"] = rel_max_diff(ref32[mode], ref)
            out[f"{mode}_err_vs_float32"] = rel_max_diff(logits[mode], ref)
            ok = out[f"{mode}_float32_max_rel_diff"] < 1e-4 and (
                out[f"{mode}_err_vs_float32"] <= ATTENTION_ERR_RATIO * out["stock_err_vs_float32"]
            )
        out[f"{mode}_correct"] = ok
        step_ms = attempt(mode, lambda m=mode: zero_ffn_step_ms(m))
        if step_ms is None:
            continue
        out[f"{mode}_zero_ffn_step_ms"] = step_ms
        if ok:
            candidates.append(mode)
    out["choice"] = min(candidates, key=lambda m: out[f"{m}_zero_ffn_step_ms"])
    set_decode_attention(model, out["choice"])
    return out


@torch.no_grad()
def gemv_ab(model: nn.Module, args: argparse.Namespace, use_graph: bool) -> dict[str, Any]:
    """--gemv auto: `tardis::decode_linear`'s candidate launches (gemv_triton.GEMV_CANDIDATES; no-pdl: those without
    programmatic dependent launch) and torch's linear (the modules themselves: cuBLAS) on the model's own attention
    projections at batch 1, each timed as one graph over every layer's query-key-value and dense projection (their
    weights stream from memory: a single matrix would sit in L2), in µs per layer (both projections). A launch is
    correct when its outputs are within 1e-2 (relative to the largest magnitude) of float32 sums of the same bf16
    products on every layer; the fastest correct one becomes GEMV_LAUNCH, the launch mode fused_gemv then runs (which
    attention_ab times against the others). Only on CUDA with graphs and a multi-query Falcon, and where --attention
    may run fused_gemv."""
    device = next(model.parameters()).device
    mods = [lin for m in mqa_attentions(model) for lin in (m.query_key_value, m.dense)]
    wanted = args.gemv != "off" and args.attention in ("auto", *GEMV_MODES)  # another mode runs no decode_linear
    out: dict[str, Any] = {"applies": bool(mods) and device.type == "cuda" and use_graph and wanted}
    if not out["applies"]:
        return out
    from tardis.kernels import gemv_triton  # Triton only where there is a GPU

    g = torch.Generator(device=device).manual_seed(args.seed)
    xs = [torch.randn(1, 1, m.weight.shape[1], generator=g, device=device, dtype=m.weight.dtype) for m in mods]
    refs = [(x.float() @ m.weight.float().T).squeeze(1) for m, x in zip(mods, xs, strict=True)]
    n_layers = len(mods) // 2
    out["linear_us"] = time_ffn_layers(mods, xs, True, args.repeats) * 2  # per layer: both projections

    def measure() -> tuple[float, float]:
        err = max(rel_max_diff(decode_linear(x, m.weight, m.bias).squeeze(1), r)
                  for m, x, r in zip(mods, xs, refs, strict=True))  # fmt: skip
        calls = [lambda x, m=m: decode_linear(x, m.weight, m.bias) for m in mods]
        return err, time_ffn_layers(calls, xs, True, args.repeats) * 2

    candidates = [c for c in gemv_triton.GEMV_CANDIDATES if args.gemv != "no-pdl" or not c.get("pdl")]
    out.update(fastest_correct_launch(gemv_triton, "GEMV_LAUNCH", candidates, measure, 1e-2))
    if "best_us" in out:
        out["speedup_vs_linear"] = out["linear_us"] / out["best_us"]
    out["layers"] = n_layers
    return out


def fastest_correct_launch(
    module: Any, name: str, candidates: Iterable[dict], measure: Callable[[], tuple[float, float]], tol: float
) -> dict[str, Any]:
    """A launch A/B: each launch of `candidates` put in force as `module.<name>` and measured (measure() → its
    largest relative error and its µs); correct when the error is under `tol`. The fastest correct one is left in
    force (none correct: the launch that was). Returns `candidates` (per launch: max_rel_err, correct, us, or the
    error of one that raised, which is left out, not the run), `default` (the launch before) and `best`, `best_us`."""
    default = dict(getattr(module, name))
    rows: list[dict[str, Any]] = []
    for launch in candidates:
        row: dict[str, Any] = {"launch": dict(launch)}
        try:
            setattr(module, name, dict(launch))
            err, us = measure()
            row.update(max_rel_err=err, correct=err < tol, us=us)
        except Exception as e:  # a launch that fails (a compile, say) is left out, not the run
            traceback.print_exc()
            row["error"] = repr(e)[:400]
        rows.append(row)
    setattr(module, name, default)
    out: dict[str, Any] = {"candidates": rows, "default": default}
    ok = [r for r in rows if r.get("correct")]
    if ok:
        best = min(ok, key=lambda r: r["us"])
        setattr(module, name, dict(best["launch"]))
        out.update(best=best["launch"], best_us=best["us"])
    return out


# the --attention values that may run the tardis attention ops (every mode whose kernel is not SDPA's)
ATTENTION_KERNEL_MODES = ("auto", *(m for m, k in MQA_KERNELS.items() if k != "sdpa"))


@torch.no_grad()
def attention_kernel_ab(model: nn.Module, args: argparse.Namespace, use_graph: bool) -> dict[str, Any]:
    """--attention-kernel auto: the decode attention's candidate launches (attention_triton.ATTENTION_CANDIDATES: the
    split cache, its block programs taking all query rows or row groups, merged by the merge kernel or by the block
    kernel itself; and the one-launch rows kernel) on the model's own shapes at batch 1, each
    timed as one graph of `tardis::mqa_rope_attention` over every layer's own static cache (--prompt-len +
    --new-tokens + 4 slots, the write position half-way through the decode; the graph puts the positions back
    first), in µs per layer. A launch is correct when every layer's output is within 2e-2 (relative to the largest
    magnitude) of the float64 reference; the fastest correct one becomes ATTENTION_LAUNCH, which every mode using
    the tardis attention ops then runs (attention_ab times the modes after it). Where --attention may pick
    fused_step (auto, or fused_step by name) the op runs as that mode runs it (by_length: the rotary tables read at
    the write position, the slots past it masked and not loaded), else with the step's rows and a bool mask. Only on
    CUDA with graphs and a multi-query Falcon, and where --attention may run those ops."""
    attentions = mqa_attentions(model)
    device = next(model.parameters()).device
    wanted = args.attention_kernel == "auto" and args.attention in ATTENTION_KERNEL_MODES
    out: dict[str, Any] = {"applies": bool(attentions) and device.type == "cuda" and use_graph and wanted}
    if not out["applies"]:
        return out
    from tardis.kernels import attention_triton  # Triton only where there is a GPU

    h, hd = attentions[0].num_heads, attentions[0].head_dim
    dtype = attentions[0].query_key_value.weight.dtype
    n_slots = args.prompt_len + args.new_tokens + 4
    pos = args.prompt_len + args.new_tokens // 2
    g = torch.Generator(device=device).manual_seed(args.seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device, dtype=torch.float32)

    by_length = args.attention in ("auto", "fused_step")
    inv = 1 / (10000 ** (torch.arange(0, hd, 2, device=device, dtype=torch.float64) / hd))
    ang = torch.arange(n_slots, device=device, dtype=torch.float64)[:, None] * inv[None, :]
    cos_t, sin_t = (t(torch.cat([ang, ang], -1)).to(dtype) for t in (torch.cos, torch.sin))  # every slot's row
    cos, sin = cos_t[pos : pos + 1], sin_t[pos : pos + 1]  # the step's rows (the reference's, and without by_length)
    mask = (torch.arange(n_slots, device=device) <= pos)[None]
    lens = torch.full((len(attentions),), pos, device=device, dtype=torch.long)
    layers = [
        (rand(1, (h + 2) * hd).to(dtype), rand(1, 1, n_slots, hd).to(dtype), rand(1, 1, n_slots, hd).to(dtype),
         attention_ticket(h, 1, device))
        for _ in attentions
    ]  # fmt: skip
    refs = []
    for qkv, keys, values, _ in layers:
        k64, v64 = keys.double().cpu(), values.double().cpu()
        q64 = rope_kv_reference(qkv.double().cpu(), cos.double().cpu(), sin.double().cpu(), k64, v64,
                                torch.tensor(pos), h)  # fmt: skip
        refs.append(mqa_decode_reference(q64, k64[:, 0], v64[:, 0], mask.cpu(), 1 / math.sqrt(hd)))

    # as the op runs in fused_step (the tables, no mask) or in the other modes (the step's rows, the mask)
    op_cos, op_sin, op_mask = (cos_t, sin_t, None) if by_length else (cos, sin, mask)

    def body() -> list[torch.Tensor]:
        lens.fill_(pos)
        return [
            mqa_rope_attention(qkv, op_cos, op_sin, keys, values, lens[i], ticket, h, op_mask, by_length=by_length)
            for i, (qkv, keys, values, ticket) in enumerate(layers)
        ]

    def measure() -> tuple[float, float]:
        err = max(rel_max_diff(o.double().cpu(), r) for o, r in zip(body(), refs, strict=True))
        return err, time_ffn_layers([lambda _: body()], [lens], True, args.repeats) / len(layers)  # µs per layer

    launches = attention_triton.ATTENTION_CANDIDATES
    out.update(fastest_correct_launch(attention_triton, "ATTENTION_LAUNCH", launches, measure, 2e-2))
    out.update(slots=n_slots, heads=h, layers=len(layers), by_length=by_length)
    # against the split cache with all rows in one block program (v25's launch)
    whole = [r for r in out["candidates"] if r.get("correct") and r["launch"] == {"rows": 0}]
    if whole and "best_us" in out:
        out["speedup_vs_one_row_group"] = whole[0]["us"] / out["best_us"]
    return out


@torch.no_grad()
def branch_streams_ab(model: nn.Module, prompts: torch.Tensor, args: argparse.Namespace, use_graph: bool) -> dict:
    """--branch-streams: one stream, or the attention and the MLP branch of each fused decoder layer on two
    (set_branch_streams), with --branch-priority's branch preferred by the scheduler. auto: the dense model's
    batch-1 decode timed in every configuration (STREAM_CONFIGS; with --branch-priority set, two streams with that
    priority only), and the fastest kept for the dense model (tardis_streams_ab makes the TARDIS model's own
    choice); the agreement of their greedy tokens with one stream's is recorded (the same kernels on either stream,
    so they should agree). Where two streams do not apply (another attention mode, the CPU) the choice is 1. The
    model is left with the choice (`choice`, `priority`) in force."""
    applies = set_branch_streams(model, 2) > 0
    set_branch_streams(model, 1)
    out: dict[str, Any] = {"applies": applies, "choice": 1}
    if not applies or args.branch_streams == "1":
        return out
    fixed = None if args.branch_priority == "auto" else args.branch_priority
    out["priority"] = "none"
    if args.branch_streams == "2":
        out["choice"], out["priority"] = 2, fixed or "none"
        set_branch_streams(model, 2, out["priority"])
        return out
    configs = [(n, p) for n, p in STREAM_CONFIGS if fixed is None or n == 1 or p == fixed]
    tokens, times = {}, {}
    for (n, p), r in time_stream_configs(model, prompts, args, use_graph, configs).items():
        key = stream_key(n, p)
        if isinstance(r, Exception):
            out[f"error_{key}"] = repr(r)[:400]
            continue
        out[f"dense_step_ms_{key}"] = times[n, p] = r["step_ms"]
        out[f"graph_error_{key}"] = r["graph_error"]
        tokens[key] = r["tokens"]
        if "1" in tokens and key != "1":
            out[f"dense_token_agreement_{key}"] = float((tokens["1"] == tokens[key]).float().mean())
    if times:
        out["choice"], out["priority"] = min(times, key=lambda c: times[c])
    set_branch_streams(model, out["choice"], out["priority"])
    return out


def time_stream_configs(
    model: nn.Module, prompts: torch.Tensor, args: argparse.Namespace, use_graph: bool, configs: list[tuple[int, str]]
) -> dict[tuple[int, str], Any]:
    """Each (stream count, priority) configuration's batch-1 decode: time_decode's result, or the exception it raised
    (printed; one configuration failing must not lose the run). The model is left in the last configuration."""
    out: dict[tuple[int, str], Any] = {}
    for n, p in configs:
        try:
            set_branch_streams(model, n, p)
            out[n, p] = time_decode(model, prompts[:1], args.new_tokens, args.repeats, use_graph)
        except Exception as e:
            traceback.print_exc()
            out[n, p] = e
    return out


def stream_choice(streams: dict[str, Any], prefix: str = "") -> tuple[int, str]:
    """The (stream count, priority) branch_streams_ab chose for the dense model (prefix "") or tardis_streams_ab for
    the TARDIS model ("tardis_"; the dense model's before it ran)."""
    n = streams.get(f"{prefix}choice", streams["choice"])
    return n, streams.get(f"{prefix}priority", streams.get("priority", "none"))


def tardis_streams_ab(
    model: nn.Module, prompts: torch.Tensor, args: argparse.Namespace, use_graph: bool, streams: dict[str, Any],
    errors: list[str],
) -> None:  # fmt: skip
    """The TARDIS model's batch-1 decode timed in each branch-stream configuration the dense model's A/B timed (with
    a fixed one: that and one stream), as `tardis_step_ms_<stream_key>` in `streams`. With --branch-streams auto the
    TARDIS model keeps its own fastest (`tardis_choice`, `tardis_priority`), as the dense model kept its own: each
    model at its best, so the choice cannot favour either; else the dense model's. Left in force."""
    if not streams.get("applies"):
        return
    chosen = stream_choice(streams)
    configs = [c for c in STREAM_CONFIGS if f"dense_step_ms_{stream_key(*c)}" in streams]
    times = {}
    timed = time_stream_configs(model, prompts, args, use_graph, configs or sorted({(1, "none"), (2, chosen[1])}))
    for (n, p), r in timed.items():
        key = stream_key(n, p)
        if isinstance(r, Exception):
            errors.append(f"tardis B=1 with branch streams {key}: {r!r}")
            continue
        streams[f"tardis_step_ms_{key}"] = times[n, p] = r["step_ms"]
    best = min(times, key=lambda c: times[c]) if args.branch_streams == "auto" and times else chosen
    streams["tardis_choice"], streams["tardis_priority"] = best
    set_branch_streams(model, *best)


# how a batch-1 TARDIS decode step's fused decoder layers take the op's output: rounded to the model's dtype by the
# op's finish kernel, or the float32 sums handed to tardis::add3_layer_norm (no finish kernel: a launch a layer
# fewer), or that and the op's int8 x words written by the previous layer's norm (tardis::add3_layer_norm_i8: no int8
# x kernel either, one more launch fewer; the first layer, normed on its own, keeps it)
FFN_OUTPUTS = ("finish", "fp32", "fp32_xq")
# ffn_output_ab: the float32 output against the finish kernel's, relative to its largest magnitude (one bf16
# rounding is at most 2^-9 of a value; sums in another order differ by far less)
FFN_OUTPUT_TOL = 1e-2


def set_ffn_output(modules: list[nn.Module], mode: str) -> None:
    """Every TardisFFN with a kernel pack in the float32-output mode ("fp32", "fp32_xq") or not ("finish"), and
    taking its int8 x words from the previous layer's norm ("fp32_xq") or not; between graphs only."""
    if mode not in FFN_OUTPUTS:
        raise ValueError(f"FFN output {mode!r}: want one of {', '.join(FFN_OUTPUTS)}")
    for m in modules:
        if getattr(m, "kernel_pack", None) is not None:
            set_fp32_out(m, mode != "finish")
            m._norm_int8_x = mode == "fp32_xq"


@torch.no_grad()
def ffn_output_ab(
    model: nn.Module, modules: list[nn.Module], prompts: torch.Tensor, args: argparse.Namespace, use_graph: bool,
    timed: list[int], xs: list[torch.Tensor], limits: list[int],
) -> dict[str, Any]:  # fmt: skip
    """--ffn-output for the TARDIS model's batch-1 rows (FFN_OUTPUTS; only where the fused decoder layers run and the
    op has kernel packs). auto: first the op on the layers `timed` at their batch-1 inputs `xs`, three calls in each
    float32-output mode (a call skips the finish kernel and leaves the list count for the next call to zero: the
    int8 x kernel's, or in "fp32_xq" the norm's, here a two-word memset before each call, with the words packed by
    layout.pack_x_i8) against one with the finish kernel: a mode is correct where its last call's float32 output is
    within FFN_OUTPUT_TOL of the finish kernel's bf16 one; then the batch-1 decode timed in every mode (the TARDIS
    model's branch streams in force), the fastest correct one kept. The model is left in "finish"; the caller puts
    the choice in force for batch-1 rows."""
    packed = any(getattr(m, "kernel_pack", None) is not None for m in modules)  # CUDA only (hf.install)
    out: dict[str, Any] = {"applies": packed and fused_layers(model) > 0, "choice": "finish"}
    if not out["applies"] or args.ffn_output == "finish":
        return out
    if args.ffn_output != "auto":
        out["choice"] = args.ffn_output
        return out
    mods = [modules[i] for i in timed]
    try:
        with lifted_policy(model, modules, limits):
            set_ffn_output(modules, "finish")
            ref = [m(x, fp32_ok=True).float() for m, x in zip(mods, xs, strict=True)]
            modes = ["fp32"]
            layouts = [m.int8_x_layout(x.numel() // x.shape[-1]) for m, x in zip(mods, xs, strict=True)]
            if all(lay is not None for lay in layouts):
                modes.append("fp32_xq")
            for mode in modes:
                set_ffn_output(modules, mode)
                for _ in range(3):
                    got = []
                    for m, x, lay in zip(mods, xs, layouts, strict=True):
                        x_i8 = None
                        if mode == "fp32_xq":  # what add3_layer_norm_i8 writes and zeroes before the call
                            x_i8 = pack_x_i8(x.reshape(-1, x.shape[-1]), *lay)
                            zero_counters(m.kernel_pack.workspace)
                        got.append(m(x, fp32_ok=True, x_i8=x_i8))
                err = max(rel_max_diff(g, r) for g, r in zip(got, ref, strict=True))
                key = "" if mode == "fp32" else "xq_"
                out[f"{key}fp32_dtype"] = str(got[0].dtype).removeprefix("torch.")
                out[f"{key}max_rel_err"] = err
                out[f"{key}correct"] = err < FFN_OUTPUT_TOL and got[0].dtype == torch.float32
        tokens = {}
        for mode in ["finish", *modes]:
            set_ffn_output(modules, mode)
            r = time_decode(model, prompts[:1], args.new_tokens, args.repeats, use_graph)
            out[f"{mode}_step_ms"], tokens[mode] = r["step_ms"], r["tokens"]
        out["token_agreement"] = float((tokens["fp32"] == tokens["finish"]).float().mean())
        if "fp32_xq" in tokens:  # the same x words as the int8 x kernel's: the same tokens but for sums' order
            out["xq_token_agreement"] = float((tokens["fp32_xq"] == tokens["fp32"]).float().mean())
        ok = ["finish"] + [m for m in modes if out[f"{'' if m == 'fp32' else 'xq_'}correct"]]
        out["choice"] = min(ok, key=lambda m: out[f"{m}_step_ms"])
    except Exception as e:  # a float32 output failing must not lose the run: the finish kernel stays
        traceback.print_exc()
        out["error"] = repr(e)[:400]
        out["choice"] = "finish"
    finally:
        set_ffn_output(modules, "finish")
        hf.reset_counters(model)  # the op calls and timed decodes above are not the rows' decode steps
    return out


# ---------------------------------------------------------------------------------------------- text


class VocabMappedTokenizer:
    """The project tokenizer with ids mapped into a model vocabulary of `vocab` ids (id mod vocab)."""

    def __init__(self, tokenizer: Any, vocab: int):
        self.tokenizer = tokenizer
        self.vocab = vocab
        eos = getattr(tokenizer, "eos_token_id", None)
        self.eos_token_id = None if eos is None else int(eos) % vocab

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        """Token ids of `text`, mapped into the vocabulary."""
        ids = self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
        return {"input_ids": [int(i) % self.vocab for i in ids]}


def prompt_rows(tokenizer: Any, texts: list[str], batch: int, length: int) -> torch.Tensor:
    """[batch, length] token ids: consecutive windows of the joined held-out text."""
    ids = join_tokens(tokenizer, texts, batch * length)
    if len(ids) < batch * length:
        raise ValueError(f"held-out text gives {len(ids)} tokens, prompts need {batch * length}")
    return torch.tensor(ids[: batch * length], dtype=torch.long).view(batch, length)


# ---------------------------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    """Wait for the device (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Median wall time of `fn` over `repeats` runs, synchronizing the device around each."""
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Replayable:
    """`fn` captured as one CUDA graph (after a warm-up on the capture stream) when `use_graph`, else run eagerly.

    `rewind` runs before each warm-up step, before the capture and after it (warm-up runs advance the
    state the step mutates, e.g. the static cache's position counter), so replays start from a known state.
    """

    def __init__(self, fn: Callable[[], None], use_graph: bool, rewind: Callable[[], None], warmup: int = 2):
        self.fn = fn
        self.graph: torch.cuda.CUDAGraph | None = None
        if not use_graph:
            return
        stream = capture_stream()  # warm-up and capture on one stream that no side stream is (side_stream)
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                rewind()
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        rewind()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            fn()
        self.graph = graph
        rewind()

    def __call__(self) -> None:
        """Replay the graph (or run the step)."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self.fn()


def rewind_cache(cache: Any, position: int) -> None:
    """Set every static-cache layer's write position (a device counter in transformers 5.x) to `position`."""
    for layer in cache.layers:
        counter = getattr(layer, "cumulative_length", None)
        if isinstance(counter, torch.Tensor):
            counter.fill_(position)
        else:
            layer.cumulative_length = position


def profile_steps(replay: Callable[[], None], steps: int = 16, top: int = 30) -> dict[str, Any]:
    """The GPU kernels of `steps` decode steps (CUDA graph replays included), from the profiler's CUDA
    activity: per kernel name its launches and device µs per step, the `top` longest; and the sum of every
    kernel's time per step (the rest of the step's wall time is gaps between kernels)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            replay()
        torch.cuda.synchronize()
    wall_us = 1e6 * (time.perf_counter() - t0) / steps
    rows = []
    for e in prof.key_averages():
        us = float(getattr(e, "device_time_total", 0.0) or getattr(e, "cuda_time_total", 0.0))
        if us > 0:
            rows.append({"kernel": e.key[:160], "calls_per_step": e.count / steps, "us_per_step": us / steps})
    rows.sort(key=lambda r: -r["us_per_step"])
    return {
        "steps": steps,
        "wall_us_per_step": wall_us,  # under the profiler: a little slower than the timed steps
        "kernel_us_per_step": sum(r["us_per_step"] for r in rows),
        "launches_per_step": sum(r["calls_per_step"] for r in rows),
        "top": rows[:top],
    }


def print_kernels(title: str, kernels: dict[str, Any] | None, top: int = 8) -> None:
    """A profiled step's kernel time against its wall time, and its longest kernels (nothing without a profile)."""
    if not kernels:
        return
    print(f"  {title} kernels: {kernels['kernel_us_per_step']:.0f} of {kernels['wall_us_per_step']:.0f} us a step "
          f"in {kernels['launches_per_step']:.0f} launches", flush=True)  # fmt: skip
    for k in kernels["top"][:top]:
        print(f"    {k['us_per_step']:8.1f} us {k['calls_per_step']:5.0f}x  {k['kernel'][:90]}", flush=True)


# the decode loop's writes after the LM head (greedy_ab): the torch ops, or (kernel) tardis::greedy_step
GREEDY = {"kernel": False}


def greedy_writes(logits: torch.Tensor, ids: torch.Tensor, tokens: torch.Tensor, step: torch.Tensor) -> None:
    """A greedy decode step's writes from the last position's logits [B, V]: each row's argmax as the next input
    ids [B, 1] and into tokens [B, T] at column min(step, T − 1), then step + 1; the torch ops, or with
    GREEDY["kernel"] the same in tardis::greedy_step (two launches instead of five)."""
    (greedy_step if GREEDY["kernel"] else greedy_step_reference)(logits, ids, tokens, step)


@torch.no_grad()
def greedy_ab(device: torch.device, dtype: torch.dtype, vocab: int, batches: list[int], use_graph: bool) -> dict:
    """--greedy auto (CUDA graphs): tardis::greedy_step against the torch ops it replaces on random logits of the
    model's vocabulary and dtype (with ties and a NaN row): the same ids, tokens and step at every batch of the run,
    and each way's µs at batch 1 (one graph of 64 calls, the median of 5 replays). The kernel is used for every
    timed decode step (dense and TARDIS alike) when it is correct and faster."""
    GREEDY["kernel"] = False
    out: dict[str, Any] = {"applies": device.type == "cuda" and use_graph, "kernel": False}
    if not out["applies"]:
        return out
    g = torch.Generator().manual_seed(0)

    def run(kernel: bool, logits: torch.Tensor, step0: int) -> tuple[torch.Tensor, ...]:
        GREEDY["kernel"] = kernel
        b = logits.shape[0]
        ids, tokens = (
            torch.zeros(b, 1, dtype=torch.long, device=device),
            torch.zeros(b, 4, dtype=torch.long, device=device),
        )
        step = torch.tensor([step0], device=device)
        greedy_writes(logits, ids, tokens, step)
        return ids, tokens, step

    try:
        for b in sorted(set(batches)):
            logits = torch.randn(b, 2, vocab, generator=g).to(device=device, dtype=dtype)
            logits[0, -1, [vocab - 1, vocab // 3]] = 1e4  # a tie: the first index wins
            if b > 1:
                logits[1, -1, [vocab // 2, 3]] = float("nan")  # a NaN wins, the first of them
            for step0 in (0, 7):
                want, got = run(False, logits[:, -1], step0), run(True, logits[:, -1], step0)
                if not all(torch.equal(a, c) for a, c in zip(want, got, strict=True)):
                    out["error"] = (
                        f"batch {b}, step {step0}: ids {got[0].flatten().tolist()} != {want[0].flatten().tolist()}"
                    )
                    GREEDY["kernel"] = False
                    return out
        logits = torch.randn(1, vocab, generator=g).to(device=device, dtype=dtype)
        ids, tokens = (
            torch.zeros(1, 1, dtype=torch.long, device=device),
            torch.zeros(1, 64, dtype=torch.long, device=device),
        )
        step = torch.zeros(1, dtype=torch.long, device=device)
        for kernel in (False, True):
            GREEDY["kernel"] = kernel
            replay = Replayable(lambda: [greedy_writes(logits, ids, tokens, step) for _ in range(64)], True, step.zero_)
            out[f"{'kernel' if kernel else 'torch'}_us"] = 1e6 * median_seconds(replay, device, 5) / 64
    except Exception as e:  # the kernel must not lose the run: the torch ops stay
        traceback.print_exc()
        out["error"] = repr(e)[:400]
        GREEDY["kernel"] = False
        return out
    out["kernel"] = GREEDY["kernel"] = out["kernel_us"] < out["torch_us"]
    return out


@torch.no_grad()
def time_decode(
    model: nn.Module,
    prompts: torch.Tensor,
    new_tokens: int,
    repeats: int,
    use_graph: bool,
    compile_step: bool = False,
    profile: bool = False,
) -> dict[str, Any]:
    """Greedy decode of `new_tokens` steps after a prefill of `prompts` [B, P] with a static KV cache.

    Each decode step (input ids [B, 1] → logits → argmax → next input ids) is one CUDA graph replay
    when `use_graph`; with `compile_step` the step's forward is torch.compile'd first (inductor fuses
    the small attention/norm/cache kernels; the TARDIS op stays one opaque call), compiled during the
    warm-up before capture. Returns median prefill and decode seconds and the generated tokens [B, new_tokens];
    with `profile` (CUDA) also the step's kernels (profile_steps), taken after the timing.
    """
    device = next(model.parameters()).device
    ids = prompts.to(device)
    b, p = ids.shape
    cache = transformers.StaticCache(config=model.config, max_cache_len=p + new_tokens + 4)
    static_ids = torch.zeros(b, 1, dtype=torch.long, device=device)
    first = torch.zeros(b, 1, dtype=torch.long, device=device)
    tokens = torch.zeros(b, new_tokens, dtype=torch.long, device=device)
    step_idx = torch.zeros(1, dtype=torch.long, device=device)

    def prefill() -> None:
        rewind_cache(cache, 0)
        logits = model(input_ids=ids, past_key_values=cache, use_cache=True).logits
        first.copy_(logits[:, -1].argmax(-1, keepdim=True))

    if compile_step:  # dense, zero-FFN and TARDIS models at each batch are separate compilations
        for knob in ("cache_size_limit", "recompile_limit"):
            if hasattr(torch._dynamo.config, knob):
                setattr(torch._dynamo.config, knob, max(64, getattr(torch._dynamo.config, knob)))
    forward = torch.compile(model, dynamic=False) if compile_step else model

    def step() -> None:
        logits = forward(input_ids=static_ids, past_key_values=cache, use_cache=True).logits
        greedy_writes(logits[:, -1], static_ids, tokens, step_idx)

    def rewind() -> None:
        rewind_cache(cache, p)
        static_ids.copy_(first)
        step_idx.zero_()

    prefill()
    graph_error = None
    try:
        replay = Replayable(step, use_graph, rewind)
    except Exception as e:  # capture failed (a host sync in the step): time it eagerly and say why
        graph_error = repr(e)
        traceback.print_exc()
        torch.cuda.synchronize()
        prefill()
        replay = Replayable(step, False, rewind)

    def decode() -> None:
        rewind()
        for _ in range(new_tokens):
            replay()

    if replay.graph is None:
        decode()  # warm-up run (the graph path was warmed up before capture)
    prefill_s = median_seconds(prefill, device, repeats)
    decode_s = median_seconds(decode, device, repeats)
    out = tokens.cpu()
    kernels = None
    if profile and device.type == "cuda":
        rewind()  # no more steps than the cache has room for after the prompt
        kernels = profile_steps(replay, steps=min(16, new_tokens))
    return {
        "kernels": kernels,
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "step_ms": 1e3 * decode_s / new_tokens,
        "tok_s": b * new_tokens / decode_s,
        "tokens": out,
        "graph": replay.graph is not None,
        "graph_error": graph_error,
    }


class ZeroFFN(nn.Module):
    """Stand-in for an FFN that costs one memset: the output is zeros of the input's shape ([..., d])."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Zeros like x."""
        return torch.zeros_like(x)


def with_zero_ffns(model: nn.Module, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `run` with every FFN of the model replaced by ZeroFFN, then put the FFNs back."""
    sites = adapter_for(model).sites(model)
    originals = [model.get_submodule(s.name) for s in sites]
    try:
        for s in sites:
            set_submodule(model, s.name, ZeroFFN())
        return run()
    finally:
        for s, m in zip(sites, originals, strict=True):
            set_submodule(model, s.name, m)


@torch.no_grad()
def ffn_inputs(model: nn.Module, prompts: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
    """The real FFN inputs x [B, d] at each prompt's last position, for the given layer indices."""
    device = next(model.parameters()).device
    sites = adapter_for(model).sites(model)
    captured: dict[int, torch.Tensor] = {}

    def make(i: int) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            captured[i] = x[:, -1, :].detach().clone()

        return hook

    handles = [sites[i].input_module.register_forward_pre_hook(make(i), with_kwargs=True) for i in layers]
    try:
        model(input_ids=prompts.to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return captured


@torch.no_grad()
def time_ffn_layers(
    modules: list[nn.Module], xs: list[torch.Tensor], use_graph: bool, repeats: int, inner: int = 20
) -> float:
    """Microseconds per layer of calling each module on its input (one graph over all of them)."""
    device = xs[0].device

    def body() -> None:
        for m, x in zip(modules, xs, strict=True):
            m(x)

    replay = Replayable(body, use_graph, lambda: None)

    def run() -> None:
        for _ in range(inner):
            replay()

    run()
    return 1e6 * median_seconds(run, device, repeats) / (inner * len(modules))


def time_ffn_op(
    model: nn.Module, modules: list[nn.Module], timed: list[int], xs: list[torch.Tensor], use_graph: bool,
    repeats: int, limits: list[int],
) -> float:  # fmt: skip
    """Microseconds per layer of the TARDIS op itself (the decode policy lifted while timed) on the decode inputs
    `xs` of the layers `timed`; `limits`: every layer's decode limit, restored after."""
    with lifted_policy(model, modules, limits):
        return time_ffn_layers([modules[i] for i in timed], xs, use_graph, repeats)


@contextlib.contextmanager
def lifted_policy(model: nn.Module, modules: list[nn.Module], limits: list[int]) -> Iterator[None]:
    """Every layer runs the op at any batch inside (called directly, as decode steps); `limits` restored after."""
    for m in modules:
        m.is_prefill = False  # called directly (no model pre-hook): these are decode steps
    hf.set_decode_policy(model, 10**6)
    try:
        yield
    finally:
        for m, limit in zip(modules, limits, strict=True):
            m.max_tardis_tokens = limit


def launch_candidates(committed: dict[str, Any], chosen: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The decode-kernel launches launch_ab times: an ffn_bench run's choice (`chosen`, decode.launch_settings()
    keys), and that choice with its folded-row moves, its up/down launch or both at the committed values
    (`committed`: the settings before the choice was applied). A candidate equal to an earlier one is left out."""
    moves = {k: committed[k] for k in ("wf_up_frac", "wf_down_frac")}
    updown = {"updown_launch": committed["updown_launch"]}
    named = {
        "chosen": chosen,
        "committed_moves": chosen | moves,
        "committed_updown": chosen | updown,
        "committed_moves_updown": chosen | moves | updown,
    }
    out: dict[str, dict[str, Any]] = {}
    for name, c in named.items():
        if c not in out.values():
            out[name] = c
    return out


def launch_ab(
    model: nn.Module, modules: list[nn.Module], timed: list[int], xs: list[torch.Tensor], use_graph: bool,
    repeats: int, limits: list[int],
) -> dict[str, Any]:  # fmt: skip
    """Time launch_candidates(COMMITTED_LAUNCH, the launch in force) on the FFN layers `timed` at their decode inputs
    `xs` and keep the fastest whose output matches the first candidate's (relative difference < 1e-2: the same
    flags, sums in another order). An ffn_bench run chooses on random layers at fixed rates; the model's layers have
    their own ranges and rate."""
    from tardis.kernels import decode

    assert COMMITTED_LAUNCH is not None, "apply_kernel_launch records the committed launch first"
    cands = launch_candidates(COMMITTED_LAUNCH, decode.launch_settings())
    us: dict[str, float] = {}
    diff: dict[str, float] = {}
    errors: dict[str, str] = {}
    ref = None
    mods = [modules[i] for i in timed]
    with lifted_policy(model, modules, limits):
        for name, settings in cands.items():
            try:
                decode.apply_launch_settings(settings)
                t = time_ffn_layers(mods, xs, use_graph, repeats)
                with torch.no_grad():
                    y = mods[0](xs[0]).float()
            except Exception as e:  # a candidate that fails (a compile, say) is left out, not the run
                errors[name] = repr(e)[:400]
                traceback.print_exc()
                continue
            us[name] = t
            ref = y if ref is None else ref
            diff[name] = float((y - ref).norm() / ref.norm())
    hf.reset_counters(model)  # the timings' calls are not decode steps
    matching = [k for k in us if diff[k] < 1e-2]
    best = min(matching, key=lambda k: us[k]) if matching else "chosen"
    decode.apply_launch_settings(cands[best])
    return {
        "us": us, "rel_diff": diff, "errors": errors, "best": best, "candidates": cands,
        "applied": decode.launch_settings(),
    }  # fmt: skip


def amdahl(share: float | None, speedup: float | None) -> float | None:
    """End-to-end bound 1/((1−s) + s/S) for FFN share s and FFN speedup S (METHOD.md §5)."""
    if share is None or speedup is None or speedup <= 0:
        return None
    return 1.0 / ((1.0 - share) + share / speedup)


# ---------------------------------------------------------------------------------------------- counters


def decode_counters(model: nn.Module) -> dict[str, Any]:
    """Fallback rate flagged/(tokens·neurons) over the TARDIS steps; TARDIS and policy-dense steps per layer.

    Counted on the device over every decode step since the last reset (warm-up steps included).
    """
    rows = hf.counters(model)
    pairs = sum(r["tokens"] * r["neurons"] for r in rows)
    n = max(len(rows), 1)
    return {
        "fallback_rate": sum(r["flagged"] for r in rows) / pairs if pairs else None,
        "union_rate": sum(r["union"] for r in rows) / sum(r["steps"] * r["neurons"] for r in rows)
        if any(r["steps"] for r in rows)
        else None,
        "tardis_steps": sum(r["steps"] for r in rows) / n,
        "dense_steps": sum(r["dense_steps"] for r in rows) / n,
        "dense_step_fraction": sum(r["dense_steps"] for r in rows) / steps
        if (steps := sum(r["steps"] + r["dense_steps"] for r in rows))
        else None,
    }


# ---------------------------------------------------------------------------------------------- small models


@torch.no_grad()
def greedy(model: nn.Module, ids: torch.Tensor, new_tokens: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy tokens and the scores [V] the choice was made on (float32, CPU) at each generated position.

    Eager generate (DynamicCache): on CUDA the prompt runs dense and every new token takes the op path.
    """
    device = next(model.parameters()).device
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=torch.ones_like(ids).to(device),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        num_beams=1,
        output_scores=True,
        return_dict_in_generate=True,
    )
    toks = out.sequences[0, ids.shape[1] :].tolist()
    return toks, [sc[0].float().cpu() for sc in out.scores]


def first_divergence(a: list[int], b: list[int], logits_b: list[torch.Tensor]) -> dict[str, Any] | None:
    """Position of the first differing token and the logit margin top1 − top2 of `logits_b` there."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            top = logits_b[i].topk(2).values
            return {"position": i, "cpu_margin": float(top[0] - top[1]), "gpu_token": x, "cpu_token": y}
    return None


def i8_decode(device: torch.device, variant: Any) -> bool:
    """Whether batch-1 decode on `device` runs the int8-x predictor (the plane kernel's I8 launch and an
    int2 predictor whose groups fill whole 16-code words, as `DecodeLaunch` decides)."""
    from tardis.kernels.blocks import PLANE_BATCH, PLANE_LAUNCH
    from tardis.kernels.layout import fills_code_words

    cfg = variant.config
    return bool(
        device.type == "cuda" and PLANE_BATCH >= 1 and PLANE_LAUNCH[1].get("I8")
        and fills_code_words(cfg.predictor_bits, cfg.group_size)
    )  # fmt: skip


def compare_small_model(
    path: Path,
    prompts: list[str],
    *,
    fast_device: torch.device,
    fast_dtype: torch.dtype,
    new_tokens: int,
    calib: FoldConfig,
    calib_texts: list[str],
) -> dict[str, Any]:
    """Calibrate `path` (float32, on the fast device), then greedy-decode each prompt with TARDIS on the
    fast device (`fast_dtype`: the op path on CUDA) and on the CPU (float32 reference path); same for
    the dense models as a control. Where the GPU's batch-1 decode runs the int8-x predictor (I8), the
    TARDIS rows also compare with the CPU reference of that predictor (flag mode "predict_i8")."""
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    base = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).to(fast_device).eval()
    t0 = time.perf_counter()
    variant = calibrate(base, tok, calib_texts, calib)
    calib_s = time.perf_counter() - t0
    del base

    def build(device: torch.device, dtype: torch.dtype, tardis: bool) -> nn.Module:
        m = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device).eval()
        if tardis:
            hf.install(m, variant)
        return m

    rows: dict[str, list[dict[str, Any]]] = {"tardis": [], "dense": []}
    i8 = i8_decode(fast_device, variant)
    for kind in ("tardis", "dense"):
        fast = build(fast_device, fast_dtype, kind == "tardis")
        ref = build(torch.device("cpu"), torch.float32, kind == "tardis")
        ref_i8 = None
        if kind == "tardis" and i8:  # the CPU reference of the predictor the GPU runs: x rounded to int8
            ref_i8 = build(torch.device("cpu"), torch.float32, True)
            hf.set_flag_mode(ref_i8, "predict_i8")
        for k, text in enumerate(prompts):
            ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"][:32]], dtype=torch.long)
            hf.reset_counters(fast)
            fast_toks, _ = greedy(fast, ids, new_tokens)
            ref_toks, ref_logits = greedy(ref, ids, new_tokens)
            row: dict[str, Any] = {"prompt": k, "match": fast_toks == ref_toks}
            row["divergence"] = first_divergence(fast_toks, ref_toks, ref_logits)
            if ref_i8 is not None:
                i8_toks, i8_logits = greedy(ref_i8, ids, new_tokens)
                row["match_i8_reference"] = fast_toks == i8_toks
                row["divergence_i8_reference"] = first_divergence(fast_toks, i8_toks, i8_logits)
            if kind == "tardis":
                row["fast_counters"] = decode_counters(fast)
            rows[kind].append(row)
        del fast, ref, ref_i8
    report = variant.report()
    return {
        "model": path.name,
        "calibration_s": calib_s,
        "measured_fallback_rate": report.get("measured_fallback_rate"),
        "fast_device": str(fast_device),
        "fast_dtype": str(fast_dtype).removeprefix("torch."),
        "new_tokens": new_tokens,
        "tardis": rows["tardis"],
        "dense_control": rows["dense"],
    }


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (defaults: Falcon-7B shape on CUDA, the issue's decode settings)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="e2e_hf.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="model dtype (default: bfloat16 on CUDA, float32 on the CPU)")
    ap.add_argument("--checkpoint", default=None, help="a real checkpoint directory instead of random weights")
    ap.add_argument(
        "--calibration-only",
        action="store_true",
        help="build and calibrate the model, report its fallback rates, time nothing "
        "(e.g. a fallback estimate on the CPU)",
    )
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4544)
    ap.add_argument("--ffn", type=int, default=18176)
    ap.add_argument("--heads", type=int, default=71)
    ap.add_argument("--vocab", type=int, default=65024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calib-tokens", type=int, default=8192)
    ap.add_argument("--heldout-tokens", type=int, default=2048)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--coverage", type=float, default=FoldConfig().coverage, help="range coverage (fallback vs fit)")
    ap.add_argument("--predictor-bits", type=int, default=FoldConfig().predictor_bits, help="2, 3 or 4")
    ap.add_argument(
        "--band-tolerance",
        type=float,
        default=FoldConfig().band_tolerance,
        help="FoldConfig.band_tolerance: recompute only where the line misfits by more than this × its in-range worst",
    )
    ap.add_argument("--max-tardis-tokens", type=int, default=TARDIS_MAX_DECODE_TOKENS)
    ap.add_argument(
        "--policy-from",
        default=None,
        help="an ffn_bench.py JSON: each layer's decode limit from its union curve and that run's break-even",
    )
    ap.add_argument("--no-graph", action="store_true", help="eager decode steps even on CUDA")
    ap.add_argument(
        "--attention",
        choices=("auto", *ATTENTION_MODES),
        default="auto",
        help="the decode step's attention for both models: HF's own (stock), the multi-query rows as one head's "
        "queries through SDPA (mqa) or through tardis::mqa_decode_attention (mqa_triton; mqa_fused: with the rotary "
        "embedding and the static-cache write in tardis::rope_kv_write; fused_layer: those inside the attention's "
        "kernels (tardis::mqa_rope_attention), and the layer norm and the "
        "residual adds in tardis::layer_norm_rows and tardis::add3; fused_gemv: that with the attention's projections "
        "in tardis::decode_linear, the launch --gemv chose; fused_model: that with the model's rotary cos and sin "
        "looked up in a table and its final norm in the last layer's adds; fused_step: that with the model's decode "
        "forward skipping HF's positions and mask, the attention reading the rotary tables at the cache's write "
        "position and masking the slots past it), or the fastest of them "
        "at batch 1 with the FFNs zeroed, if its logits are as accurate as stock's (auto)",
    )
    ap.add_argument(
        "--greedy",
        choices=("auto", "torch", "kernel"),
        default="auto",
        help="the decode loop's writes after the LM head (each row's argmax as the next ids and into the output "
        "tokens, the step counter advanced), for every timed step of both models: auto (CUDA graphs) checks "
        "tardis::greedy_step against the torch ops on the model's vocabulary at each batch, times both at batch 1 "
        "and uses the kernel if it is correct and faster; torch or kernel by name (JSON: greedy)",
    )
    ap.add_argument(
        "--gemv",
        choices=("auto", "no-pdl", "off"),
        default="auto",
        help="auto (CUDA graphs): before the attention A/B, time tardis::decode_linear's candidate launches against "
        "torch's linear on every layer's attention projections at batch 1 (one graph over all of them), and give "
        "mode fused_gemv the fastest correct one; no-pdl: the same without the launches that use programmatic "
        "dependent launch; off: the default launch",
    )
    ap.add_argument(
        "--attention-kernel",
        choices=("auto", "committed"),
        default="auto",
        help="auto (CUDA graphs): before the attention A/B, time the tardis attention ops' candidate launches (the "
        "split cache: all query rows or row groups a block program, merged by a kernel of its own or by the block "
        "kernel; the one-launch rows kernel) on the model's shapes at batch 1, one graph over "
        "every layer's cache, and run the fastest correct one; committed: attention_triton's ATTENTION_LAUNCH",
    )
    ap.add_argument(
        "--branch-streams",
        choices=("auto", "1", "2"),
        default="auto",
        help="fused_layer / fused_gemv / fused_model / fused_step attention on CUDA: each decoder layer's attention "
        "branch on a second stream beside its MLP (2), one stream (1), or each model's fastest configuration at "
        "batch 1 (with --branch-priority's; auto)",
    )
    ap.add_argument(
        "--branch-priority",
        choices=("auto", *BRANCH_PRIORITIES),
        default="auto",
        help="with two branch streams, the branch the GPU's block scheduler prefers: none, the attention or the MLP "
        "(on a high-priority side stream; CUDA graphs keep the priority); auto: with --branch-streams auto, each "
        "timed for the dense model, else none",
    )
    ap.add_argument(
        "--ffn-output",
        choices=("auto", *FFN_OUTPUTS),
        default="auto",
        help="the TARDIS model's batch-1 rows (fused decoder layers, CUDA): the op's output rounded by its finish "
        "kernel (finish), or its float32 sums handed to tardis::add3_layer_norm, a launch a layer fewer (fp32), and "
        "also its int8 x words from the previous layer's tardis::add3_layer_norm_i8, one more fewer (fp32_xq), or "
        "the fastest correct one (auto: the op's outputs compared on the timed layers, then batch-1 decode timed "
        "each way)",
    )
    ap.add_argument(
        "--profile-kernels",
        action="store_true",
        help="batch 1 (CUDA): also record the kernels of 16 decode steps, dense and TARDIS (where the non-FFN time "
        "goes; rows' dense_kernels / tardis_kernels)",
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile each decode step's forward (dense and TARDIS alike) before the graph capture",
    )
    ap.add_argument(
        "--compile-batches",
        default="",
        help="batches timed a second time with torch.compile'd steps (rows marked compiled, batch '4c' in the "
        "table), after every --batches row and sharing its calibration",
    )
    ap.add_argument("--skip-small-models", action="store_true")
    ap.add_argument("--small-models", default=",".join(SMALL_MODELS))
    ap.add_argument("--small-new-tokens", type=int, default=32)
    ap.add_argument("--small-calib-tokens", type=int, default=8192)
    ap.add_argument(
        "--small-dtype",
        default="bfloat16,float32",
        help="dtypes of the small models on CUDA, each a run of its own (CPU side: float32)",
    )
    ap.add_argument(
        "--kernel-launch",
        default=None,
        help="a ffn_bench.py JSON whose plane_launch / small_updown_batch (its --plane-best choice) the op uses here",
    )
    return ap.parse_args(argv)


COMMITTED_LAUNCH: dict[str, Any] | None = None  # decode.launch_settings() before apply_kernel_launch


def apply_kernel_launch(path: str) -> dict[str, Any]:
    """Use the decode-kernel launch choices a ffn_bench.py run recorded (CUDA only); returns them. The settings
    they replace are kept in COMMITTED_LAUNCH (launch_ab times them too)."""
    global COMMITTED_LAUNCH
    from tardis.kernels import decode
    from tardis.kernels.blocks import PLANE_BASE, PLANE_LAUNCH, RETIRED_PLANE_KEYS

    COMMITTED_LAUNCH = decode.launch_settings()
    chosen = json.loads(Path(path).read_text())
    for n, cfg in chosen["plane_launch"].items():
        cfg = {k: v for k, v in cfg.items() if not (k in RETIRED_PLANE_KEYS and v == RETIRED_PLANE_KEYS[k])}
        unknown = sorted(set(cfg) - set(PLANE_BASE))
        if unknown:
            raise SystemExit(
                f"{path}: batch {n}'s plane launch has settings this kernel does not take: {', '.join(unknown)} "
                f"(known: {', '.join(PLANE_BASE)}); rerun ffn_bench.py --plane-best for a current launch"
            )
        PLANE_LAUNCH[int(n)] = PLANE_BASE | cfg
    try:  # the other launch choices, ffn_bench --updown-sweep's among them
        decode.apply_launch_settings(chosen)
    except ValueError as e:
        raise SystemExit(f"{path}: {e}") from None
    return {"plane_launch": chosen["plane_launch"]} | decode.launch_settings()


def environment(device: torch.device) -> dict[str, Any]:
    """GPU name, date and library versions."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def progress_printer(t0: float) -> Callable[[dict[str, Any]], None]:
    """A calibrate() event sink printing each finished pass and every 8th layer, with elapsed seconds."""

    def on_event(e: dict[str, Any]) -> None:
        done_pass = e["kind"] == "pass" and e["batch"] == e["batches"]
        layer = e["kind"] == "layer" and (e["layer"] % 8 == 7 or e["layer"] == e["layers"] - 1)
        if done_pass or layer:
            what = f"pass {e['pass']}" if done_pass else f"layer {e['layer'] + 1}/{e['layers']}"
            print(f"  calibrate: {what} done at {time.perf_counter() - t0:.1f} s", flush=True)

    return on_event


def calibration_summary(variant: Any, seconds: float) -> dict[str, Any]:
    """Held-out fallback rate and predictor recall (token-weighted over layers) from the variant's stats."""
    stats = variant.layer_stats
    held = sum(s["heldout_tokens"] * s["neurons"] for s in stats)

    def weighted(key: str) -> float | None:
        vals = [(s[key], s["heldout_tokens"] * s["neurons"]) for s in stats if s.get(key) is not None]
        return sum(v * w for v, w in vals) / sum(w for _, w in vals) if vals and held else None

    return {
        "seconds": seconds,
        "config": variant.config.to_dict(),
        "measured_fallback_rate": weighted("measured_fallback_rate"),
        "predictor_recall": weighted("predictor_recall"),
        "true_outlier_rate": weighted("true_outlier_rate"),
        "per_layer": [
            {
                k: s.get(k)
                for k in ("layer", "measured_fallback_rate", "predictor_recall", "true_outlier_rate", "band_widening")
            }
            for s in stats
        ],
    }


def parse_batches(text: str) -> list[int]:
    """Batch sizes of a comma list ("1,4,16"; empty entries ignored)."""
    return [int(b) for b in text.split(",") if b]


def decode_runs(batches: list[int], compile_batches: list[int], compile_all: bool) -> list[tuple[int, bool]]:
    """The (batch, compiled) decode runs: each of `batches` with `compile_all` (--compile), then each of
    `compile_batches` compiled, duplicates dropped; uncompiled runs first (a compile may be slow or fail)."""
    runs: list[tuple[int, bool]] = []
    for run in [(b, compile_all) for b in batches] + [(b, True) for b in compile_batches]:
        if run not in runs:
            runs.append(run)
    return sorted(runs, key=lambda r: r[1])  # stable: each group keeps the order the flags gave


def run_key(b: int, compiled: bool) -> str:
    """The JSON key and table label of a run: "4", or "4c" when its decode steps are torch.compile'd."""
    return f"{b}c" if compiled else str(b)


def falcon_phase(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, result: dict[str, Any]) -> None:
    """Build, time dense, calibrate, install TARDIS, time TARDIS; fills result's model/calibration/decode.

    Each (batch, compiled) run of `decode_runs` is one row; the JSON is written after every dense run and
    every TARDIS row, so a run cut short keeps what it measured. A failed run is recorded in `errors`.
    """
    use_graph = device.type == "cuda" and not args.no_graph
    batches = parse_batches(args.batches)
    runs = decode_runs(batches, parse_batches(args.compile_batches), args.compile)
    out = Path(args.out)
    t0 = time.perf_counter()
    model = load_model(args, device, dtype)
    make_falcon_graph_safe(model)
    sync(device)
    vocab = int(model.config.vocab_size)
    result["model"] = {
        "build_s": time.perf_counter() - t0,
        "dtype": str(dtype).removeprefix("torch."),
        "config": {k: getattr(model.config, k, None) for k in ("hidden_size", "num_hidden_layers", "vocab_size")},
        "ffn_hidden_size": adapter_for(model).sites(model)[0].w1.shape[0],
    }
    n_layers = len(adapter_for(model).sites(model))
    timed = sorted({round(i * (n_layers - 1) / max(TIMED_LAYERS - 1, 1)) for i in range(TIMED_LAYERS)})

    calib_texts, held_texts = corpora.lee_calibration(), corpora.lee_heldout()
    tok = VocabMappedTokenizer(transformers.AutoTokenizer.from_pretrained(str(TOKENIZER)), vocab)
    prompts = prompt_rows(tok, held_texts, max(b for b, _ in runs), args.prompt_len)
    if args.greedy == "auto":  # the decode loop's writes after the LM head, for every timed step (dense and TARDIS)
        result["greedy"] = greedy_ab(device, dtype, vocab, [b for b, _ in runs], use_graph)
    else:
        GREEDY["kernel"] = args.greedy == "kernel"
        result["greedy"] = {"applies": True, "kernel": GREEDY["kernel"]}
    print(f"greedy: {result['greedy']}", flush=True)
    result["gemv"] = gemv_ab(model, args, use_graph)  # the launch mode fused_gemv runs (before it is timed)
    print(f"gemv: {result['gemv']}", flush=True)
    result["attention_kernel"] = attention_kernel_ab(model, args, use_graph)  # the tardis attention ops' launch
    print(f"attention kernel: {result['attention_kernel']}", flush=True)
    if args.attention == "auto":  # the same attention for the dense and the TARDIS model: the faster correct one
        result["attention"] = attention_ab(model, prompts, args, use_graph)
    else:
        applies = set_decode_attention(model, args.attention) > 0
        result["attention"] = {"applies": applies, "choice": args.attention if applies else "stock"}
    print(f"attention: {result['attention']}", flush=True)
    result["branch_streams"] = branch_streams_ab(model, prompts, args, use_graph)
    print(f"branch streams: {result['branch_streams']}", flush=True)

    def label(b: int, compiled: bool) -> str:
        return f"B={b}" + (" compiled" if compiled else "")

    # Dense phase: the unmodified model.
    phase_t0 = time.perf_counter()
    dense: dict[tuple[int, bool], dict[str, Any]] = {}
    dense_tokens: dict[tuple[int, bool], torch.Tensor] = {}
    partial: dict[str, dict[str, Any]] = {}
    result["dense_partial"] = partial  # filled per run ("1", "1c"); the same rows end up in result["decode"]
    xs: dict[int, dict[int, torch.Tensor]] = {}
    ffn_dense_us: dict[int, float] = {}
    for b, compiled in [] if args.calibration_only else runs:
        try:
            row: dict[str, Any] = {}
            if b not in ffn_dense_us:  # the FFN inputs and the dense FFN timing do not depend on compile
                xs[b] = ffn_inputs(model, prompts[:b], timed)
                sites = adapter_for(model).sites(model)
                mlps = [model.get_submodule(sites[i].name) for i in timed]
                ffn_dense_us[b] = time_ffn_layers(mlps, [xs[b][i] for i in timed], use_graph, args.repeats)
                del sites, mlps
            row["ffn_dense_us"] = ffn_dense_us[b]
            r = time_decode(
                model, prompts[:b], args.new_tokens, args.repeats, use_graph, compiled, args.profile_kernels and b == 1
            )
            row.update({f"dense_{k}": v for k, v in r.items() if k != "tokens"})
            z = with_zero_ffns(
                model,
                lambda b=b, c=compiled: time_decode(model, prompts[:b], args.new_tokens, args.repeats, use_graph, c),
            )
            row["zero_ffn_step_ms"] = z["step_ms"]
            row["ffn_share"] = max(0.0, 1.0 - z["decode_s"] / r["decode_s"])
        except Exception as e:  # one failed run (a compile, say) must not lose the others
            result["errors"].append(f"dense {label(b, compiled)}: {e!r}")
            traceback.print_exc()
            continue
        dense[b, compiled] = partial[run_key(b, compiled)] = row
        dense_tokens[b, compiled] = r["tokens"]
        print(f"dense {label(b, compiled)}: {r['tok_s']:.1f} tok/s, FFN share {row['ffn_share']:.2f}", flush=True)
        print_kernels(f"dense {label(b, compiled)}", r["kernels"])
        write_json(out, result)

    result["dense_phase_s"] = time.perf_counter() - phase_t0

    # Calibration (the FFN hooks see the dense model) and installation.
    cfg = FoldConfig(
        calib_tokens=args.calib_tokens,
        heldout_tokens=args.heldout_tokens,
        seq_len=args.seq_len,
        coverage=args.coverage,
        band_tolerance=args.band_tolerance,
        predictor_bits=args.predictor_bits,
    )
    t0 = time.perf_counter()
    variant = calibrate(model, tok, calib_texts, cfg, on_event=progress_printer(time.perf_counter()))
    sync(device)
    result["calibration"] = calibration_summary(variant, time.perf_counter() - t0)
    print(f"calibrated in {result['calibration']['seconds']:.1f} s", flush=True)
    if args.calibration_only:
        return
    t0 = time.perf_counter()
    modules = hf.install(model, variant)
    hf.set_decode_policy(model, args.max_tardis_tokens)
    if args.policy_from:  # per layer: its measured union curve against the break-even of a kernel run
        bench_rows = json.loads(Path(args.policy_from).read_text())["rows"]
        d, f = model.config.hidden_size, modules[0].neurons
        pol = policy_from_bench(bench_rows, d, f)
        limits = hf.set_decode_policy_from_curves(model, variant, pol)
        result["decode_policy"] = {"from": args.policy_from, "max_union": pol.max_union, "limits": limits}
        print(f"decode policy from {args.policy_from}: max union {pol.max_union:.3f}, limits {limits}", flush=True)
    policy_limits = [m.max_tardis_tokens for m in modules]  # restored after each forced-op timing below
    del variant
    if device.type == "cuda":
        torch.cuda.empty_cache()
    sync(device)
    result["install_s"] = time.perf_counter() - t0
    write_json(out, result)
    if args.kernel_launch_applied is not None and 1 in xs:
        # the bench's launch choice and its committed alternatives timed on this model's own FFN layers (its
        # calibrated ranges, its fallback rate), the fastest kept for every TARDIS row below (on the CPU the op runs
        # the reference path, which no launch setting changes)
        x1 = [xs[1][i] for i in timed]
        result["launch_ab"] = launch_ab(model, modules, timed, x1, use_graph, args.repeats, policy_limits)
        print(f"launch A/B on the model's FFN layers (B=1, us): {result['launch_ab']['us']}; "
              f"best {result['launch_ab']['best']}", flush=True)  # fmt: skip
        write_json(out, result)

    # TARDIS phase: same prompts, same loop, same runs (those whose dense run went through).
    phase_t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    result["decode"] = rows  # grows row by row
    tardis_tokens: dict[tuple[int, bool], torch.Tensor] = {}
    streams = result["branch_streams"]
    if (1, False) in dense:
        tardis_streams_ab(model, prompts, args, use_graph, streams, result["errors"])
        write_json(out, result)
        result["ffn_output"] = ffn_output_ab(
            model, modules, prompts, args, use_graph, timed, [xs[1][i] for i in timed], policy_limits
        )
        print(f"ffn output: {result['ffn_output']}", flush=True)
        write_json(out, result)
    for b, compiled in [run for run in runs if run in dense]:
        row = dense[b, compiled]
        if streams["applies"]:  # batch 1: the TARDIS model's own choice; above, where its policy runs dense
            # FFNs (the dense model, but for the decode limits), the dense model's
            set_branch_streams(model, *stream_choice(streams, "tardis_" if b == 1 else ""))
        # batch 1: the float32 output where ffn_output_ab chose it (only batch 1 has a finish kernel to skip)
        set_ffn_output(modules, result.get("ffn_output", {}).get("choice", "finish") if b == 1 else "finish")
        try:
            uncompiled = dense.get((b, False)) if compiled else None
            if uncompiled is not None and "ffn_policy_us" in uncompiled:
                # the FFN timings call the modules directly (never compiled): the uncompiled row's hold
                row["ffn_op_us"], row["ffn_policy_us"] = uncompiled["ffn_op_us"], uncompiled["ffn_policy_us"]
            else:
                timed_mods: list[nn.Module] = [modules[i] for i in timed]
                x_b = [xs[b][i] for i in timed]
                try:  # the op itself, at this batch (where the op runs)
                    row["ffn_op_us"] = time_ffn_op(model, modules, timed, x_b, use_graph, args.repeats, policy_limits)
                except Exception as e:  # a kernel failure at one batch must not lose the run
                    row["ffn_op_us"] = None
                    result["errors"].append(f"ffn op B={b}: {e!r}")
                row["ffn_policy_us"] = time_ffn_layers(timed_mods, x_b, use_graph, args.repeats)
            hf.reset_counters(model)
            r = time_decode(
                model, prompts[:b], args.new_tokens, args.repeats, use_graph, compiled, args.profile_kernels and b == 1
            )
            counters = decode_counters(model)
            hf.reset_counters(model)
        except Exception as e:  # one failed run (a compile, say) must not lose the others
            for m, limit in zip(modules, policy_limits, strict=True):
                m.max_tardis_tokens = limit
            hf.reset_counters(model)
            result["errors"].append(f"tardis {label(b, compiled)}: {e!r}")
            traceback.print_exc()
            continue
        row.update({f"tardis_{k}": v for k, v in r.items() if k != "tokens"})
        # Random weights near-tie, so greedy tokens drift apart by rounding alone; this is a sanity figure.
        row["token_agreement"] = float((r["tokens"] == dense_tokens[b, compiled]).float().mean())
        tardis_tokens[b, compiled] = r["tokens"]
        # A compiled row's tokens against the uncompiled run's at its batch (None without one): what compile changes.
        same_b = compiled and (b, False) in tardis_tokens
        row["dense_agreement_uncompiled"] = (
            float((dense_tokens[b, True] == dense_tokens[b, False]).float().mean()) if same_b else None
        )
        row["tardis_agreement_uncompiled"] = (
            float((r["tokens"] == tardis_tokens[b, False]).float().mean()) if same_b else None
        )
        row.update({f"decode_{k}": v for k, v in counters.items()})
        row["batch"] = b
        row["compiled"] = compiled
        row["ratio"] = r["tok_s"] / row["dense_tok_s"]
        row["ffn_speedup_op"] = row["ffn_dense_us"] / row["ffn_op_us"] if row["ffn_op_us"] else None
        row["ffn_speedup_policy"] = row["ffn_dense_us"] / row["ffn_policy_us"]
        row["amdahl_bound_op"] = amdahl(row["ffn_share"], row["ffn_speedup_op"])
        row["amdahl_bound_policy"] = amdahl(row["ffn_share"], row["ffn_speedup_policy"])
        rows.append(row)
        print(f"tardis {label(b, compiled)}: {r['tok_s']:.1f} tok/s ({row['ratio']:.2f}x)", flush=True)
        print_kernels(f"tardis {label(b, compiled)}", r["kernels"])
        write_json(out, result)
    set_ffn_output(modules, "finish")
    if len(rows) == len(dense):  # else kept: the dense rows of the runs whose TARDIS run failed
        del result["dense_partial"]
    result["tardis_phase_s"] = time.perf_counter() - phase_t0
    result["decode_settings"] = {
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "cuda_graph": use_graph,
        "max_tardis_tokens": args.max_tardis_tokens,
        "timed_layers": timed,
        "runs": [run_key(b, c) for b, c in runs],
        "ffn_share_method": "1 - t(decode step, every FFN replaced by a zero output) / t(dense decode step)",
        "ffn_speedup_method": f"one graph over {len(timed)} distinct layers on the real FFN inputs of each prompt's "
        "last position; dense = the original FFN module, op = TARDIS with the op forced, policy = TARDIS as decoded",
        "compiled_method": "compiled rows: the decode step's forward torch.compile'd (dense, zero-FFN and TARDIS "
        "alike); their ffn_*_us (modules called directly, never compiled) are those of the uncompiled row at the "
        "same batch when there is one",
    }


def small_models_phase(
    args: argparse.Namespace, device: torch.device, dtype: torch.dtype, result: dict[str, Any]
) -> None:
    """The project's small models: TARDIS on `device` (each --small-dtype on CUDA) vs the CPU float32 reference."""
    result["small_models"] = []
    if args.skip_small_models:
        return
    # bf16 shows what serving does; float32 runs the same kernels without bf16 rounding of the model
    fast_dtypes = [getattr(torch, s) for s in args.small_dtype.split(",") if s] if device.type == "cuda" else [dtype]
    calib_texts, held_texts = corpora.lee_calibration(), corpora.lee_heldout()
    small_cfg = FoldConfig(calib_tokens=args.small_calib_tokens, heldout_tokens=2048)
    for name in [n for n in args.small_models.split(",") if n]:
        for fast_dtype in fast_dtypes:
            try:
                result["small_models"].append(
                    compare_small_model(
                        MODELS / name,
                        held_texts[10:15],
                        fast_device=device,
                        fast_dtype=fast_dtype,
                        new_tokens=args.small_new_tokens,
                        calib=small_cfg,
                        calib_texts=calib_texts,
                    )
                )
            except Exception as e:
                result["errors"].append(f"small model {name} ({fast_dtype}): {e!r}")
                traceback.print_exc()


def write_json(path: Path, result: dict[str, Any]) -> None:
    """Write the result (also after each phase, so a run cut short keeps what it measured)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; returns the JSON-ready result (a failed phase is recorded in `errors`)."""
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    result: dict[str, Any] = {"env": environment(device), "args": vars(args), "errors": []}
    t_start = time.perf_counter()
    for phase in (falcon_phase, small_models_phase):
        try:
            phase(args, device, dtype, result)
        except Exception as e:
            result["errors"].append(f"{phase.__name__}: {e!r}")
            traceback.print_exc()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        result["total_s"] = time.perf_counter() - t_start
        write_json(Path(args.out), result)
    return result


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(result: dict[str, Any]) -> str:
    """The short summary table printed last."""
    env = result["env"]
    cal = result.get("calibration", {})
    lines = [
        f"{env['gpu'] or env['device']}  torch {env['torch']}  transformers {env['transformers']}  {env['date']}",
        f"calibration {_fmt(cal.get('seconds'), '.1f')} s, held-out fallback "
        f"{_fmt(cal.get('measured_fallback_rate'), '.4f')}, recall {_fmt(cal.get('predictor_recall'), '.4f')}; "
        f"seconds: build {_fmt(result.get('model', {}).get('build_s'), '.1f')}, dense phase "
        f"{_fmt(result.get('dense_phase_s'), '.1f')}, install {_fmt(result.get('install_s'), '.1f')}, TARDIS phase "
        f"{_fmt(result.get('tardis_phase_s'), '.1f')}, total {_fmt(result.get('total_s'), '.1f')}",
        "",
        "| B | dense tok/s | TARDIS tok/s | ratio | decode fallback | dense steps | FFN share | S op | S policy "
        "| bound op | bound policy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result.get("decode", []):
        lines.append(
            f"| {run_key(r['batch'], r.get('compiled', False))} "
            f"| {r['dense_tok_s']:.1f} | {r['tardis_tok_s']:.1f} | {r['ratio']:.2f} "
            f"| {_fmt(r['decode_fallback_rate'], '.4f')} | {r['decode_dense_steps']:.0f} | {r['ffn_share']:.2f} "
            f"| {_fmt(r['ffn_speedup_op'], '.2f')} | {r['ffn_speedup_policy']:.2f} "
            f"| {_fmt(r['amdahl_bound_op'], '.2f')} | {_fmt(r['amdahl_bound_policy'], '.2f')} |"
        )
    if any(r.get("compiled") for r in result.get("decode", [])):
        lines.append("(Bc: decode steps torch.compile'd)")
    streams = result.get("branch_streams", {})
    if streams.get("applies"):
        cells = [
            f"{stream_key(*c)}: dense {_fmt(streams.get(f'dense_step_ms_{stream_key(*c)}'), '.3f')} / TARDIS "
            f"{_fmt(streams.get(f'tardis_step_ms_{stream_key(*c)}'), '.3f')}"
            for c in STREAM_CONFIGS
            if f"dense_step_ms_{stream_key(*c)}" in streams or f"tardis_step_ms_{stream_key(*c)}" in streams
        ]
        lines.append(
            f"attention {result.get('attention', {}).get('choice')}; branch streams[_priority] dense "
            f"{stream_key(*stream_choice(streams))}, TARDIS {stream_key(*stream_choice(streams, 'tardis_'))}; B=1 "
            f"step ms: {'; '.join(cells)}"
        )
    ffn_out = result.get("ffn_output", {})
    if "finish_step_ms" in ffn_out:
        lines.append(
            f"FFN output at B=1: {ffn_out['choice']} (step ms: finish kernel "
            f"{_fmt(ffn_out['finish_step_ms'], '.3f')}, fp32 {_fmt(ffn_out.get('fp32_step_ms'), '.3f')}, fp32 + x "
            f"words from the norm {_fmt(ffn_out.get('fp32_xq_step_ms'), '.3f')}; max rel err fp32 "
            f"{_fmt(ffn_out.get('max_rel_err'), '.1e')}, xq {_fmt(ffn_out.get('xq_max_rel_err'), '.1e')})"
        )
    greedy = result.get("greedy", {})
    if greedy.get("applies"):
        lines.append(
            f"greedy writes: {'tardis::greedy_step' if greedy.get('kernel') else 'torch ops'} (µs at B=1: torch "
            f"{_fmt(greedy.get('torch_us'), '.2f')}, kernel {_fmt(greedy.get('kernel_us'), '.2f')}"
            + (f"; error {greedy['error']}" if "error" in greedy else "")
            + ")"
        )
    kernel = result.get("attention_kernel", {})
    if kernel.get("applies"):
        cells = [f"{c['launch']}: {_fmt(c.get('us'), '.2f')}" for c in kernel.get("candidates", [])]
        lines.append(f"attention kernel {kernel.get('best')} (µs a layer: {'; '.join(cells)})")
    for m in result.get("small_models", []):
        div = [r["divergence"] for r in m["tardis"] if r["divergence"]]
        ctl = [r["divergence"] for r in m["dense_control"] if r["divergence"]]
        where = ", ".join(f"pos {d['position']} (cpu margin {d['cpu_margin']:.3f})" for d in div) or "none"
        i8 = [r for r in m["tardis"] if "match_i8_reference" in r]
        i8_note = ""
        if i8:
            i8_div = [r["divergence_i8_reference"] for r in i8 if r["divergence_i8_reference"]]
            i8_where = ", ".join(f"pos {d['position']} (margin {d['cpu_margin']:.3f})" for d in i8_div) or "none"
            n_i8 = sum(r["match_i8_reference"] for r in i8)
            i8_note = f"; vs the CPU int8-x reference: {n_i8}/{len(i8)} ({i8_where})"
        lines.append(
            f"{m['model']}: TARDIS {m['fast_device']}/{m['fast_dtype']} vs CPU fp32: "
            f"{sum(r['match'] for r in m['tardis'])}/{len(m['tardis'])} prompts identical; divergences: {where}; "
            f"dense control: {len(ctl)} divergent{i8_note}"
        )
    for e in result.get("errors", []):
        lines.append(f"error: {e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run, write the JSON, print the table; returns the exit code."""
    args = parse_args(argv)
    # recorded in the JSON through args
    args.kernel_launch_applied = apply_kernel_launch(args.kernel_launch) if args.kernel_launch else None
    result = run(args)
    print(table(result))
    print(f"wrote {args.out}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
