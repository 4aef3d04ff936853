"""Every supported family, on a tiny random-weight model built here: exactness, folding, refusal of gated FFNs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers
from conftest import FAMILIES, build_model

import tardis
from tardis.engines import hf

SMALL = tardis.FoldConfig(calib_tokens=2048, heldout_tokens=512, seq_len=64, group_size=32, histogram_bins=128)
PROMPT = "the river city music army was the first king of the ship. it was"


def outputs(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Logits of a causal LM, last hidden state of an encoder."""
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("family", FAMILIES)
def test_with_every_neuron_flagged_tardis_equals_the_dense_model(family: str, tokenizer: Any, texts: list[str]) -> None:
    model = build_model(family, len(tokenizer))
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    dense = outputs(model, ids)
    variant = tardis.calibrate(model, tokenizer, texts, SMALL)
    modules = hf.install(model, variant, prefill="tardis")
    assert len(modules) == 2  # every tiny config has two layers
    hf.set_flag_mode(model, "all")
    exact = outputs(model, ids)
    assert float((exact - dense).abs().max()) < 1e-4
    hf.set_flag_mode(model, "predict")
    folded = outputs(model, ids)
    assert float((folded - dense).abs().max()) > 1e-4  # the fold really approximates
    counts = hf.counters(model)
    assert all(c["tokens"] == 2 * ids.shape[1] for c in counts)  # "all" pass + "predict" pass


def test_identity_activation_folds_exactly_with_no_fallback(tokenizer: Any, texts: list[str]) -> None:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_embd=64, n_layer=2, n_head=4, n_inner=256, vocab_size=len(tokenizer), activation_function="linear"
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    dense = outputs(model, ids)
    variant = tardis.calibrate(model, tokenizer, texts, SMALL)
    assert all(s["measured_fallback_rate"] == 0.0 and s["fit_rmse"] == 0.0 for s in variant.layer_stats)
    hf.install(model, variant, prefill="tardis")
    assert float((outputs(model, ids) - dense).abs().max()) < 1e-4
    assert sum(c["flagged"] for c in hf.counters(model)) == 0


def test_relu_model_reduces_to_activation_sparsity(tokenizer: Any, texts: list[str]) -> None:
    model = build_model("opt", len(tokenizer))
    variant = tardis.calibrate(model, tokenizer, texts, SMALL)
    for layer, stats in zip(variant.layers, variant.layer_stats, strict=True):
        assert stats["exact_pieces"] and stats["fit_rmse"] == 0.0
        neg = torch.isinf(layer.lo) & (layer.lo < 0)
        assert bool(((layer.hi == 0) & (layer.slope == 0) & (layer.intercept == 0))[neg].all())
        assert bool(((layer.lo == 0) & torch.isinf(layer.hi) & (layer.slope == 1))[~neg].all())


@pytest.mark.parametrize(
    "config",
    [
        transformers.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=64
        ),
        transformers.MistralConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=64
        ),
        transformers.GemmaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, head_dim=8, vocab_size=64
        ),
    ],
    ids=["llama", "mistral", "gemma"],
)
def test_gated_models_are_refused_with_the_reason(
    config: transformers.PretrainedConfig, tokenizer: Any, texts: list[str]
) -> None:
    model = transformers.AutoModelForCausalLM.from_config(config)
    with pytest.raises(tardis.GatedFFNError, match=r"gated FFN.*quadratic in x"):
        tardis.calibrate(model, tokenizer, texts, SMALL)


def test_unknown_family_names_the_supported_ones(tokenizer: Any, texts: list[str]) -> None:
    config = transformers.T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=4, vocab_size=64, d_kv=8)
    model = transformers.T5ForConditionalGeneration(config)
    with pytest.raises(tardis.UnsupportedModelError, match=r"no TARDIS adapter for model_type 't5'.*gpt2"):
        tardis.calibrate(model, tokenizer, texts, SMALL)


def test_predict_i8_flag_mode_is_the_int8_x_predictor(tokenizer: Any, texts: list[str]) -> None:
    # flag mode "predict_i8" (the CPU mirror of the GPU's I8 kernels): flags from x rounded to int8 per token
    # and group (layout.predict_i8), corrections exact, checked against a float64 recomputation
    from dataclasses import replace

    from tardis.core.activations import activation
    from tardis.kernels.layout import predict_i8, tile_predictor

    model = build_model("gpt2", len(tokenizer))
    variant = tardis.calibrate(model, tokenizer, texts, SMALL)
    modules = hf.install(model, variant, prefill="tardis")
    hf.set_flag_mode(model, "predict_i8")
    gen = torch.Generator().manual_seed(3)
    for m in modules:
        x = torch.randn(5, m.in_features, generator=gen) * 2
        with torch.no_grad():
            y = m(x)
        zhat = predict_i8(x, tile_predictor(m._predictor)) + m.b1.double()
        flags = (zhat < m.lo_in.double()) | (zhat > m.hi_in.double())
        assert 0 < int(flags.sum()) < flags.numel()
        xd = x.double()
        z = xd @ m.w1.double().T + m.b1.double()
        corr = (activation(m.act)(z) - m.slope.double() * z - m.intercept.double()) * flags
        want = xd @ m.wf.double().T + m.bf.double() + corr @ m.w2t.double()
        assert float((y.double() - want).abs().max() / want.abs().max()) < 1e-5
        assert m.counters()["flagged"] == int(flags.sum())
    # a predictor the int8-x path does not take (int3) is refused by name
    model3 = build_model("gpt2", len(tokenizer))
    variant3 = tardis.calibrate(model3, tokenizer, texts, replace(SMALL, predictor_bits=3))
    (m3, *_) = hf.install(model3, variant3, prefill="tardis")
    m3.flag_mode = "predict_i8"
    with pytest.raises(ValueError, match=r"predict_i8.*int3"):
        m3(torch.randn(2, m3.in_features))
