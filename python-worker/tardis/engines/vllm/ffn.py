"""TardisVllmFFN: the module that takes the place of one FFN inside a vLLM model, with live counters.

It reads the base W1/W2 straight from vLLM's own (tensor-parallel) linear layers, so the base weights
load through vLLM's loaders unchanged and stay resident once. Which tokens run TARDIS follows the
variant's prefill policy per token: with "dense", tokens of requests still in prefill (query length
> 1 in this step's attention metadata) run the original FFN and decode tokens run TARDIS, as the HF
engine does per forward. Steps without attention metadata (vLLM's profiling and warm-up runs) run dense
and are not counted.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from tardis.core.layer import FoldedLayer
from tardis.engines.vllm.sharding import FFNShard, dense_partial, make_shard, tardis_partial
from tardis.runtime.reference import COUNTS, count_step, read_counts

Output = Literal["tensor", "pair"]


def _step_metadata() -> Any | None:
    """The attention metadata of this step's first layer; None without one (vLLM's profiling and warm-up runs, or
    dual-batch overlap: one dict per micro-batch, not split per token here)."""
    from vllm.forward_context import get_forward_context, is_forward_context_available

    if not is_forward_context_available():
        return None
    metadata: Any = get_forward_context().attn_metadata
    if isinstance(metadata, list) or not metadata:
        return None
    return next(iter(metadata.values()))


def decode_rows(n: int) -> int | None:
    """How many leading rows of this step's n are decode tokens, read from host-side metadata only, when the step
    holds no prefill: its longest query is one token (`max_query_len` 1), so each of its `num_actual_tokens` real rows
    is a request's one new token and any rows after them are CUDA-graph padding. None when the metadata does not
    say so (a prefill in the step, no metadata, or no host-side lengths): then `decode_token_mask` reads the query
    lengths from the device. A decode step so costs no device reads (two or three syncs per layer otherwise)."""
    first = _step_metadata()
    longest, real = getattr(first, "max_query_len", None), getattr(first, "num_actual_tokens", None)
    if isinstance(longest, int) and isinstance(real, int) and longest == 1 and 0 < real <= n:
        return real
    return None


def decode_token_mask(n: int, device: torch.device) -> tuple[torch.Tensor, int] | None:
    """(bool [n]: which of this step's n rows are decode tokens, how many rows are real tokens); rows after the real
    ones are CUDA-graph padding (False). None when the step has no attention metadata."""
    first = _step_metadata()
    qsl = getattr(first, "query_start_loc", None)
    if qsl is None:
        return None
    lens = (qsl[1:] - qsl[:-1]).to(device)
    mask = torch.repeat_interleave(lens == 1, lens)
    real = min(int(mask.shape[0]), n)
    if mask.shape[0] < n:  # padded batch (CUDA graphs): padding rows run dense, uncounted
        mask = torch.cat([mask, mask.new_zeros(n - mask.shape[0])])
    return mask[:n], real


class TardisVllmFFN(nn.Module):
    """y = Wf·x + bf + exact corrections of flagged neurons, over vLLM's sharded base FFN.

    `up` (ColumnParallelLinear, W1 block [f_r, d]) and `down` (RowParallelLinear, W2 block [d, f_r])
    are read, never called. `output="pair"` returns (y, None) for callers that expect (out, bias);
    `reduce=False` leaves the all-reduce to the caller (Falcon's parallel-attention blocks).
    """

    counts: torch.Tensor  # int64 [4]: flagged pairs, union sizes, tokens, steps (COUNTS; the op adds them)
    dense_token_count: torch.Tensor

    def __init__(self, up: Any, down: Any, *, output: Output = "tensor", reduce: bool = True) -> None:
        super().__init__()
        self._base: tuple[Any, Any] = (up, down)  # a tuple: not registered twice as submodules
        self.output = output
        self.reduce = reduce
        self.prefill = "dense"
        self.shard: FFNShard | None = None
        self.kernel_pack: Any = None
        self._w2t: torch.Tensor | None = None
        self.op_name = ""  # set by register_op: the name `tardis::vllm_ffn` finds this module by
        self._weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        device = up.weight.device
        self.register_buffer("counts", torch.zeros(len(COUNTS), dtype=torch.int64, device=device), persistent=False)
        self.register_buffer("dense_token_count", torch.zeros((), dtype=torch.int64, device=device), persistent=False)

    def attach(self, layer: FoldedLayer, *, prefill: str) -> None:
        """Take this rank's shard of the folded layer (called from the model's load_weights)."""
        from vllm.distributed import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size

        up: Any = self._base[0]
        w1: torch.Tensor = up.weight
        rank, world = get_tensor_model_parallel_rank(), get_tensor_model_parallel_world_size()
        f, d = int(layer.lo.shape[0]), int(layer.wf.shape[0])
        if tuple(w1.shape) != (f // world, d):
            raise ValueError(
                f"the folded layer (f={f}, d={d}) does not match the model's FFN block {tuple(w1.shape)} at "
                f"tensor-parallel size {world}: the variant was made for another base model"
            )
        self.shard = make_shard(layer, rank, world, dtype=w1.dtype, device=w1.device)
        self.prefill = prefill
        # Keep the base tensors themselves: after load_weights, vLLM's CPU backend repacks each linear
        # for oneDNN and replaces its `weight` with an empty tensor (our reference keeps the original).
        _, down = self._base
        b1 = up.bias.data if up.bias is not None else w1.new_zeros(w1.shape[0])
        b2 = down.bias.data if (down.bias is not None and rank == 0) else None
        self._weights = (w1.data, b1, down.weight.data.T, b2)
        if w1.is_cuda and world == 1:  # decode steps run the Triton op `tardis::ffn_decode`
            from tardis.kernels.op import make_pack

            self.kernel_pack = make_pack(layer.predictor, w1.device)
            self._w2t = self._base[1].weight.data.T.contiguous()

    def forward(self, x: torch.Tensor) -> Any:
        """Apply the FFN to x [..., d]; a tensor, or (tensor, None) when output == "pair".

        Inside vLLM the work goes through the opaque op `tardis::vllm_ffn`, so torch.compile neither
        traces nor bakes in the per-step choice between the dense FFN and TARDIS.
        """
        y = torch.ops.tardis.vllm_ffn(x, self.op_name) if self.op_name else self.run(x)
        return (y, None) if self.output == "pair" else y

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The FFN of x [..., d], eagerly (the body of `tardis::vllm_ffn`)."""
        if self.shard is None:
            raise RuntimeError("TARDIS layer used before load_weights attached its folded tensors")
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        n = x2.shape[0]
        rows = decode_rows(n)
        if rows is not None:  # a decode step (host-side metadata): TARDIS rows, then dense padding, uncounted
            rows = n if self.prefill == "tardis" else rows
            y = self._tardis(x2) if rows == n else torch.cat([self._tardis(x2[:rows]), self._dense(x2[rows:])])
        elif (found := decode_token_mask(n, x2.device)) is None:
            y = self._dense(x2)
        else:
            decode, real = found
            if self.prefill == "tardis":
                decode = torch.ones_like(decode)
            if not bool(decode.any()):
                y = self._dense(x2)
                with torch.no_grad():
                    self.dense_token_count += real
            elif bool(decode.all()):
                y = self._tardis(x2)
            else:  # a mixed step: prefill tokens dense, decode tokens TARDIS (padding dense, uncounted)
                rows_t, rows_d = decode.nonzero().squeeze(1), (~decode).nonzero().squeeze(1)
                y = x2.new_empty(n, x2.shape[1])
                y.index_copy_(0, rows_t, self._tardis(x2.index_select(0, rows_t)))
                y.index_copy_(0, rows_d, self._dense(x2.index_select(0, rows_d)))
                with torch.no_grad():
                    self.dense_token_count += rows_d.numel() - (n - real)
        if self.shard.world > 1 and self.reduce:
            from vllm.distributed import tensor_model_parallel_all_reduce

            y = tensor_model_parallel_all_reduce(y)
        return y.reshape(*shape[:-1], y.shape[-1])

    def _base_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self._weights is None:
            raise RuntimeError("TARDIS layer used before load_weights attached its folded tensors")
        return self._weights

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        assert self.shard is not None
        w1, b1, w2t, b2 = self._base_tensors()
        return dense_partial(x, w1=w1, b1=b1, w2t=w2t, b2=b2, act=self.shard.act)

    def _tardis(self, x: torch.Tensor) -> torch.Tensor:
        assert self.shard is not None
        s = self.shard
        w1, b1, w2t, _ = self._base_tensors()
        if self.kernel_pack is not None and x.is_cuda:
            from tardis.kernels.op import ffn_decode

            y = ffn_decode(
                x, self.kernel_pack, wf=s.wf, bf=s.bf, b1=b1, lo_in=s.lo_in, hi_in=s.hi_in, w1=w1,
                w2t=self._w2t if self._w2t is not None else w2t.contiguous(), slope=s.slope,
                intercept=s.intercept, act=s.act, counts=self.counts,
            )  # fmt: skip
        else:
            y, flags = tardis_partial(x, s, w1=w1, b1=b1, w2t=w2t)
            count_step(self.counts, flags)
        return y

    def counters(self) -> dict[str, int]:
        """This rank's counters: flagged (token, neuron) pairs and union sizes over its neuron block."""
        out = {
            **read_counts(self.counts),
            "dense_tokens": int(self.dense_token_count),
            "neurons": 0 if self.shard is None else self.shard.neurons.stop - self.shard.neurons.start,
        }
        return out

    def reset_counters(self) -> None:
        """Zero the live counters."""
        self.counts.zero_()
        self.dense_token_count.zero_()


def register_op(ffn: TardisVllmFFN, name: str, vllm_config: Any) -> None:
    """Make `ffn` reachable from `tardis::vllm_ffn` as `name` through this engine's forward context."""
    layers = vllm_config.compilation_config.static_forward_context
    if name in layers:
        raise ValueError(f"duplicate TARDIS layer name {name!r}")
    layers[name] = ffn
    ffn.op_name = name


@torch.library.custom_op("tardis::vllm_ffn", mutates_args=())
def vllm_ffn(x: torch.Tensor, name: str) -> torch.Tensor:
    """The TARDIS FFN registered as `name` in the current vLLM forward context, applied to x [..., d]."""
    from vllm.forward_context import get_forward_context

    ffn: TardisVllmFFN = get_forward_context().no_compile_layers[name]
    return ffn.run(x)


@vllm_ffn.register_fake
def _(x: torch.Tensor, name: str) -> torch.Tensor:
    return torch.empty_like(x)


class PassThrough(nn.Module):
    """Holds a replaced linear layer's parameters under their names (so vLLM loads them) and returns (x, None)."""

    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        for name, p in linear.named_parameters(recurse=False):
            self.register_parameter(name, p)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """(x, None): the FFN already ran in the layer before."""
        return x, None
