"""Magnitude, Wanda and RIA pruning of FFN weights: hand-checked masks, exact sparsity, in-place writes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import build_model

from tardis.arch.registry import adapter_for
from tardis.config import FoldConfig
from tardis.data import token_batches
from tardis.eval.baselines import (
    collect_input_norms,
    keep_mask,
    mask_for,
    prune_ffns,
    scores,
    sparsity_for_reduction,
)

T, F = True, False


def test_magnitude_prunes_the_smallest_weights_of_the_whole_matrix() -> None:
    w = torch.tensor([[1.0, -4.0, 2.0], [3.0, 0.5, -6.0]])
    # |W| sorted: 0.5, 1, 2 | 3, 4, 6 -> the first three go, wherever they sit
    assert mask_for("magnitude", w, 0.5).tolist() == [[F, T, F], [T, F, T]]


def test_wanda_weighs_each_weight_by_its_input_norm_and_prunes_per_output_row() -> None:
    w = torch.tensor([[1.0, -4.0, 2.0], [3.0, 0.5, -6.0]])
    norm = torch.tensor([3.0, 1.0, 1.0])
    # |W|·‖X‖: row 0 = [3, 4, 2], row 1 = [9, 0.5, 6]; keep the best one of three per row
    assert scores("wanda", w, norm).tolist() == [[3.0, 4.0, 2.0], [9.0, 0.5, 6.0]]
    assert mask_for("wanda", w, 2 / 3, norm).tolist() == [[F, T, F], [T, F, F]]
    # magnitude at the same sparsity keeps the two largest of the whole matrix: 4 (row 0) and 6 (row 1)
    assert mask_for("magnitude", w, 2 / 3).tolist() == [[F, T, F], [F, F, T]]


def test_ria_is_relative_importance_times_root_input_norm_per_output_row() -> None:
    w = torch.tensor([[1.0, -3.0], [2.0, 4.0]])
    norm = torch.tensor([4.0, 1.0])
    # row sums |W|: [4, 6]; column sums: [3, 7]; sqrt(norm) = [2, 1]
    expected = torch.tensor(
        [
            [(1 / 4 + 1 / 3) * 2, (3 / 4 + 3 / 7) * 1],  # 1.1667, 1.1786
            [(2 / 6 + 2 / 3) * 2, (4 / 6 + 4 / 7) * 1],  # 2.0,    1.2381
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(scores("ria", w, norm), expected)
    assert mask_for("ria", w, 0.5, norm).tolist() == [[F, T], [T, F]]
    # the three methods disagree on this matrix
    assert mask_for("wanda", w, 0.5, norm).tolist() == [[T, F], [T, F]]
    assert mask_for("magnitude", w, 0.5).tolist() == [[F, T], [F, T]]


def test_with_equal_input_norms_wanda_is_per_row_magnitude() -> None:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(8, 24, generator=g)
    assert torch.equal(mask_for("wanda", w, 0.6, torch.ones(24)), keep_mask(w.abs(), 0.6, per_row=True))
    skewed = torch.rand(24, generator=g) * 10
    assert not torch.equal(mask_for("wanda", w, 0.6, skewed), mask_for("wanda", w, 0.6, torch.ones(24)))
    assert not torch.equal(mask_for("ria", w, 0.6, skewed), mask_for("wanda", w, 0.6, skewed))


@pytest.mark.parametrize("sparsity", [0.5, 0.6, 0.7, 0.8, 0.805])
def test_pruning_hits_the_exact_sparsity(sparsity: float) -> None:
    g = torch.Generator().manual_seed(4)
    w, norm = torch.randn(16, 40, generator=g), torch.rand(40, generator=g)
    assert int((~mask_for("magnitude", w, sparsity)).sum()) == round(sparsity * 640)
    k = round(sparsity * 640)
    for method in ("wanda", "ria"):
        pruned_per_row = (~mask_for(method, w, sparsity, norm)).sum(1)  # type: ignore[arg-type]
        assert int(pruned_per_row.sum()) == k
        assert pruned_per_row.tolist() == [k // 16 + 1] * (k % 16) + [k // 16] * (16 - k % 16)


def test_sparsity_for_reduction_is_the_reduction_clamped() -> None:
    assert sparsity_for_reduction(0.805) == 0.805
    assert sparsity_for_reduction(-0.2) == 0.0
    assert sparsity_for_reduction(1.3) == 1.0


def test_wanda_needs_input_norms() -> None:
    with pytest.raises(ValueError, match="input norms"):
        scores("wanda", torch.ones(2, 2))


@pytest.fixture(scope="module")
def norms_setup(tokenizer: Any, texts: list[str]) -> tuple[torch.nn.Module, list[Any], list[torch.Tensor]]:
    model = build_model("gpt2", len(tokenizer))
    batches = token_batches(tokenizer, texts, FoldConfig(calib_tokens=256, heldout_tokens=0, seq_len=32))[0]
    return model, collect_input_norms(model, batches), batches


def test_input_norms_are_sums_of_squares_of_the_ffn_input_and_activation(norms_setup: Any) -> None:
    model, norms, batches = norms_setup
    mlp = model.transformer.h[1].mlp
    seen: list[torch.Tensor] = []
    handle = mlp.register_forward_pre_hook(lambda _m, args: seen.append(args[0].reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        for b in batches:
            model(input_ids=b)
        handle.remove()
        x = torch.cat(seen).double()
        h = mlp.act(mlp.c_fc(x.float())).double()  # the model's own Conv1D and activation
    assert norms[1].tokens == x.shape[0] == 256
    torch.testing.assert_close(norms[1].x_sq, x.pow(2).sum(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norms[1].h_sq, h.pow(2).sum(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "ria"])
@pytest.mark.parametrize("family", ["gpt2", "opt"])
def test_prune_ffns_writes_the_masks_into_the_model_parameters(
    family: str, method: str, tokenizer: Any, texts: list[str]
) -> None:
    model = build_model(family, len(tokenizer))
    batches = token_batches(tokenizer, texts, FoldConfig(calib_tokens=128, heldout_tokens=0, seq_len=32))[0]
    norms = collect_input_norms(model, batches)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sites = adapter_for(model).sites(model)
    expected = [
        (mask_for(method, s.w1, 0.7, norms[k].x_norm()), mask_for(method, s.w2, 0.7, norms[k].h_norm()))  # type: ignore[arg-type]
        for k, s in enumerate(sites)
    ]
    info = prune_ffns(model, method, 0.7, norms)  # type: ignore[arg-type]
    assert info["sparsity"] == sum(round(0.7 * m.numel()) for pair in expected for m in pair) / info["ffn_weights"]
    sites = adapter_for(model).sites(model)  # fresh views of the (now pruned) parameters
    for s, (m1, m2) in zip(sites, expected, strict=True):
        assert torch.equal(s.w1 == 0, ~m1) and torch.equal(s.w2 == 0, ~m2)
    ffn_names = ("c_fc.weight", "mlp.c_proj.weight", "fc1.weight", "fc2.weight")
    for n, p in model.named_parameters():
        if n.endswith(ffn_names):
            assert not torch.equal(p, before[n]), n
        else:
            assert torch.equal(p, before[n]), f"{n} is not an FFN weight and must stay untouched"
