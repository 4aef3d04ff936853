"""TardisFFN: the module that replaces a model's FFN, with live fallback counters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from tardis.core.layer import FoldedLayer
from tardis.runtime.reference import COUNTS, FlagMode, count_step, dense_ffn, read_counts, tardis_ffn

if TYPE_CHECKING:
    from tardis.kernels.layout import Int8X, TiledPredictor
    from tardis.kernels.op import KernelPack

Mode = Literal["tardis", "dense"]
StepPath = Literal["dense", "policy_dense", "op", "reference"]

# The Triton decode kernels are built and tested for up to this many tokens per step (batch × new
# tokens); larger steps (a prefill run through TARDIS) take the reference path.
DECODE_MAX_TOKENS = 64

# Decode steps with more tokens than this run the dense FFN instead of the op (per module:
# `max_tardis_tokens`). bench/NOTES.md v4 (H200, Falcon-7B FFN, 5% outliers): the op is 1.82× dense
# at batch 1 and 1.14× at batch 2, but 0.61× at batch 4 and 0.37× at batch 8.
TARDIS_MAX_DECODE_TOKENS = 2


def step_path(
    *,
    tokens: int,
    mode: Mode,
    dense_prefill: bool,
    cuda: bool,
    has_kernels: bool,
    flag_mode: FlagMode,
    max_tardis_tokens: int,
) -> StepPath:
    """Which computation one FFN step of `tokens` tokens runs.

    "dense": the original FFN (dense mode, or a prefill step with `prefill="dense"`); "op": the
    Triton decode op; "policy_dense": the original FFN because the step has more tokens than
    `max_tardis_tokens` (where the op would otherwise run: CUDA, predicted flags, kernels attached);
    "reference": the PyTorch reference path (CPU, oracle/all flags, or steps too large for the op).
    """
    if mode == "dense" or dense_prefill:
        return "dense"
    if cuda and tokens <= DECODE_MAX_TOKENS and flag_mode == "predict" and has_kernels:
        return "op" if tokens <= max_tardis_tokens else "policy_dense"
    return "reference"


class TardisFFN(nn.Module):
    """y = Wf·x + bf + exact corrections for flagged neurons; input and output [..., d].

    Keeps the base W1 [f, d] and W2ᵀ [f, d] resident for the exact fallback. `mode="dense"` runs
    the original FFN; `flag_mode` chooses predicted, oracle or all-flagged corrections. Prefill
    steps (set by the engine through `is_prefill`) run dense when `prefill == "dense"`. On CUDA,
    steps with more than `max_tardis_tokens` tokens run dense instead of the op (counted in
    `dense_steps`); the CPU reference path ignores that policy.

    Live counters: `counts` (int64 [4]: flagged (token, neuron) pairs, union sizes, tokens, steps of the
    TARDIS paths; on the op path kernel 1 adds them) and `dense_step_count` (policy dense steps). An engine
    that counts a model step's policy dense steps for all its layers in one launch (hf's pre-forward hook)
    sets `dense_counted` before the step; the module then skips its own count once.
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
    counts: torch.Tensor
    dense_step_count: torch.Tensor
    kernel_pack: KernelPack  # set by tardis.kernels.attach (CUDA); absent otherwise

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
        self.max_tardis_tokens: int = TARDIS_MAX_DECODE_TOKENS
        self.dense_counted = False  # this step's policy dense step is counted already (see the class doc)
        lo_in, hi_in = folded.thresholds()

        def buf(name: str, t: torch.Tensor, dt: torch.dtype | None = dtype) -> None:
            self.register_buffer(name, t.detach().to(device=device, dtype=dt).contiguous(), persistent=False)

        buf("w1", w1)
        buf("b1", b1)
        buf("w2t", w2t)
        buf("b2", b2)
        buf("wf", folded.wf)
        buf("bf", folded.bf)
        # Dequantize where the module lives (a GPU unpacks a 7B-sized predictor in milliseconds).
        buf("w1q", folded.predictor.to(device).dequantize(torch.float32))
        # flag mode "predict_i8" tiles the packed predictor on first use (on CUDA the kernel pack holds it
        # tiled already, so no host copy is kept there)
        self._predictor = folded.predictor if device.type == "cpu" else None
        self._i8_pred: TiledPredictor | None = None
        for name, t in (("lo_in", lo_in), ("hi_in", hi_in), ("lo", folded.lo), ("hi", folded.hi)):
            buf(name, t, torch.float32)
        buf("slope", folded.slope, torch.float32)
        buf("intercept", folded.intercept, torch.float32)
        self.register_buffer("counts", torch.zeros(len(COUNTS), dtype=torch.int64, device=device), persistent=False)
        self.register_buffer("dense_step_count", torch.zeros((), dtype=torch.int64, device=device), persistent=False)

    @property
    def in_features(self) -> int:
        """d."""
        return int(self.w1.shape[1])

    @property
    def neurons(self) -> int:
        """f."""
        return int(self.w1.shape[0])

    def forward(self, x: torch.Tensor, fp32_ok: bool = False, x_i8: Int8X | None = None) -> torch.Tensor:
        """Apply the FFN to x [..., d]. fp32_ok: the caller also takes a float32 output, which the op's path returns
        where the kernel pack is in the float32-output mode (tardis.kernels.op.set_fp32_out); else x's dtype. x_i8:
        x's int8 words from tardis.kernels.norm.add3_layer_norm_i8 (in the layout int8_x_layout gave for this many
        tokens, with this module's kernel-pack workspace); the op's path takes them instead of rounding x itself."""
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        y = self.run_step(self.path_for(x2), x2, fp32_ok, x_i8)
        return y.reshape(*shape[:-1], y.shape[-1])

    def int8_x_layout(self, tokens: int) -> tuple[int, int, int] | None:
        """(group size, words a group, groups) where a CUDA step of `tokens` tokens runs the op with int8 x (so
        forward may take x_i8), else None."""
        pack = getattr(self, "kernel_pack", None)
        if pack is None or self.path_at(tokens, cuda=True) != "op":
            return None
        from tardis.kernels.op import int8_x_layout

        return int8_x_layout(pack, tokens)

    def path_for(self, x2: torch.Tensor) -> StepPath:
        """The path a step on x2 [N, d] takes under this module's mode, prefill and decode policy."""
        return self.path_at(x2.shape[0], cuda=x2.is_cuda)

    def path_at(self, tokens: int, *, cuda: bool) -> StepPath:
        """The path a step of `tokens` tokens (on CUDA or not) takes under this module's current settings."""
        return step_path(
            tokens=tokens,
            mode=self.mode,
            dense_prefill=self.is_prefill and self.prefill == "dense",
            cuda=cuda,
            has_kernels=getattr(self, "kernel_pack", None) is not None,
            flag_mode=self.flag_mode,
            max_tardis_tokens=self.max_tardis_tokens,
        )

    def dense(self, x2: torch.Tensor) -> torch.Tensor:
        """The original FFN on x2 [N, d]."""
        return dense_ffn(x2, self.w1, self.b1, self.w2t, self.b2, self.act)

    def run_step(
        self, path: StepPath, x2: torch.Tensor, fp32_ok: bool = False, x_i8: Int8X | None = None
    ) -> torch.Tensor:
        """y [N, d] for x2 [N, d] along `path`, updating the live counters (fp32_ok, x_i8: see forward; x_i8 is
        read on the op's path only)."""
        counted = self.dense_counted
        if counted:
            self.dense_counted = False
        if path in ("dense", "policy_dense"):
            y = self.dense(x2)
            if path == "policy_dense" and not counted:
                with torch.no_grad():
                    self.dense_step_count += 1
        elif path == "op":
            # Triton decode kernels (set up by tardis.kernels.attach); kernel 1 adds the counters on the device.
            from tardis.kernels.op import ffn_decode

            y = ffn_decode(
                x2, self.kernel_pack, wf=self.wf, bf=self.bf, b1=self.b1, lo_in=self.lo_in, hi_in=self.hi_in,
                w1=self.w1, w2t=self.w2t, slope=self.slope, intercept=self.intercept, act=self.act,
                counts=self.counts, fp32_ok=fp32_ok, x_i8=x_i8,
            )  # fmt: skip
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
                i8_pred=self.i8_predictor(x2.device) if self.flag_mode == "predict_i8" else None,
            )
            count_step(self.counts, flags)
        return y

    def i8_predictor(self, device: torch.device) -> TiledPredictor:
        """The tiled predictor for flag mode "predict_i8" (the GPU's int8-x predictor, as a reference)."""
        from tardis.kernels.layout import tile_predictor

        if self._i8_pred is None or self._i8_pred.words.device != device:
            pack = getattr(self, "kernel_pack", None)
            if pack is not None:
                pred = pack.pred.to(device)
            elif self._predictor is not None:
                pred = tile_predictor(self._predictor.to(device))
            else:
                raise ValueError('flag mode "predict_i8" on CUDA needs the kernel pack (tardis.kernels.attach)')
            if not pred.fills_code_words:  # as the GPU's I8 path
                raise ValueError(
                    f'flag mode "predict_i8" needs an int2 predictor whose groups fill whole 16-code words '
                    f"(the GPU's int8-x path); this layer's is int{pred.bits} with groups of {pred.group_size}: "
                    'use flag mode "predict"'
                )
            self._i8_pred = pred
        return self._i8_pred

    def counters(self) -> dict[str, int]:
        """Live counters: flagged (neuron, token) pairs, tokens, per-step union sizes, TARDIS steps,
        and decode steps the policy ran dense (`dense_steps`, not in `tokens` or `steps`)."""
        return {**read_counts(self.counts), "dense_steps": int(self.dense_step_count), "neurons": self.neurons}

    def reset_counters(self) -> None:
        """Zero the live counters."""
        self.counts.zero_()
        self.dense_step_count.zero_()
