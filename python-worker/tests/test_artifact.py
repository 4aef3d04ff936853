"""The variant artifact: round trip, hashes, atomic writes, clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import saved_model

import tardis
from tardis.engines import hf

SMALL = tardis.FoldConfig(calib_tokens=2048, heldout_tokens=512, seq_len=64, group_size=32, histogram_bins=128)


@pytest.fixture(scope="module")
def gpt2_variant(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any, texts: list[str]) -> tuple[Any, Path]:
    root = tmp_path_factory.mktemp("art")
    base = saved_model("gpt2", len(tokenizer), root / "base")
    variant = tardis.calibrate(base, tokenizer, texts, SMALL)
    path = variant.save(root / "variant")
    return base, path


def test_calibrate_save_load_gives_identical_logits_and_generate_works(
    gpt2_variant: tuple[Any, Path], tokenizer: Any
) -> None:
    base, path = gpt2_variant
    ids = torch.tensor([tokenizer("the king of the city was")["input_ids"]])
    variant = tardis.read_variant(path)
    hf.install(base, variant, prefill="tardis")
    model, tok = tardis.load(path)
    hf.set_prefill(model, "tardis")
    with torch.no_grad():
        assert torch.equal(base(input_ids=ids).logits, model(input_ids=ids).logits)
    out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id)
    assert out.shape == (1, ids.shape[1] + 8)
    decode_steps = [c["steps"] for c in hf.counters(model)]
    assert all(s >= 7 for s in decode_steps)  # decode tokens ran TARDIS (prefill too: prefill="tardis")


def test_artifact_layout_manifest_and_content_id(gpt2_variant: tuple[Any, Path]) -> None:
    _, path = gpt2_variant
    manifest = json.loads((path / "manifest.json").read_text())
    assert {"tardis.safetensors", "config.json", "tokenizer.json"} <= set(manifest["files"])
    assert manifest["base_model"]["linked"] and (path / "model.safetensors").is_symlink()
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["TardisGPT2LMHeadModel"]
    assert len(manifest["variant_id"]) == 64
    report = manifest["report"]
    for key in ("ffn_reduction_paper", "ffn_reduction_read", "ffn_reduction_resident", "layers"):
        assert key in report
    assert report["ffn_reduction_resident"] < 0
    assert not list(path.parent.glob(".variant.tmp-*"))  # the temporary directory was renamed away


def test_a_corrupted_file_fails_with_its_name(gpt2_variant: tuple[Any, Path], tmp_path: Path) -> None:
    _, path = gpt2_variant
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(path, copy, symlinks=True)
    sidecar = copy / "tardis.safetensors"
    data = bytearray(sidecar.read_bytes())
    data[-10] ^= 0xFF
    sidecar.write_bytes(bytes(data))
    with pytest.raises(tardis.ArtifactError, match=r"tardis\.safetensors does not match its recorded sha256"):
        tardis.load(copy)
    (copy / "tardis.safetensors").unlink()
    with pytest.raises(tardis.ArtifactError, match=r"tardis\.safetensors is missing"):
        tardis.load(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(tardis.ArtifactError, match=r"not a TARDIS variant: manifest\.json is missing"):
        tardis.load(copy)


def test_saving_over_an_existing_variant_needs_overwrite(gpt2_variant: tuple[Any, Path]) -> None:
    _, path = gpt2_variant
    variant = tardis.read_variant(path)
    with pytest.raises(tardis.ArtifactError, match="already exists"):
        variant.save(path)


def test_in_memory_base_model_must_be_copied_explicitly(tokenizer: Any, texts: list[str], tmp_path: Path) -> None:
    from conftest import build_model

    model = build_model("gpt_neox", len(tokenizer))
    variant = tardis.calibrate(model, tokenizer, texts, SMALL)
    with pytest.raises(tardis.ArtifactError, match=r"built in memory.*base_weights='copy'"):
        variant.save(tmp_path / "v")
    path = variant.save(tmp_path / "v", base_weights="copy", model=model)
    loaded, _ = tardis.load(path)
    assert len(hf.tardis_modules(loaded)) == 2
