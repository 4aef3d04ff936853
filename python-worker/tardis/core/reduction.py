"""The three FFN reduction numbers of METHOD.md §2, in bytes with 16-bit model weights."""

from __future__ import annotations

from dataclasses import dataclass

WEIGHT_BYTES = 2  # fp16/bf16: how the paper counts parameters
LINE_BYTES = 16  # per neuron at run time: lo_in, hi_in, slope, intercept in fp32


@dataclass(frozen=True)
class LayerBytes:
    """Sizes of one folded layer."""

    d: int
    f: int
    predictor_bytes: int
    hot: int
    fallback_rate: float  # expected fraction of neurons recomputed per token (hot included)

    @property
    def dense(self) -> int:
        """W1, b1, W2, b2 of the original FFN."""
        return WEIGHT_BYTES * (2 * self.f * self.d + self.f + self.d)

    @property
    def folded(self) -> int:
        """Wf and bf."""
        return WEIGHT_BYTES * (self.d * self.d + self.d)

    @property
    def per_neuron(self) -> int:
        """One neuron's exact recomputation: a row of W1, b1_i and a row of W2ᵀ."""
        return WEIGHT_BYTES * (2 * self.d + 1)


def ffn_reductions(layers: list[LayerBytes]) -> dict[str, float]:
    """paper: (folded + predictor + hot neurons) vs dense; read: bytes read per decode token,
    adding the expected recomputed neurons; resident: bytes held in memory (negative: the original
    W1/W2 stay resident for the exact fallback)."""
    dense = sum(layer.dense for layer in layers)
    paper = sum(la.folded + la.predictor_bytes + la.hot * la.per_neuron for la in layers)
    read = sum(
        la.folded + la.predictor_bytes + LINE_BYTES * la.f + la.fallback_rate * la.f * la.per_neuron for la in layers
    )
    resident = sum(la.dense + la.folded + la.predictor_bytes + LINE_BYTES * la.f for la in layers)
    return {
        "ffn_reduction_paper": 1.0 - paper / dense,
        "ffn_reduction_read": 1.0 - read / dense,
        "ffn_reduction_resident": 1.0 - resident / dense,
    }
