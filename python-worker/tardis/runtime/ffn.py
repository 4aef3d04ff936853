"""TardisFFN: the module that replaces a model's FFN, with live fallback counters."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from tardis.core.layer import FoldedLayer
from tardis.runtime.reference import FlagMode, dense_ffn, tardis_ffn

Mode = Literal["tardis", "dense"]

# The Triton decode kernels are built and tested for up to this many tokens per step (batch × new
# tokens); larger steps (a prefill run through TARDIS) take the reference path.
DECODE_MAX_TOKENS = 64


class TardisFFN(nn.Module):
    """y = Wf·x + bf + exact corrections for flagged neurons; input and output [..., d].

    Keeps the base W1 [f, d] and W2ᵀ [f, d] resident for the exact fallback. `mode="dense"` runs
    the original FFN; `flag_mode` chooses predicted, oracle or all-flagged corrections. Prefill
    steps (set by the engine through `is_prefill`) run dense when `prefill == "dense"`.
    """

    # Buffers (registered in __init__), declared for the type checker.
    w1: torch.Tensor
    b1: torch.Tensor
    w2t: torch.Tensor
    b2: torch.Tensor
    wf: torch.Tensor
    bf: torch.Tensor
    w1q: torch.Tensor
    lo_in: torch.Tensor
    hi_in: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    slope: torch.Tensor
    intercept: torch.Tensor
    flag_count: torch.Tensor
    token_count: torch.Tensor
    union_count: torch.Tensor
    step_count: torch.Tensor

    def __init__(
        self,
        *,
        w1: torch.Tensor,
        b1: torch.Tensor,
        w2t: torch.Tensor,
        b2: torch.Tensor,
        folded: FoldedLayer,
        prefill: str = "dense",
    ) -> None:
        super().__init__()
        dtype, device = w1.dtype, w1.device
        self.act = folded.act
        self.prefill = prefill
        self.mode: Mode = "tardis"
        self.flag_mode: FlagMode = "predict"
        self.is_prefill = False
        lo_in, hi_in = folded.thresholds()

        def buf(name: str, t: torch.Tensor, dt: torch.dtype | None = dtype) -> None:
            self.register_buffer(name, t.detach().to(device=device, dtype=dt).contiguous(), persistent=False)

        buf("w1", w1)
        buf("b1", b1)
        buf("w2t", w2t)
        buf("b2", b2)
        buf("wf", folded.wf)
        buf("bf", folded.bf)
        buf("w1q", folded.predictor.dequantize(torch.float32))
        for name, t in (("lo_in", lo_in), ("hi_in", hi_in), ("lo", folded.lo), ("hi", folded.hi)):
            buf(name, t, torch.float32)
        buf("slope", folded.slope, torch.float32)
        buf("intercept", folded.intercept, torch.float32)
        for name in ("flag_count", "token_count", "union_count", "step_count"):
            self.register_buffer(name, torch.zeros((), dtype=torch.int64, device=device), persistent=False)

    @property
    def in_features(self) -> int:
        """d."""
        return int(self.w1.shape[1])

    @property
    def neurons(self) -> int:
        """f."""
        return int(self.w1.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the FFN to x [..., d]."""
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if self.mode == "dense" or (self.is_prefill and self.prefill == "dense"):
            y = dense_ffn(x2, self.w1, self.b1, self.w2t, self.b2, self.act)
        elif (
            x2.is_cuda
            and x2.shape[0] <= DECODE_MAX_TOKENS
            and self.flag_mode == "predict"
            and (pack := getattr(self, "kernel_pack", None)) is not None
        ):
            # Triton decode kernels (set up by tardis.kernels.attach); counters stay on the device.
            from tardis.kernels.op import ffn_decode

            y = ffn_decode(
                x2, pack, wf=self.wf, bf=self.bf, b1=self.b1, lo_in=self.lo_in, hi_in=self.hi_in,
                w1=self.w1, w2t=self.w2t, slope=self.slope, intercept=self.intercept, act=self.act,
                flag_count=self.flag_count, union_count=self.union_count,
            )  # fmt: skip
            with torch.no_grad():
                self.token_count += x2.shape[0]
                self.step_count += 1
        else:
            y, flags = tardis_ffn(
                x2,
                w1=self.w1,
                b1=self.b1,
                w2t=self.w2t,
                wf=self.wf,
                bf=self.bf,
                w1q=self.w1q,
                lo_in=self.lo_in,
                hi_in=self.hi_in,
                lo=self.lo,
                hi=self.hi,
                slope=self.slope,
                intercept=self.intercept,
                act=self.act,
                mode=self.flag_mode,
            )
            with torch.no_grad():
                self.flag_count += flags.sum()
                self.token_count += flags.shape[0]
                self.union_count += flags.any(0).sum()
                self.step_count += 1
        return y.reshape(*shape[:-1], y.shape[-1])

    def counters(self) -> dict[str, int]:
        """Live counters: flagged (neuron, token) pairs, tokens, per-step union sizes, steps."""
        return {
            "flagged": int(self.flag_count),
            "tokens": int(self.token_count),
            "union": int(self.union_count),
            "steps": int(self.step_count),
            "neurons": self.neurons,
        }

    def reset_counters(self) -> None:
        """Zero the live counters."""
        for t in (self.flag_count, self.token_count, self.union_count, self.step_count):
            t.zero_()
