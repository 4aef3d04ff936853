"""The project's shipped decoder LMs (models/tardis-tiny-*) load, generate and match their model cards."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedModel

from tardis.train.lm import SLICE_TOKENS, sliding_window_nll, window_starts

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
MIB = 1024 * 1024
Shipped = tuple[str, Path, PreTrainedModel]
# name -> (architecture class, activation config key, activation, FFN weight that must be [4d, d])
EXPECTED = {
    "tardis-tiny-gpt2": ("GPT2LMHeadModel", "activation_function", "gelu_new", "transformer.h.0.mlp.c_fc"),
    "tardis-tiny-neox": ("GPTNeoXForCausalLM", "hidden_act", "gelu", "gpt_neox.layers.0.mlp.dense_h_to_4h"),
    "tardis-tiny-opt": ("OPTForCausalLM", "activation_function", "relu", "model.decoder.layers.0.fc1"),
}
# The CPU re-measurement may differ from the card's GPU float32 number only by kernel rounding.
PPL_TOLERANCE = 1.01


def _heldout_file() -> Path | None:
    """WikiText-2 test: $TARDIS_SHARED_DATA, else the shared data folder beside the checkout."""
    roots = [os.environ.get("TARDIS_SHARED_DATA"), REPO.parent / "shared" / "data", "/work/shared/data"]
    for root in roots:
        if root and (Path(root) / "wikitext-2" / "test.txt").is_file():
            return Path(root) / "wikitext-2" / "test.txt"
    return None


def _card_number(card: str, label: str) -> float:
    """Read one number out of a model card's markdown table row that starts with `label`."""
    match = re.search(rf"^\| {re.escape(label)}[^|]*\| ([0-9.,]+) ", card, flags=re.MULTILINE)
    assert match, f"model card has no row '{label}'"
    return float(match.group(1).replace(",", ""))


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def shipped(request: pytest.FixtureRequest) -> Shipped:
    """Each shipped model, loaded once in float32 on CPU."""
    name = request.param
    path = MODELS / name
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.eval()
    return name, path, model


def test_each_model_has_a_standard_hf_directory_with_small_float16_shards() -> None:
    total = 0
    for name in EXPECTED:
        path = MODELS / name
        for f in (
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "README.md",
        ):
            assert (path / f).is_file(), f"{name} lacks {f}"
        shards = sorted(path.glob("*.safetensors"))
        assert shards, f"{name} has no safetensors weights"
        for shard in shards:
            size = shard.stat().st_size
            assert size <= 16 * MIB, f"{shard} is {size / MIB:.1f} MiB, over 16 MiB"
            total += size
            with safe_open(str(shard), framework="pt") as st:
                dtypes = {st.get_slice(k).get_dtype() for k in st.keys()}  # noqa: SIM118
            assert dtypes == {"F16"}, f"{shard} stores {dtypes}, expected float16 only"
    assert total <= 48 * MIB, f"all models together take {total / MIB:.1f} MiB, over 48 MiB"


def test_config_names_the_architecture_and_a_non_gated_4d_ffn(
    shipped: Shipped,
) -> None:
    name, path, model = shipped
    arch, act_key, act, fc1 = EXPECTED[name]
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == [arch]
    assert config[act_key] == act
    assert type(model).__name__ == arch
    d = model.config.hidden_size
    weights = dict(model.named_parameters())
    w1 = weights[f"{fc1}.weight"]
    # GPT-2's Conv1D stores [in, out]; the others nn.Linear [out, in]
    assert sorted(w1.shape) == [d, 4 * d], f"{fc1} has shape {tuple(w1.shape)}, expected d={d}, f=4d"
    assert not any("gate" in n for n in weights), "a gated FFN is not what TARDIS folds"
    assert model.config.vocab_size == 8192


def test_greedy_generation_runs_and_is_deterministic(shipped: Shipped) -> None:
    _, path, model = shipped
    tok = AutoTokenizer.from_pretrained(str(path))
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 0
    prompt = tok("The history of the city", return_tensors="pt")
    generate = model.generate  # transformers' decorator hides its signature from mypy
    runs = [generate(**prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False) for _ in range(2)]  # type: ignore[operator]
    assert runs[0].shape == (1, prompt.input_ids.shape[1] + 8)
    assert torch.equal(runs[0], runs[1])
    text = str(tok.decode(runs[0][0, prompt.input_ids.shape[1] :]))
    assert text.strip(), "greedy continuation decoded to nothing"


def test_heldout_slice_perplexity_matches_the_model_card(shipped: Shipped) -> None:
    name, path, model = shipped
    heldout = _heldout_file()
    if heldout is None:
        pytest.skip("WikiText-2 test.txt not found: set TARDIS_SHARED_DATA to the shared data folder")
    card = (path / "README.md").read_text()
    card_slice = _card_number(card, f"perplexity on the first {SLICE_TOKENS} tokens")
    card_full = _card_number(card, "perplexity per BPE token")
    context = int(re.search(r"context (\d+), stride", card).group(1))  # type: ignore[union-attr]
    stride = int(re.search(r"stride (\d+)", card).group(1))  # type: ignore[union-attr]
    tok = AutoTokenizer.from_pretrained(str(path))
    # BPE merges stay inside pre-tokens, so a long enough prefix encodes like the whole file
    text = heldout.read_text(encoding="utf-8")[: 20 * SLICE_TOKENS]
    ids = np.asarray(tok(text).input_ids[:SLICE_TOKENS])
    total, count = sliding_window_nll(model, torch.from_numpy(ids), context, stride, batch_size=16)
    assert count == SLICE_TOKENS - 1
    ppl = math.exp(total / count)
    assert ppl <= card_slice * PPL_TOLERANCE, f"{name}: slice ppl {ppl:.2f} vs card {card_slice:.2f}"
    assert ppl >= card_slice / PPL_TOLERANCE, f"{name}: slice ppl {ppl:.2f} vs card {card_slice:.2f}"
    # and the card's whole-file number is that of a trained model, far from uniform over the vocab
    assert card_full < 8192 / 20


def test_sliding_window_scores_each_token_once_and_matches_one_pass() -> None:
    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=64, vocab_size=50)
    model = GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 50, (41,))
    for context, stride in [(16, 8), (16, 16), (16, 5), (64, 32)]:
        _, count = sliding_window_nll(model, ids, context, stride)
        assert count == ids.numel() - 1
    total, count = sliding_window_nll(model, ids, 64, 32)
    with torch.no_grad():
        one_pass = model(input_ids=ids[None], labels=ids[None]).loss.item()
    assert total / count == pytest.approx(one_pass, rel=1e-5)
    # token by token: target t is scored in the first window that contains it, at its position there
    context, stride = 16, 5
    starts = window_starts(ids.numel(), context, stride)
    expected = 0.0
    with torch.no_grad():
        for t in range(1, ids.numel()):
            s = next(s for s in starts if s + context > t)
            logits = model(input_ids=ids[None, s : s + context]).logits[0, t - s - 1]
            expected -= torch.log_softmax(logits, -1)[ids[t]].item()
    total, _ = sliding_window_nll(model, ids, context, stride, batch_size=3)
    assert total == pytest.approx(expected, rel=1e-5)
