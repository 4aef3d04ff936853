"""The end-to-end decode bench (bench/e2e_hf.py) on a tiny Falcon on the CPU, and the decode policy."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch
import transformers
from bench_scripts import load

from tardis import FoldConfig, calibrate
from tardis.engines import hf
from tardis.runtime.ffn import DECODE_MAX_TOKENS, TARDIS_MAX_DECODE_TOKENS, TardisFFN, step_path
from tardis.runtime.reference import dense_ffn, tardis_ffn
from tardis.variant import Variant

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--device", "cpu", "--layers", "2", "--hidden", "64", "--ffn", "256", "--heads", "4", "--vocab", "512",
    "--prompt-len", "16", "--new-tokens", "6", "--batches", "1,3", "--repeats", "1",
    "--calib-tokens", "1024", "--heldout-tokens", "256", "--seq-len", "64",
]  # fmt: skip


def _bench() -> ModuleType:
    return load("e2e_hf")


def _graph_safe_falcon(bench: ModuleType, argv: list[str], device: str, dtype: torch.dtype) -> tuple:
    """(args, model): the bench's arguments from argv and its random Falcon of that shape on device, graph-safe."""
    args = bench.parse_args(argv)
    model = bench.random_falcon(args, torch.device(device), dtype)
    bench.make_falcon_graph_safe(model)
    return args, model


def _decode_logits(bench: ModuleType, model: torch.nn.Module, prompts: torch.Tensor, steps: int) -> list:
    """The logits of a prefill of prompts and of `steps` greedy decode steps after it, through a static cache."""
    cache = bench.transformers.StaticCache(config=model.config, max_cache_len=prompts.shape[1] + 10)
    with torch.no_grad():
        out = [model(input_ids=prompts, past_key_values=cache, use_cache=True).logits]
        for _ in range(steps):
            out.append(model(input_ids=out[-1][:, -1:].argmax(-1), past_key_values=cache, use_cache=True).logits)
    return out


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The bench script loaded as a module (it is a script, not part of the package)."""
    pytest.importorskip("tardis.corpora").gensim_wheel()  # the corpus must be there (scripts/setup.sh)
    return _bench()


@pytest.fixture(scope="module")
def smoke(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One full CPU run: tiny Falcon (dense, calibrate, TARDIS) plus one small model, JSON read back."""
    out = tmp_path_factory.mktemp("e2e") / "e2e_hf.json"
    small = ["--small-models", "tardis-tiny-opt", "--small-new-tokens", "6", "--small-calib-tokens", "2048"]
    # a kernel run's rows for the tiny layer shape: TARDIS beats dense up to a union of 0.3
    ffn = out.parent / "ffn.json"
    rows = [
        {"d": 64, "f": 256, "union_frac": u, "tardis_us": 50.0 + 100 * u, "dense_us": 80.0} for u in (0.1, 0.3, 0.5)
    ]
    ffn.write_text(json.dumps({"rows": rows}))
    argv = [*TINY, *small, "--coverage", "0.95", "--policy-from", str(ffn), "--out", str(out)]
    assert bench.main(argv) == 0
    return json.loads(out.read_text())


def test_the_script_writes_every_section_with_sane_values(smoke: dict, bench: ModuleType) -> None:
    assert set(smoke) >= {"env", "args", "model", "calibration", "decode", "decode_settings", "small_models"}
    assert smoke["env"]["torch"] == torch.__version__
    assert smoke["env"]["transformers"] == transformers.__version__
    assert smoke["model"]["config"]["num_hidden_layers"] == 2 and smoke["model"]["ffn_hidden_size"] == 256
    cal = smoke["calibration"]
    assert 0.0 <= cal["measured_fallback_rate"] <= 1.0 and 0.0 <= cal["predictor_recall"] <= 1.0
    assert len(cal["per_layer"]) == 2
    assert cal["config"]["coverage"] == 0.95 and cal["config"]["predictor_bits"] == 2  # --coverage reaches calibrate
    assert [r["batch"] for r in smoke["decode"]] == [1, 3]
    att = smoke["attention"]  # --attention auto: both timed, the faster correct one used by both models
    assert smoke["greedy"] == {"applies": False, "kernel": False}  # the CPU: the torch ops
    assert att["applies"] and not att["errors"]
    assert att["choice"] in bench.ATTENTION_MODES
    assert att["mqa_logits_max_rel_diff"] < 1e-4 and att["mqa_triton_logits_max_rel_diff"] < 1e-4
    assert smoke["branch_streams"] == {"applies": False, "choice": 1}  # two streams are for CUDA devices
    assert smoke["gemv"] == {"applies": False}  # the GEMV launch A/B is for CUDA graphs
    assert smoke["ffn_output"] == {"applies": False, "choice": "finish"}  # kernel packs are CUDA's
    for r in smoke["decode"]:
        assert r["dense_tok_s"] > 0 and r["tardis_tok_s"] > 0
        assert r["ratio"] == pytest.approx(r["tardis_tok_s"] / r["dense_tok_s"])
        assert r["dense_graph"] is False and r["tardis_graph"] is False  # the CPU runs the same loop eagerly
        assert 0.0 <= r["ffn_share"] < 1.0
        # The CPU takes the reference path on every decode step: counted, never routed dense.
        assert 0.0 <= r["decode_fallback_rate"] <= 1.0
        assert r["decode_dense_steps"] == 0 and r["decode_tardis_steps"] >= 6
        assert 0.0 <= r["token_agreement"] <= 1.0
        bound = 1.0 / ((1.0 - r["ffn_share"]) + r["ffn_share"] / r["ffn_speedup_policy"])
        assert r["amdahl_bound_policy"] == pytest.approx(bound)
    assert smoke["errors"] == []


def test_the_decode_policy_can_come_from_a_kernel_run_and_the_union_curves(smoke: dict) -> None:
    pol = smoke["decode_policy"]
    assert pol["max_union"] == 0.3 and len(pol["limits"]) == 2
    assert all(isinstance(n, int) and 0 <= n <= 64 for n in pol["limits"])


def test_small_model_comparison_is_exact_when_both_sides_are_the_cpu_reference(smoke: dict) -> None:
    (m,) = smoke["small_models"]
    assert m["model"] == "tardis-tiny-opt" and m["fast_device"] == "cpu" and len(m["tardis"]) == 5
    # Same device, dtype and code on both sides: identical greedy tokens, so no divergence to explain.
    assert all(r["match"] and r["divergence"] is None for r in m["tardis"] + m["dense_control"])
    assert all(r["fast_counters"]["tardis_steps"] > 0 for r in m["tardis"])


def test_calibration_only_reports_the_band_and_times_nothing(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "cal.json"
    argv = [*TINY, "--calibration-only", "--skip-small-models", "--band-tolerance", "1.5", "--out", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert "decode" not in result and not result["small_models"] and not result["dense_partial"]
    assert result["errors"] == []
    cal = result["calibration"]
    assert cal["config"]["band_tolerance"] == 1.5 and cal["config"]["coverage"] == FoldConfig().coverage
    assert len(cal["per_layer"]) == 2 and all(r["band_widening"] > 1.0 for r in cal["per_layer"])
    assert 0.0 <= cal["measured_fallback_rate"] <= 1.0


def test_first_divergence_reports_the_position_and_the_cpu_margin(bench: ModuleType) -> None:
    logits = [torch.tensor([0.0, 3.0, 1.0]), torch.tensor([2.0, 0.5, 1.75])]
    d = bench.first_divergence([1, 2], [1, 0], logits)
    assert d == {"position": 1, "cpu_margin": pytest.approx(0.25), "gpu_token": 2, "cpu_token": 0}
    assert bench.first_divergence([1, 0], [1, 0], logits) is None


def test_the_int8_x_reference_is_compared_only_where_the_gpu_decode_runs_it(bench: ModuleType) -> None:
    # batch-1 decode on CUDA with the I8 launch and an int2 predictor of whole 16-code words: compare with
    # the CPU's "predict_i8" reference too; not on the CPU, with other predictors, or with I8 off
    from types import SimpleNamespace

    from tardis.kernels import blocks

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    variant = SimpleNamespace(config=SimpleNamespace(group_size=128, predictor_bits=2))
    saved = dict(blocks.PLANE_LAUNCH[1])
    try:
        blocks.PLANE_LAUNCH[1] = saved | {"I8": True}
        assert bench.i8_decode(cuda, variant) and not bench.i8_decode(cpu, variant)
        assert not bench.i8_decode(cuda, SimpleNamespace(config=SimpleNamespace(group_size=128, predictor_bits=3)))
        assert not bench.i8_decode(cuda, SimpleNamespace(config=SimpleNamespace(group_size=96, predictor_bits=2)))
        blocks.PLANE_LAUNCH[1] = saved | {"I8": False}
        assert not bench.i8_decode(cuda, variant)
    finally:
        blocks.PLANE_LAUNCH[1] = saved


def test_amdahl_bound_matches_method_section_5(bench: ModuleType) -> None:
    # METHOD.md §5 (its figures rounded): FFN = 76% of the bytes, S = 2.6x → ≈ 1.89x; S = 3.5x → ≈ 2.18x.
    assert bench.amdahl(0.76, 2.6) == pytest.approx(1.89, abs=0.015)
    assert bench.amdahl(0.76, 3.5) == pytest.approx(2.18, abs=0.015)
    assert bench.amdahl(0.5, 1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("tokens", [1, 2, 3, 4, 16, DECODE_MAX_TOKENS, DECODE_MAX_TOKENS + 1])
def test_step_path_runs_the_op_only_up_to_max_tardis_tokens(tokens: int) -> None:
    kw = {"mode": "tardis", "dense_prefill": False, "has_kernels": True, "flag_mode": "predict"}
    cuda = step_path(tokens=tokens, cuda=True, max_tardis_tokens=TARDIS_MAX_DECODE_TOKENS, **kw)  # type: ignore[arg-type]
    if tokens > DECODE_MAX_TOKENS:
        assert cuda == "reference"  # larger than the op supports
    else:
        assert cuda == ("op" if tokens <= TARDIS_MAX_DECODE_TOKENS else "policy_dense")
    # The CPU reference path keeps its accuracy semantics whatever the policy.
    assert step_path(tokens=tokens, cuda=False, max_tardis_tokens=0, **kw) == "reference"  # type: ignore[arg-type]
    assert step_path(tokens=tokens, cuda=True, max_tardis_tokens=10**6, **kw) in ("op", "reference")  # type: ignore[arg-type]


def test_step_path_keeps_dense_mode_prefill_and_oracle_flags_out_of_the_policy() -> None:
    base = {"tokens": 8, "cuda": True, "has_kernels": True, "max_tardis_tokens": 2}
    assert step_path(mode="dense", dense_prefill=False, flag_mode="predict", **base) == "dense"  # type: ignore[arg-type]
    assert step_path(mode="tardis", dense_prefill=True, flag_mode="predict", **base) == "dense"  # type: ignore[arg-type]
    assert step_path(mode="tardis", dense_prefill=False, flag_mode="oracle", **base) == "reference"  # type: ignore[arg-type]
    no_kernels = {**base, "has_kernels": False}
    assert step_path(mode="tardis", dense_prefill=False, flag_mode="predict", **no_kernels) == "reference"  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def opt_model() -> tuple[transformers.PreTrainedModel, list[TardisFFN], Variant]:
    """The project's tiny OPT with TARDIS installed (CPU, float32), calibrated on seeded synthetic text."""
    path = REPO / "models" / "tardis-tiny-opt"
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(5)
    vocab = [str(tok.decode([i])) for i in torch.randint(10, 8000, (3000,), generator=g).tolist()]
    texts = ["".join(vocab[i : i + 60]) for i in range(0, 3000, 60)]
    cfg = FoldConfig(calib_tokens=1024, heldout_tokens=256, seq_len=64, predictor_method="rtn")
    variant = calibrate(model, tok, texts, cfg)
    return model, hf.install(model, variant), variant


def test_set_decode_policy_reaches_every_module_and_rejects_bad_values(opt_model: tuple) -> None:
    model, modules, _ = opt_model
    assert all(m.max_tardis_tokens == TARDIS_MAX_DECODE_TOKENS for m in modules)
    hf.set_decode_policy(model, 0)
    assert all(m.max_tardis_tokens == 0 for m in modules)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="max_tokens"):
            hf.set_decode_policy(model, bad)  # type: ignore[arg-type]
    hf.set_decode_policy(model, TARDIS_MAX_DECODE_TOKENS)


def test_measured_union_curves_set_each_layers_decode_limit(opt_model: tuple) -> None:
    from tardis.kernels.policy import Policy, decode_token_limit

    model, modules, variant = opt_model
    curves = [s["union_curve"] for s in variant.layer_stats]
    assert all(c and c["1"] <= c["2"] <= c["4"] for c in curves)
    try:
        pol = Policy(max_union=curves[0]["2"])  # layer 0 may batch exactly 2 tokens (or more if flat)
        limits = hf.set_decode_policy_from_curves(model, variant, pol)
        assert limits == [m.max_tardis_tokens for m in modules]
        assert limits == [decode_token_limit(c, pol) for c in curves]
        assert limits[0] >= 2
        hf.set_decode_policy_from_curves(model, variant, Policy(max_union=-1.0))
        assert all(m.max_tardis_tokens == 0 for m in modules)  # nothing beats dense: every step dense
    finally:
        hf.set_decode_policy(model, TARDIS_MAX_DECODE_TOKENS)


def test_a_policy_dense_step_is_the_dense_ffn_and_is_counted(opt_model: tuple) -> None:
    _, modules, _ = opt_model
    ffn = modules[0]
    ffn.reset_counters()
    x = torch.randn(4, ffn.in_features, generator=torch.Generator().manual_seed(1))
    y = ffn.run_step("policy_dense", x)
    torch.testing.assert_close(y, dense_ffn(x, ffn.w1, ffn.b1, ffn.w2t, ffn.b2, ffn.act))
    c = ffn.counters()
    assert (c["dense_steps"], c["steps"], c["tokens"], c["flagged"]) == (1, 0, 0, 0)
    # The same 4-token step through forward on the CPU stays on the reference path (policy ignored).
    y_ref = ffn(x)
    expected, flags = tardis_ffn(
        x, w1=ffn.w1, b1=ffn.b1, w2t=ffn.w2t, wf=ffn.wf, bf=ffn.bf, w1q=ffn.w1q, lo_in=ffn.lo_in,
        hi_in=ffn.hi_in, lo=ffn.lo, hi=ffn.hi, slope=ffn.slope, intercept=ffn.intercept, act=ffn.act,
    )  # fmt: skip
    torch.testing.assert_close(y_ref, expected, rtol=0, atol=0)
    c = ffn.counters()
    assert (c["dense_steps"], c["steps"], c["tokens"], c["flagged"]) == (1, 1, 4, int(flags.sum()))
    hf.reset_counters(opt_model[0])
    assert ffn.counters()["dense_steps"] == 0


def test_graph_safe_falcon_split_heads_gives_identical_logits(bench: ModuleType) -> None:
    args = bench.parse_args(TINY)
    model = bench.random_falcon(args, torch.device("cpu"), torch.float32)
    ids = torch.randint(0, args.vocab, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        bench.make_falcon_graph_safe(model)
        after = model(input_ids=ids).logits
    assert any("_split_heads" in vars(m) for m in model.modules())  # the patch is in place
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_mqa_decode_attention_decodes_what_hf_attention_decodes(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --attention mqa: the query heads as one head's rows gives HF's logits at every decode step (batch 2, static
    # cache, rotary); prefill steps keep HF's own forward; off restores it
    calls: dict[str, int] = {}
    counted = ("rope_kv_write", "mqa_rope_attention", "layer_norm_rows", "add3", "add3_layer_norm", "decode_linear")
    for name in counted:
        fn = getattr(bench, name)

        def counting(*a: object, name: str = name, fn=fn, **kw: object) -> object:
            calls[name] = calls.get(name, 0) + 1
            if kw.get("by_length"):
                calls["by_length"] = calls.get("by_length", 0) + 1
            return fn(*a, **kw)

        monkeypatch.setattr(bench, name, counting)
    args, model = _graph_safe_falcon(bench, TINY, "cpu", torch.float32)
    prompts = torch.randint(0, args.vocab, (2, 10), generator=torch.Generator().manual_seed(8))
    stock = _decode_logits(bench, model, prompts, 4)
    # SDPA's, tardis::mqa_decode_attention's (CPU: its reference), that with tardis::rope_kv_write's rotary embedding
    # and cache write, and the two as tardis::mqa_rope_attention with the decoder layer's norm and residual adds in
    # tardis::layer_norm_rows and tardis::add3, a layer's adds and the next layer's norm in tardis::add3_layer_norm
    # (CPU: their references), and that with the two projections in tardis::decode_linear
    # (fused_model: the last layer's adds with the final norm in tardis::add3_layer_norm too, the rotary table;
    # fused_step: that with the attention reading the rotary tables at the write position, no mask)
    for mode in ("mqa", "mqa_triton", "mqa_fused", "fused_layer", "fused_gemv", "fused_model", "fused_step"):
        assert bench.set_decode_attention(model, mode) == args.layers
        calls.clear()
        for a, b in zip(stock, _decode_logits(bench, model, prompts, 4), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        steps = 4 * args.layers  # every decode step's layers (the prefill keeps HF's own paths)
        assert calls.get("rope_kv_write", 0) == (steps if mode == "mqa_fused" else 0), (mode, calls)
        fused = mode in ("fused_layer", "fused_gemv", "fused_model", "fused_step")  # a step: the first layer's
        # norm, the last layer's adds (fused_model: with the final norm), pairs
        trimmed = mode in ("fused_model", "fused_step")
        assert calls.get("mqa_rope_attention", 0) == (steps if fused else 0), (mode, calls)
        assert calls.get("by_length", 0) == (steps if mode == "fused_step" else 0), (mode, calls)
        gemv = mode in ("fused_gemv", "fused_model", "fused_step")
        assert calls.get("decode_linear", 0) == (2 * steps if gemv else 0), (mode, calls)
        assert calls.get("layer_norm_rows", 0) == (4 if fused else 0), (mode, calls)
        assert calls.get("add3", 0) == (4 if fused and not trimmed else 0), (mode, calls)
        assert calls.get("add3_layer_norm", 0) == (steps - 4 * (not trimmed) if fused else 0), (mode, calls)
    bench.set_decode_attention(model, "stock")
    assert all("forward" not in vars(m) or m.forward == m._stock_forward for m in model.modules())
    with pytest.raises(
        ValueError,
        match="attention mode 'flash': want one of stock, mqa, mqa_triton, mqa_fused, fused_layer, fused_gemv, "
        "fused_model, fused_step",
    ):
        bench.set_decode_attention(model, "flash")
    r = bench.attention_ab(model, prompts, bench.parse_args([*TINY, "--new-tokens", "3"]), False)
    assert r["applies"] and r["choice"] in bench.ATTENTION_MODES and not r["errors"]
    assert all(r[f"{m}_logits_max_rel_diff"] < 1e-4 and r[f"{m}_correct"] for m in bench.ATTENTION_MODES[1:])
    assert r["choice"] == min(bench.ATTENTION_MODES, key=lambda m: r[f"{m}_zero_ffn_step_ms"])


def test_bf16_attention_choice_is_judged_against_float32_weights(bench: ModuleType) -> None:
    # --attention auto on a bf16 model: both paths' logits against a float32 run of the same weights (the
    # reference), and the two paths in float32 must agree; the bf16 weights are put back, the same tensors
    args, model = _graph_safe_falcon(bench, [*TINY, "--new-tokens", "3"], "cpu", torch.bfloat16)
    before = dict(model.state_dict(keep_vars=True))
    prompts = torch.randint(0, args.vocab, (1, 10), generator=torch.Generator().manual_seed(10))
    r = bench.attention_ab(model, prompts, args, False)
    assert not r["errors"] and 0 < r["stock_err_vs_float32"] < 0.1
    candidates = ["stock"]
    for mode in bench.ATTENTION_MODES[1:]:
        assert r[f"{mode}_float32_max_rel_diff"] < 1e-4
        assert 0 < r[f"{mode}_err_vs_float32"] < 0.1  # bf16 rounding, not noise
        ok = r[f"{mode}_err_vs_float32"] <= bench.ATTENTION_ERR_RATIO * r["stock_err_vs_float32"]
        assert r[f"{mode}_correct"] is ok
        candidates += [mode] if ok else []
    assert r["choice"] == min(candidates, key=lambda m: r[f"{m}_zero_ffn_step_ms"])
    after = model.state_dict(keep_vars=True)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert {t.dtype for t in model.parameters()} == {torch.bfloat16}


def test_float32_weights_copies_and_puts_back_every_low_precision_tensor(bench: ModuleType) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)).to(torch.bfloat16)
    model.register_buffer("scale", torch.full((3,), 0.3, dtype=torch.bfloat16))
    model.register_buffer("ids", torch.arange(3))  # not floating: left as it is
    originals = dict(model.state_dict(keep_vars=True))
    restore = bench.float32_weights(model)
    assert all(t.dtype == torch.float32 for k, t in model.state_dict().items() if k != "ids")
    assert model.ids.dtype == torch.int64
    for k, t in model.state_dict().items():
        torch.testing.assert_close(t, originals[k].detach().to(t.dtype), rtol=0, atol=0)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(model(x), torch.nn.functional.layer_norm(
        x.double() @ originals["0.weight"].double().T + originals["0.bias"].double(), (3,),
        originals["1.weight"].double(), originals["1.bias"].double()).float(), rtol=1e-5, atol=1e-5)  # fmt: skip
    restore()
    assert all(t is originals[k] for k, t in model.state_dict(keep_vars=True).items())


def test_a_failing_mqa_attention_leaves_hf_attention_in_force(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --attention auto must not lose the run when the multi-query path fails: HF's own attention, the error recorded
    args, model = _graph_safe_falcon(bench, [*TINY, "--new-tokens", "3"], "cpu", torch.float32)

    def broken(self: object, *a: object, **kw: object) -> None:
        raise RuntimeError("no kernel for this layout")

    monkeypatch.setattr(bench, "mqa_decode_forward", broken)
    prompts = torch.randint(0, args.vocab, (1, 10), generator=torch.Generator().manual_seed(9))
    r = bench.attention_ab(model, prompts, args, False)
    assert r["choice"] == "stock" and set(r["errors"]) == set(bench.ATTENTION_MODES[1:])
    assert "no kernel for this layout" in r["errors"]["mqa"]
    # attention modules and decoder layers, (fused_model) the rotary embedding and final norm, (fused_step) the model
    patched = [m for m in model.modules() if "_stock_forward" in vars(m)]
    assert len(patched) == 2 * args.layers + 3 and all(m.forward == m._stock_forward for m in patched)


def test_random_falcon_has_the_requested_shape_and_init(bench: ModuleType) -> None:
    args = bench.parse_args(TINY)
    model = bench.random_falcon(args, torch.device("cpu"), torch.float32)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.ffn_hidden_size, cfg.vocab_size) == (64, 2, 256, 512)
    assert cfg.multi_query and cfg.parallel_attn and not cfg.new_decoder_architecture and not cfg.bias
    w = model.transformer.h[0].mlp.dense_h_to_4h.weight
    assert abs(float(w.detach().std()) - 0.02) < 0.002
    assert torch.equal(model.transformer.h[0].input_layernorm.weight, torch.ones(64))


def test_the_static_cache_decode_loop_reproduces_greedy_generate(bench: ModuleType) -> None:
    # The timed loop (prefill, rewound static cache, in-place next ids) must decode what generate() decodes.
    args = bench.parse_args(TINY)
    model = bench.random_falcon(args, torch.device("cpu"), torch.float32)
    prompts = torch.randint(0, args.vocab, (2, 10), generator=torch.Generator().manual_seed(4))
    r = bench.time_decode(model, prompts, 6, 2, False)
    with torch.no_grad():
        ref = model.generate(input_ids=prompts, max_new_tokens=7, do_sample=False, num_beams=1, min_new_tokens=7)
    assert r["tokens"].shape == (2, 6)
    assert torch.equal(r["tokens"], ref[:, 11:])
    bench.GREEDY["kernel"] = True  # the loop's writes through tardis::greedy_step (CPU: the same torch ops)
    try:
        assert torch.equal(bench.time_decode(model, prompts, 6, 1, False)["tokens"], ref[:, 11:])
    finally:
        bench.GREEDY["kernel"] = False


def test_the_greedy_ab_needs_cuda_graphs(bench: ModuleType) -> None:
    assert bench.greedy_ab(torch.device("cpu"), torch.float32, 512, [1, 3], False) == {
        "applies": False,
        "kernel": False,
    }
    assert not bench.GREEDY["kernel"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_greedy_ab_checks_and_times_the_kernel_on_gpu(bench: ModuleType) -> None:
    # Falcon's vocabulary in bf16 at the e2e run's batches: the kernel agrees with the torch ops (ties, NaNs) and
    # both are timed; it is used only if faster
    try:
        r = bench.greedy_ab(torch.device("cuda"), torch.bfloat16, 65024, [1, 4, 16], True)
        assert r["applies"] and "error" not in r, r
        assert r["kernel_us"] > 0 and r["torch_us"] > 0 and r["kernel"] == (r["kernel_us"] < r["torch_us"])
        assert bench.GREEDY["kernel"] == r["kernel"]
    finally:
        bench.GREEDY["kernel"] = False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_kernel_profile_of_a_graphed_decode_step_on_gpu(bench: ModuleType) -> None:
    # --profile-kernels: the kernels of the replayed step graph are seen, each step's kernel time is within its
    # wall time, and the step's GEMMs are among them
    args, model = _graph_safe_falcon(bench, TINY, "cuda", torch.bfloat16)
    prompts = torch.randint(0, args.vocab, (1, 10), generator=torch.Generator().manual_seed(6))
    r = bench.time_decode(model, prompts, 5, 1, True, profile=True)
    k = r["kernels"]
    assert r["graph"] and k["steps"] == 5 and k["top"]  # min(16, new tokens): the static cache holds no more
    assert 0 < k["kernel_us_per_step"] <= k["wall_us_per_step"]
    assert k["launches_per_step"] >= 2 * args.layers  # at least the layers' GEMMs, every step
    assert bench.time_decode(model, prompts, 5, 1, True)["kernels"] is None


def test_kernel_launch_choices_of_an_ffn_bench_run_reach_the_launcher(bench: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("triton")
    from tardis.kernels import blocks, decode

    saved_plane = dict(blocks.PLANE_LAUNCH)
    saved = decode.launch_settings()  # every launcher setting besides the plane launch
    chosen = {"plane_launch": {"1": blocks.PLANE_LAUNCH[1] | {"I8": True}}, "small_updown_batch": 0}
    updown = {"PROGRAMS_PER_SM": 8, "UP_SPLITS": 36}
    path = tmp_path / "ffn.json"
    extra = {"fused_updown_batch": 2, "updown_launch": updown, "pdl_updown": True, "down_early": True}
    extra |= {"wf_up_frac": 0.1, "wf_down_frac": 0.23, "up_in_k1": True}
    extra |= {"list_ahead": not decode.LIST_AHEAD, "one_close": not decode.ONE_CLOSE}
    path.write_text(json.dumps(chosen | extra))
    try:
        applied = bench.apply_kernel_launch(str(path))
        assert blocks.PLANE_LAUNCH[1]["I8"] and decode.FUSED_UPDOWN_BATCH == 2
        assert applied["fused_updown_batch"] == 2 and applied["small_updown_batch"] == 0
        assert decode.PDL_UPDOWN and applied["pdl_updown"]
        assert decode.DOWN_EARLY and applied["down_early"]
        moved = (applied["wf_up_frac"], applied["wf_down_frac"])
        assert (decode.WF_UP_FRAC, decode.WF_DOWN_FRAC) == (0.1, 0.23) == moved
        assert decode.UP_IN_K1 and applied["up_in_k1"]
        assert decode.LIST_AHEAD == applied["list_ahead"] != saved["list_ahead"]
        assert decode.ONE_CLOSE == applied["one_close"] != saved["one_close"]
        assert decode.PROGRAMS_PER_SM == 8 and decode.UP_SPLITS == 36
        assert applied["updown_launch"] == saved["updown_launch"] | updown
        path.write_text(json.dumps(chosen | {"updown_launch": {"UP_SPLIT": 4}}))
        with pytest.raises(SystemExit, match="unknown up/down launch setting 'UP_SPLIT'"):
            bench.apply_kernel_launch(str(path))
        # a JSON from before a launch key was retired still works while that key is off; not when it is on
        old = {"1": blocks.PLANE_BASE | {"SK": 0, "BMF": 8}}
        path.write_text(json.dumps({"plane_launch": old}))
        bench.apply_kernel_launch(str(path))
        assert "SK" not in blocks.PLANE_LAUNCH[1] and blocks.PLANE_LAUNCH[1]["BMF"] == 8
        path.write_text(json.dumps({"plane_launch": {"1": {"SK": 2}}}))
        with pytest.raises(SystemExit, match="settings this kernel does not take: SK"):
            bench.apply_kernel_launch(str(path))
    finally:
        blocks.PLANE_LAUNCH.clear()
        blocks.PLANE_LAUNCH.update(saved_plane)
        decode.apply_launch_settings(saved)


def test_kernel_launch_choices_are_timed_against_the_committed_ones_on_the_models_layers(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an ffn_bench choice of folded-row moves and an up/down launch: the e2e run times it, the committed moves, the
    # committed up/down launch and both on its own FFN layers, keeps the fastest (the decode rows use it) and
    # records each; candidates equal to an earlier one are left out, and one that fails (here: the committed
    # up/down launch with the chosen moves, made to fail) is recorded and left out, not the run
    pytest.importorskip("triton")
    from tardis.kernels import blocks, decode

    committed = decode.launch_settings()
    chosen = committed | {"wf_down_frac": 0.23, "updown_launch": committed["updown_launch"] | {"UP_SPLITS": 18}}
    cands = bench.launch_candidates(committed, chosen)
    assert list(cands) == ["chosen", "committed_moves", "committed_updown", "committed_moves_updown"]
    assert cands["committed_moves_updown"] == committed and cands["committed_moves"]["updown_launch"]["UP_SPLITS"] == 18
    assert list(bench.launch_candidates(committed, committed)) == ["chosen"]
    assert list(bench.launch_candidates(committed, committed | {"wf_up_frac": 0.1})) == ["chosen", "committed_moves"]

    saved_plane = dict(blocks.PLANE_LAUNCH)
    path = tmp_path / "ffn.json"
    path.write_text(json.dumps({"plane_launch": {"1": blocks.PLANE_LAUNCH[1]}} | chosen))
    out = tmp_path / "e2e.json"
    argv = [*TINY, "--batches", "1", "--skip-small-models", "--kernel-launch", str(path), "--out", str(out)]
    real_time = bench.time_ffn_layers

    def time_layers(*args: object, **kwargs: object) -> float:
        now = decode.launch_settings()
        if now["wf_down_frac"] == 0.23 and now["updown_launch"] == committed["updown_launch"]:
            raise RuntimeError("this launch failed")
        return real_time(*args, **kwargs)

    monkeypatch.setattr(bench, "time_ffn_layers", time_layers)
    try:
        assert bench.main(argv) == 0
        ab = json.loads(out.read_text())["launch_ab"]
        assert list(ab["errors"]) == ["committed_updown"] and "this launch failed" in ab["errors"]["committed_updown"]
        del cands["committed_updown"]
        assert list(ab["us"]) == list(cands) and all(t > 0 for t in ab["us"].values())
        assert all(d == 0.0 for d in ab["rel_diff"].values())  # the CPU op: the reference path under every launch
        assert ab["best"] == min(ab["us"], key=ab["us"].get)
        assert ab["applied"] == cands[ab["best"]] == decode.launch_settings()
    finally:
        decode.apply_launch_settings(committed)
        blocks.PLANE_LAUNCH.clear()
        blocks.PLANE_LAUNCH.update(saved_plane)


def test_kernel_launch_choices_folded_row_moves_hold_at_both_rates() -> None:
    # ffn_bench times the folded-row moves at 5% and at 10% and keeps the pair with the least summed time among
    # those correct at both rates: not the 5% winner when it loses more at 10%, never a pair wrong at either
    pytest.importorskip("triton")
    ffn = load("ffn_bench")
    keys = [f"u{u:g}_d{d:g}" for u, d in ffn.WF_MOVES]
    at5 = {"us": {k: 50.0 for k in keys}, "rel_err": {k: 1e-3 for k in keys}}
    at10 = {"us": {k: 60.0 for k in keys}, "rel_err": {k: 1e-3 for k in keys}}
    at5["us"][keys[-1]], at10["us"][keys[-1]] = 48.0, 63.0  # best at 5%, 1 µs worse in sum
    at5["us"][keys[1]], at10["us"][keys[1]] = 49.0, 59.5  # 1.5 µs better in sum
    at5["us"][keys[2]], at10["us"][keys[2]] = 40.0, 50.0  # fastest at both, but wrong at 10%
    at10["rel_err"][keys[2]] = 0.5
    both = ffn.wf_moves_both(at5, at10)
    assert both["best"] == keys[1] and (both["best_up"], both["best_down"]) == ffn.WF_MOVES[1]
    at10["rel_err"] = {k: 0.5 for k in keys}
    with pytest.raises(ValueError):  # no pair correct at both rates: nothing to choose
        ffn.wf_moves_both(at5, at10)


def test_the_compiled_decode_step_decodes_what_the_eager_step_decodes(bench: ModuleType) -> None:
    # --compile: the same loop with the step's forward through torch.compile (inductor on the CPU here)
    args = bench.parse_args(TINY)
    model = bench.random_falcon(args, torch.device("cpu"), torch.float32)
    prompts = torch.randint(0, args.vocab, (2, 10), generator=torch.Generator().manual_seed(5))
    eager = bench.time_decode(model, prompts, 5, 1, False)
    compiled = bench.time_decode(model, prompts, 5, 1, False, compile_step=True)
    assert torch.equal(compiled["tokens"], eager["tokens"])


@pytest.mark.parametrize("mode", ["fused_layer", "fused_model", "fused_step"])
def test_fused_layer_mode_decodes_what_hf_decodes_eager_and_compiled(bench: ModuleType, mode: str) -> None:
    # --attention fused_layer: eager steps run tardis::mqa_rope_attention, layer_norm_rows, add3 and
    # add3_layer_norm (CPU references); fused_model also the rotary table and the final norm in the last adds;
    # a compiled step keeps HF's rotary, cache and norm code (the patched forwards step aside while dynamo traces)
    args, model = _graph_safe_falcon(bench, TINY, "cpu", torch.float32)
    prompts = torch.randint(0, args.vocab, (2, 10), generator=torch.Generator().manual_seed(12))
    stock = bench.time_decode(model, prompts, 5, 1, False)
    assert bench.set_decode_attention(model, mode) == args.layers
    fused = bench.time_decode(model, prompts, 5, 1, False)
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = bench.time_decode(model, prompts, 5, 1, False, compile_step=True)
    assert torch.equal(fused["tokens"], stock["tokens"]) and torch.equal(compiled["tokens"], stock["tokens"])
    assert not counters["graph_break"], dict(counters["graph_break"])  # one graph a step, not a frame a layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_model_mode_looks_up_the_rotary_embedding_and_takes_the_final_norm_from_the_last_adds(
    bench: ModuleType, dtype: torch.dtype
) -> None:
    # mode fused_model: a decode step's cos and sin come from a table the module's own forward computed once, the
    # same bits as that forward at each position; the final norm's module runs only where the last layer's adds
    # did not norm (the prefill); a position past the table fails the lookup rather than clamping
    args, model = _graph_safe_falcon(bench, TINY, "cpu", dtype)
    rotary, ln_f = model.transformer.rotary_emb, model.transformer.ln_f
    x = torch.zeros(1, dtype=dtype)
    n = model.config.max_position_embeddings
    bench.set_decode_attention(model, "fused_model")
    for pos in [*torch.randint(0, n, (12,), generator=torch.Generator().manual_seed(21)).tolist(), 0, n - 1]:
        ids = torch.tensor([[pos]])
        got, want = rotary(x, ids), rotary._stock_forward(x, ids)
        assert all(torch.equal(g, w) and g.dtype == dtype for g, w in zip(got, want, strict=True))
    with pytest.raises((IndexError, RuntimeError)):
        rotary(x, torch.tensor([[n]]))
    stock_norms: list[int] = []
    stock_ln = ln_f._stock_forward
    ln_f._stock_forward = lambda t: stock_norms.append(t.shape[1]) or stock_ln(t)
    prompts = torch.randint(0, args.vocab, (2, 10), generator=torch.Generator().manual_seed(22))
    fused = _decode_logits(bench, model, prompts, 4)
    assert stock_norms == [10]  # the prefill's; no decode step's
    ln_f._stock_forward = stock_ln
    bench.set_decode_attention(model, "stock")
    for a, b in zip(_decode_logits(bench, model, prompts, 4), fused, strict=True):
        torch.testing.assert_close(b, a, rtol=2e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-2)


def test_fused_step_mode_skips_hf_positions_and_mask_and_matches_fused_model_bit_for_bit(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mode fused_step: a decode step builds no causal mask and no position ids (HF's code for them does not run),
    # the rotary embedding's forward is not called, and the logits are fused_model's bit for bit (the attention's
    # length mask and table rows are the values HF's mask and fused_model's lookup give); prefill, a mask or
    # positions given, and a dynamic cache take HF's own forward
    from transformers.models.falcon import modeling_falcon

    args, model = _graph_safe_falcon(bench, TINY, "cpu", torch.float32)
    prompts = torch.randint(0, args.vocab, (2, 10), generator=torch.Generator().manual_seed(23))
    bench.set_decode_attention(model, "fused_model")
    want = _decode_logits(bench, model, prompts, 5)
    masks: list[int] = []
    real_mask = modeling_falcon.create_causal_mask
    monkeypatch.setattr(modeling_falcon, "create_causal_mask", lambda **kw: masks.append(1) or real_mask(**kw))
    rotary = model.transformer.rotary_emb
    bench.set_decode_attention(model, "fused_step")
    lookups: list[int] = []
    real_rotary = rotary.forward
    rotary.forward = lambda x, position_ids: lookups.append(position_ids.shape[1]) or real_rotary(x, position_ids)
    got = _decode_logits(bench, model, prompts, 5)
    assert masks == [1] and lookups == [10]  # the prefill's only
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    assert model.transformer.forward.__func__ is bench.step_model_forward
    # a decode step with a mask, with positions, or over a dynamic cache: HF's own forward, the same logits
    masks.clear()
    cache = transformers.StaticCache(config=model.config, max_cache_len=16)
    with torch.no_grad():
        model(input_ids=prompts, past_key_values=cache, use_cache=True)
        tok = prompts[:, -1:]
        kept = torch.ones(2, 11, dtype=torch.long)
        a = model(input_ids=tok, past_key_values=cache, use_cache=True, attention_mask=kept).logits
        bench.rewind_cache(cache, 10)
        b = model(input_ids=tok, past_key_values=cache, use_cache=True).logits
        bench.rewind_cache(cache, 10)
        c = model(input_ids=tok, past_key_values=cache, use_cache=True, position_ids=torch.tensor([[10], [10]])).logits
        dyn = model(input_ids=prompts, use_cache=True)
        d = model(input_ids=tok, past_key_values=dyn.past_key_values, use_cache=True).logits
    assert len(masks) == 5  # the prefill, the masked step, the positioned step, the dynamic prefill and step
    for t in (a, c, d):
        torch.testing.assert_close(t, b, rtol=1e-5, atol=1e-5)
    # a layer whose attention cannot read the tables fails loudly, never silently wrong
    model.transformer.h[1].self_attention._mqa_kernel = "sdpa"
    bench.rewind_cache(cache, 10)
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"LengthRope.*need the rope_attention kernel.*'sdpa'"):
        model(input_ids=tok, past_key_values=cache, use_cache=True)
    bench.set_decode_attention(model, "stock")
    assert model.transformer.forward == model.transformer._stock_forward


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_attention_mode_decodes_what_hf_decodes_on_gpu(bench: ModuleType) -> None:
    # float32 on the GPU: each decode step's logits (the Triton kernels, the cache they write, the fused norms and
    # adds) against HF's own path, step after step, so a key or value written to the wrong slot shows
    args, model = _graph_safe_falcon(bench, TINY, "cuda", torch.float32)
    prompts = torch.randint(0, args.vocab, (2, 10), generator=torch.Generator().manual_seed(14)).cuda()
    bench.set_decode_attention(model, "stock")
    stock = _decode_logits(bench, model, prompts, 6)
    for mode in bench.ATTENTION_MODES[1:]:
        bench.set_decode_attention(model, mode)
        for i, (a, b) in enumerate(zip(stock, _decode_logits(bench, model, prompts, 6), strict=True)):
            assert bench.rel_max_diff(b, a) < 1e-4, (mode, i, bench.rel_max_diff(b, a))


def test_branch_streams_apply_to_fused_layer_layers_on_cuda_only(bench: ModuleType) -> None:
    args = bench.parse_args([*TINY, "--branch-streams", "2"])
    model = bench.random_falcon(args, torch.device("cpu"), torch.float32)
    bench.set_decode_attention(model, "fused_layer")
    assert bench.set_branch_streams(model, 2) == 0  # the CPU: one stream
    assert bench.branch_streams_ab(model, torch.zeros(1, 4, dtype=torch.long), args, False) == {
        "applies": False,
        "choice": 1,
    }
    with pytest.raises(ValueError, match="branch streams 3: want 1 or 2"):
        bench.set_branch_streams(model, 3)
    with pytest.raises(ValueError, match="branch priority 'ffn': want one of none, attention, mlp"):
        bench.set_branch_streams(model, 2, "ffn")
    assert bench.STREAM_CONFIGS == ((1, "none"), (2, "none"), (2, "attention"), (2, "mlp"))
    assert [bench.stream_key(*c) for c in bench.STREAM_CONFIGS] == ["1", "2", "2_attention", "2_mlp"]
    # each model's choice: the TARDIS model's own where its A/B ran, else the dense model's
    assert bench.stream_choice({"choice": 1}) == bench.stream_choice({"choice": 1}, "tardis_") == (1, "none")
    both = {"choice": 2, "priority": "none", "tardis_choice": 2, "tardis_priority": "attention"}
    assert (bench.stream_choice(both), bench.stream_choice(both, "tardis_")) == ((2, "none"), (2, "attention"))
    errors: list[str] = []
    bench.tardis_streams_ab(model, torch.zeros(1, 4, dtype=torch.long), args, False, {"applies": False}, errors)
    assert errors == []


def test_the_branch_stream_a_bs_keep_each_models_fastest_configuration(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the A/Bs' bookkeeping on the CPU, where two streams do not apply: set_branch_streams records the configuration
    # and the decode's step time comes from a table (test_the_branch_stream_a_b_..._on_gpu times the real thing)
    state = {"config": (1, "none")}

    def set_streams(model: object, n: int, priority: str = "none") -> int:
        state["config"] = (n, priority)
        return 2

    ms: dict = {(1, "none"): 5.6, (2, "none"): 5.0, (2, "attention"): 5.0, (2, "mlp"): 4.9}

    def decode(model: object, prompts: torch.Tensor, new_tokens: int, repeats: int, use_graph: bool) -> dict:
        if ms[state["config"]] is None:
            raise RuntimeError("capture failed")
        return {"step_ms": ms[state["config"]], "graph_error": None, "tokens": torch.zeros(1, 3)}

    monkeypatch.setattr(bench, "set_branch_streams", set_streams)
    monkeypatch.setattr(bench, "time_decode", decode)
    prompts = torch.zeros(1, 4, dtype=torch.long)
    streams = bench.branch_streams_ab(None, prompts, bench.parse_args(TINY), True)
    assert (streams["choice"], streams["priority"], state["config"]) == (2, "mlp", (2, "mlp"))
    assert [streams[f"dense_step_ms_{k}"] for k in ("1", "2", "2_attention", "2_mlp")] == [5.6, 5.0, 5.0, 4.9]
    assert streams["dense_token_agreement_2_mlp"] == 1.0
    ms.update({(1, "none"): 3.1, (2, "none"): 2.7, (2, "attention"): 2.55, (2, "mlp"): None})  # the TARDIS model
    errors: list[str] = []
    bench.tardis_streams_ab(None, prompts, bench.parse_args(TINY), True, streams, errors)
    assert errors == ["tardis B=1 with branch streams 2_mlp: RuntimeError('capture failed')"]
    assert bench.stream_choice(streams, "tardis_") == state["config"] == (2, "attention")
    assert bench.stream_choice(streams) == (2, "mlp") and "tardis_step_ms_2_mlp" not in streams
    # a fixed configuration: both models keep it, the TARDIS model's step recorded with it and with one stream
    fixed_args = bench.parse_args([*TINY, "--branch-streams", "2", "--branch-priority", "attention"])
    fixed = bench.branch_streams_ab(None, prompts, fixed_args, True)
    assert fixed == {"applies": True, "choice": 2, "priority": "attention"}
    bench.tardis_streams_ab(None, prompts, fixed_args, True, fixed, errors)
    assert (fixed["tardis_step_ms_1"], fixed["tardis_step_ms_2_attention"]) == (3.1, 2.55)
    assert bench.stream_choice(fixed, "tardis_") == state["config"] == (2, "attention")


def _kept_the_fastest_correct(r: dict, candidates: tuple, kept: dict, tol: float) -> None:
    """A launch A/B's result r: every candidate run, correct (error under tol) and timed, the fastest now `kept`."""
    assert [c["launch"] for c in r["candidates"]] == [dict(c) for c in candidates]
    assert all(c["correct"] and 0 < c["max_rel_err"] < tol and c["us"] > 0 for c in r["candidates"]), r
    assert r["best"] == min(r["candidates"], key=lambda c: c["us"])["launch"] == kept


def test_a_launch_a_b_keeps_the_fastest_correct_launch_and_survives_a_failing_one(bench: ModuleType) -> None:
    # the A/B both launch A/Bs share, with measurements from a table: a launch that raises and one that is wrong are
    # left out; the fastest correct one is left in force; with none correct the launch before stays
    from types import SimpleNamespace

    table = {1: (1e-3, 9.0), 2: (5e-2, 1.0), 3: (2e-3, 7.5), 4: None}
    mod = SimpleNamespace(LAUNCH={"k": 0})

    def measure() -> tuple[float, float]:
        row = table[mod.LAUNCH["k"]]
        if row is None:
            raise RuntimeError("does not compile")
        return row

    r = bench.fastest_correct_launch(mod, "LAUNCH", [{"k": k} for k in table], measure, 1e-2)
    assert r["default"] == {"k": 0} and r["best"] == mod.LAUNCH == {"k": 3} and r["best_us"] == 7.5
    assert [c.get("correct") for c in r["candidates"]] == [True, False, True, None]
    assert "does not compile" in r["candidates"][3]["error"]
    mod.LAUNCH = {"k": 0}
    none = bench.fastest_correct_launch(mod, "LAUNCH", [{"k": 2}, {"k": 4}], measure, 1e-2)
    assert "best" not in none and mod.LAUNCH == {"k": 0}


def test_the_gemv_launch_a_b_is_for_cuda_graphs_only(bench: ModuleType) -> None:
    args = bench.parse_args(TINY)
    model = bench.random_falcon(args, torch.device("cpu"), torch.float32)
    assert bench.gemv_ab(model, args, True) == {"applies": False}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_gemv_launch_a_b_keeps_the_fastest_correct_launch_on_gpu(bench: ModuleType) -> None:
    # --gemv auto: every candidate launch checked and timed on the model's own projections, the fastest kept for
    # mode fused_gemv; --gemv no-pdl leaves the PDL launches out; --gemv off leaves the launch alone
    from tardis.kernels import gemv_triton

    args, model = _graph_safe_falcon(bench, TINY, "cuda", torch.bfloat16)
    default = dict(gemv_triton.GEMV_LAUNCH)
    try:
        r = bench.gemv_ab(model, args, True)
        assert r["applies"] and r["layers"] == args.layers and r["linear_us"] > 0
        _kept_the_fastest_correct(r, gemv_triton.GEMV_CANDIDATES, gemv_triton.GEMV_LAUNCH, 1e-2)
        no_pdl = bench.gemv_ab(model, bench.parse_args([*TINY, "--gemv", "no-pdl"]), True)
        assert [c["launch"] for c in no_pdl["candidates"]] == [c for c in gemv_triton.GEMV_CANDIDATES if "pdl" not in c]
        assert "pdl" not in gemv_triton.GEMV_LAUNCH
    finally:
        gemv_triton.GEMV_LAUNCH = default
    assert bench.gemv_ab(model, bench.parse_args([*TINY, "--gemv", "off"]), True) == {"applies": False}
    assert bench.gemv_ab(model, bench.parse_args([*TINY, "--attention", "fused_layer"]), True) == {"applies": False}
    assert default == gemv_triton.GEMV_LAUNCH


def test_the_attention_kernel_a_b_is_for_cuda_graphs_only(bench: ModuleType) -> None:
    args = bench.parse_args(TINY)
    model = bench.random_falcon(args, torch.device("cpu"), torch.float32)
    assert bench.attention_kernel_ab(model, args, True) == {"applies": False}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_attention_kernel_a_b_keeps_the_fastest_correct_launch_on_gpu(bench: ModuleType) -> None:
    # --attention-kernel auto: every candidate (split cache, rows kernel) checked against float64 and timed on the
    # model's own shapes, the fastest kept, as fused_step runs the op (by_length) where --attention may pick it,
    # else with the step's rows and a mask; committed, or an attention mode without the tardis ops: left alone
    from tardis.kernels import attention_triton

    args, model = _graph_safe_falcon(bench, TINY, "cuda", torch.bfloat16)
    default = dict(attention_triton.ATTENTION_LAUNCH)
    for extra, by_length in (([], True), (["--attention", "fused_layer"], False)):
        try:
            r = bench.attention_kernel_ab(model, bench.parse_args([*TINY, *extra]), True)
            assert r["applies"] and r["layers"] == args.layers and r["by_length"] is by_length
            assert r["slots"] == args.prompt_len + args.new_tokens + 4
            launches = attention_triton.ATTENTION_CANDIDATES
            _kept_the_fastest_correct(r, launches, attention_triton.ATTENTION_LAUNCH, 2e-2)
            assert r["default"] == default
        finally:
            attention_triton.ATTENTION_LAUNCH = default
    for extra in (["--attention-kernel", "committed"], ["--attention", "mqa"], ["--attention", "stock"]):
        assert bench.attention_kernel_ab(model, bench.parse_args([*TINY, *extra]), True) == {"applies": False}
    assert default == attention_triton.ATTENTION_LAUNCH


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_two_branch_streams_decode_what_one_stream_decodes_on_gpu(bench: ModuleType) -> None:
    # the attention branch on a side stream beside the MLP: the same kernels, so the same greedy tokens, eager and
    # through a captured graph (the fork and join are captured as the graph's branches); another attention mode
    # or set_decode_attention again puts one stream back
    args, model = _graph_safe_falcon(bench, TINY, "cuda", torch.bfloat16)
    prompts = torch.randint(0, args.vocab, (2, 10), generator=torch.Generator().manual_seed(13))
    assert bench.set_decode_attention(model, "fused_layer") == args.layers
    one = [bench.time_decode(model, prompts, 6, 1, g)["tokens"] for g in (False, True)]
    for priority in bench.BRANCH_PRIORITIES:  # the MLP on the side stream with "mlp"; a high-priority one unless none
        assert bench.set_branch_streams(model, 2, priority) == args.layers
        layers = [m for m in model.modules() if hasattr(m, "_side_stream")]
        assert all(m._side_mlp == (priority == "mlp") for m in layers)
        assert all((m._side_stream.priority < 0) == (priority != "none") for m in layers)
        two = [bench.time_decode(model, prompts, 6, 1, g) for g in (False, True)]
        assert two[1]["graph"] and two[1]["graph_error"] is None
        for a, b in zip(one, two, strict=True):
            assert torch.equal(a, b["tokens"]), priority
    bench.set_decode_attention(model, "fused_layer")
    assert all(m._side_stream is None for m in model.modules() if hasattr(m, "_side_stream"))
    bench.set_branch_streams(model, 2)
    bench.set_decode_attention(model, "mqa_triton")
    assert bench.set_branch_streams(model, 2) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_side_stream_is_never_the_capture_stream_on_gpu(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    # PyTorch hands its pool streams out in turn, so a side stream drawn when the pool comes round again would be the
    # capture stream (the branches then on one stream, silently): side_stream draws past it, and a layer whose side
    # stream is the current one raises
    monkeypatch.setattr(bench, "CAPTURE_STREAMS", {})
    monkeypatch.setattr(bench, "SIDE_STREAMS", {})
    dev = torch.device("cuda", torch.cuda.current_device())
    cap = bench.capture_stream()
    assert bench.capture_stream(torch.device("cuda")) is cap and bench.capture_stream(dev) is cap
    period = next((n for n in range(1, 129) if torch.cuda.Stream(dev) == cap), None)
    if period is not None:  # the pool came round: draw so that its next stream is the capture stream
        assert [torch.cuda.Stream(dev) for _ in range(period)][-1] == cap
        for _ in range(period - 1):
            torch.cuda.Stream(dev)
    low = bench.side_stream(dev, False)
    high = bench.side_stream(torch.device("cuda"), True)
    assert low not in (cap, torch.cuda.default_stream(dev), high) and high != cap
    assert low.priority == 0 and high.priority < 0
    assert bench.side_stream(dev, False) is low and bench.side_stream(dev, True) is high
    args, model = _graph_safe_falcon(bench, TINY, "cuda", torch.bfloat16)
    bench.set_decode_attention(model, "fused_layer")
    assert bench.set_branch_streams(model, 2) == args.layers
    assert all(m._side_stream is low for m in model.modules() if hasattr(m, "_side_stream"))
    prompts = torch.randint(0, args.vocab, (1, 10), generator=torch.Generator().manual_seed(15))
    assert bench.time_decode(model, prompts, 3, 1, True)["graph_error"] is None
    for m in model.modules():
        if hasattr(m, "_side_stream"):
            m._side_stream = torch.cuda.current_stream(dev)
    with pytest.raises(RuntimeError, match="is the current stream"):
        bench.time_decode(model, prompts, 3, 1, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_branch_stream_a_b_keeps_the_fastest_configuration_on_gpu(bench: ModuleType) -> None:
    # --branch-streams auto: one stream and two with each priority timed on the dense model's batch-1 decode, the
    # same greedy tokens in each, the fastest left in force; --branch-priority mlp: one stream against that only
    args, model = _graph_safe_falcon(bench, TINY, "cuda", torch.bfloat16)
    bench.set_decode_attention(model, "fused_layer")
    prompts = torch.randint(0, args.vocab, (1, 10), generator=torch.Generator().manual_seed(14))
    r = bench.branch_streams_ab(model, prompts, args, True)
    keys = [bench.stream_key(*c) for c in bench.STREAM_CONFIGS]
    assert r["applies"] and all(r[f"graph_error_{k}"] is None and r[f"dense_step_ms_{k}"] > 0 for k in keys), r
    assert all(r[f"dense_token_agreement_{k}"] == 1.0 for k in keys[1:]), r
    best = min(keys, key=lambda k: r[f"dense_step_ms_{k}"])
    assert bench.stream_key(r["choice"], r["priority"]) == best
    layers = [m for m in model.modules() if hasattr(m, "_side_stream")]
    assert all((m._side_stream is None) == (r["choice"] == 1) for m in layers)
    # the same configurations timed again (here on the same model) as the TARDIS model's A/B: its own fastest kept
    errors: list[str] = []
    bench.tardis_streams_ab(model, prompts, args, True, r, errors)
    assert errors == [] and all(r[f"tardis_step_ms_{k}"] > 0 for k in keys)
    assert bench.stream_key(*bench.stream_choice(r, "tardis_")) == min(keys, key=lambda k: r[f"tardis_step_ms_{k}"])
    fixed = bench.branch_streams_ab(model, prompts, bench.parse_args([*TINY, "--branch-priority", "mlp"]), True)
    assert sorted(k for k in fixed if k.startswith("dense_step_ms_")) == ["dense_step_ms_1", "dense_step_ms_2_mlp"]
    assert bench.stream_key(fixed["choice"], fixed["priority"]) in ("1", "2_mlp")


def test_compile_batches_add_compiled_runs_after_the_uncompiled_ones(bench: ModuleType) -> None:
    assert bench.decode_runs([1, 4, 16], [], False) == [(1, False), (4, False), (16, False)]
    assert bench.decode_runs([1, 4], [4, 2], False) == [(1, False), (4, False), (4, True), (2, True)]
    assert bench.decode_runs([1, 4], [4, 4], True) == [(1, True), (4, True)]  # --compile: already compiled
    assert bench.decode_runs([1, 4], [2], True) == [(1, True), (4, True), (2, True)]
    assert bench.parse_batches("1,,4") == [1, 4] and bench.parse_batches("") == []
    assert [bench.run_key(4, False), bench.run_key(4, True)] == ["4", "4c"]


def test_compile_batches_time_both_modes_with_one_calibration(bench: ModuleType, tmp_path: Path) -> None:
    # One run, one calibration: B=1 as --batches gives it, then B=1 with torch.compile'd steps (≈ 15 s here).
    out = tmp_path / "both.json"
    argv = [*TINY, "--batches", "1", "--compile-batches", "1", "--skip-small-models", "--out", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["errors"] == [] and "dense_partial" not in result
    assert result["decode_settings"]["runs"] == ["1", "1c"]
    plain, compiled = result["decode"]
    assert (plain["batch"], plain["compiled"], compiled["batch"], compiled["compiled"]) == (1, False, 1, True)
    for r in (plain, compiled):
        assert math.isfinite(r["dense_tok_s"]) and r["dense_tok_s"] > 0
        assert math.isfinite(r["tardis_tok_s"]) and r["tardis_tok_s"] > 0
        assert 0.0 <= r["token_agreement"] <= 1.0  # TARDIS vs dense of the same mode
        assert r["decode_tardis_steps"] >= 6  # the compiled step still counts on the modules' counters
    assert plain["dense_agreement_uncompiled"] is None and plain["tardis_agreement_uncompiled"] is None
    # CPU float32: inductor's fused kernels give the same greedy tokens as the eager step (the same holds
    # for the dense pair), so the two TARDIS runs decode identical tokens.
    assert compiled["tardis_agreement_uncompiled"] == 1.0 and compiled["dense_agreement_uncompiled"] == 1.0
    assert compiled["decode_fallback_rate"] == pytest.approx(plain["decode_fallback_rate"])
    # the FFN timings call the modules directly: the compiled row reuses the uncompiled row's
    assert (compiled["ffn_op_us"], compiled["ffn_policy_us"]) == (plain["ffn_op_us"], plain["ffn_policy_us"])
    assert compiled["ffn_dense_us"] == plain["ffn_dense_us"]
    table = bench.table(result)
    assert "\n| 1 | " in table and "\n| 1c | " in table
    assert "greedy writes" not in table  # the CPU: no greedy A/B; a GPU run's line:
    result["greedy"] = {"applies": True, "kernel": True, "torch_us": 21.25, "kernel_us": 5.5}
    assert "\ngreedy writes: tardis::greedy_step (µs at B=1: torch 21.25, kernel 5.50)" in bench.table(result)


def test_a_failed_compiled_run_is_an_error_and_keeps_the_other_rows(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    time_decode = bench.time_decode

    def failing(*args: object, **kwargs: object) -> dict:
        if kwargs.get("compile_step", args[5] if len(args) > 5 else False):
            raise RuntimeError("compile failed")
        return time_decode(*args, **kwargs)

    snapshots: list[dict] = []
    write_json = bench.write_json

    def recording(path: Path, result: dict) -> None:
        snapshots.append(json.loads(json.dumps(result, default=str)))
        write_json(path, result)

    monkeypatch.setattr(bench, "time_decode", failing)
    monkeypatch.setattr(bench, "write_json", recording)
    out = tmp_path / "fail.json"
    argv = [*TINY, "--batches", "1", "--compile-batches", "1,3", "--skip-small-models", "--out", str(out)]
    assert bench.main(argv) == 1
    result = json.loads(out.read_text())
    assert [(r["batch"], r["compiled"]) for r in result["decode"]] == [(1, False)]
    assert result["errors"] == [
        "dense B=1 compiled: RuntimeError('compile failed')",
        "dense B=3 compiled: RuntimeError('compile failed')",
    ]
    # written as it went: the dense row (string keys) before calibration, the TARDIS row before the end
    assert any(s.get("dense_partial", {}).keys() == {"1"} and "calibration" not in s for s in snapshots)
    assert any(len(s.get("decode", [])) == 1 and "tardis_phase_s" not in s for s in snapshots)
    assert "| 1 | " in bench.table(result)


def test_the_op_branch_counts_on_the_device_counters_and_matches_the_reference(opt_model: tuple) -> None:
    # run_step("op") is what a CUDA decode step within the policy runs; on the CPU the custom op
    # `tardis::ffn_decode` is its reference implementation, so the branch's wiring is checked here.
    from tardis.kernels import attach

    _, modules, variant = opt_model
    ffn = modules[1]
    attach(ffn, variant.layers[1].predictor)
    assert ffn.path_for(torch.zeros(1, ffn.in_features)) == "reference"  # CPU: the policy does not apply
    ffn.reset_counters()
    x = torch.randn(2, ffn.in_features, generator=torch.Generator().manual_seed(2))
    y_op = ffn.run_step("op", x)
    c = ffn.counters()
    y_ref = ffn.run_step("reference", x)
    torch.testing.assert_close(y_op, y_ref)
    assert (c["tokens"], c["steps"], c["dense_steps"]) == (2, 1, 0)
    assert ffn.counters()["flagged"] == 2 * c["flagged"]  # both paths flag the same pairs
    del ffn.kernel_pack


def test_the_op_branch_traces_into_one_graph_for_a_compiled_decode_step(opt_model: tuple) -> None:
    # What `e2e_hf.py --compile` asks of a TARDIS module on CUDA: its op branch (the import, the
    # custom op, the counter updates) traced whole (fullgraph), same output and counts as eager.
    from tardis.kernels import attach

    _, modules, variant = opt_model
    ffn = modules[0]
    attach(ffn, variant.layers[0].predictor)
    try:
        x = torch.randn(1, ffn.in_features, generator=torch.Generator().manual_seed(3))
        ffn.reset_counters()
        eager = ffn.run_step("op", x)
        once = ffn.counters()
        compiled = torch.compile(lambda v: ffn.run_step("op", v), fullgraph=True, dynamic=False)
        torch.testing.assert_close(compiled(x), eager)
        after = ffn.counters()
        assert (after["tokens"], after["steps"]) == (2, 2)
        assert after["flagged"] == 2 * once["flagged"]
    finally:
        del ffn.kernel_pack


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_ffn_output_a_b_checks_and_times_the_float32_output_on_gpu(bench: ModuleType, tmp_path: Path) -> None:
    # --ffn-output auto on a tiny bf16 Falcon in a fused mode: the op's float32 output (repeated calls without the
    # finish kernel), and with int8 x words made outside the op, against the finish kernel's; then batch 1 timed
    # each way (fp32_xq: the decoder layers' norms write the next MLP's words), the fastest correct one kept for the
    # batch-1 row
    out = tmp_path / "e2e.json"
    argv = [*TINY, "--device", "cuda", "--batches", "1", "--skip-small-models", "--attention", "fused_layer"]
    assert bench.main([*argv, "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    ffn = r["ffn_output"]
    assert ffn["applies"] and ffn["correct"] and ffn["fp32_dtype"] == "float32", ffn
    assert ffn["xq_correct"] and ffn["xq_fp32_dtype"] == "float32", ffn
    assert max(ffn["max_rel_err"], ffn["xq_max_rel_err"]) < bench.FFN_OUTPUT_TOL
    steps = {m: ffn[f"{m}_step_ms"] for m in bench.FFN_OUTPUTS}
    assert min(steps.values()) > 0 and 0 <= ffn["xq_token_agreement"] <= 1
    assert ffn["choice"] == min(steps, key=lambda m: steps[m])
    assert r["errors"] == [] and [row["batch"] for row in r["decode"]] == [1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_int8_x_words_from_the_norms_give_the_op_calls_own_output_on_gpu(bench: ModuleType) -> None:
    # A tiny bf16 Falcon with TARDIS installed, fused decode steps in the float32-output mode: with "fp32_xq" every
    # layer but the first takes its MLP's int8 x words from the previous layer's add3_layer_norm_i8 (the op launches
    # no int8 x kernel there); the logits are those of "fp32" (the same words; the word sums may differ in the last
    # bit) and the greedy tokens too
    args, model = _graph_safe_falcon(bench, TINY, "cuda", torch.bfloat16)
    tok = bench.VocabMappedTokenizer(transformers.AutoTokenizer.from_pretrained(str(bench.TOKENIZER)), args.vocab)
    g = torch.Generator().manual_seed(6)
    words = [str(i) for i in torch.randint(0, 5000, (3000,), generator=g).tolist()]
    texts = [" ".join(words[i : i + 60]) for i in range(0, 3000, 60)]
    cfg = FoldConfig(calib_tokens=1024, heldout_tokens=256, seq_len=64, predictor_method="rtn")
    modules = hf.install(model, calibrate(model, tok, texts, cfg))
    assert all(m.int8_x_layout(1) is not None for m in modules) and bench.set_decode_attention(model, "fused_layer")
    prompts = torch.randint(0, args.vocab, (1, 10), generator=torch.Generator().manual_seed(7)).cuda()
    logits, calls = {}, {}
    for mode in ("fp32", "fp32_xq"):
        bench.set_ffn_output(modules, mode)
        seen: list[bool] = []
        hooks = [
            m.register_forward_pre_hook(lambda _m, _a, kw, seen=seen: seen.append(kw.get("x_i8") is not None),
                                        with_kwargs=True)
            for m in modules
        ]  # fmt: skip
        try:
            logits[mode] = _decode_logits(bench, model, prompts, 3)
        finally:
            for h in hooks:
                h.remove()
        calls[mode] = seen[-3 * len(modules) :]
    bench.set_ffn_output(modules, "finish")
    n = len(modules)
    assert calls["fp32"] == [False] * 3 * n and calls["fp32_xq"] == ([False] + [True] * (n - 1)) * 3, calls
    for a, b in zip(logits["fp32"], logits["fp32_xq"], strict=True):
        assert bench.rel_max_diff(b.float(), a.float()) <= 1e-3
        assert torch.equal(a[:, -1].argmax(-1), b[:, -1].argmax(-1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the decode policy applies on CUDA only")
def test_policy_dense_steps_are_counted_once_per_model_step_for_the_layers_they_apply_to_on_gpu(
    opt_model: tuple,
) -> None:
    # The pre-forward hook counts a model step's policy dense steps for all layers in one launch; each layer
    # counts only where its own limit sends the step dense, and kernel 1 counts the op's tokens and steps.
    _, _, variant = opt_model
    path = REPO / "models" / "tardis-tiny-opt"
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).to("cuda").eval()
    modules = hf.install(model, variant)
    assert len(modules) >= 2
    hf.set_decode_policy(model, 0)
    modules[1].max_tardis_tokens = DECODE_MAX_TOKENS  # a mixed policy: layer 1 runs the op
    ids = torch.randint(10, 8000, (4, 1), generator=torch.Generator().manual_seed(4)).to("cuda")
    with torch.no_grad():
        for _ in range(3):
            model(input_ids=ids, use_cache=False)
    counts = hf.counters(model)
    for i, c in enumerate(counts):
        want = (0, 3, 12) if i == 1 else (3, 0, 0)
        assert (c["dense_steps"], c["steps"], c["tokens"]) == want, (i, c)
    assert not any(m.dense_counted for m in modules)
    # a module called on its own (no hook) counts its policy dense step itself
    x = torch.randn(4, modules[0].in_features, device="cuda")
    assert modules[0].path_for(x) == "policy_dense"
    modules[0](x)
    assert modules[0].counters()["dense_steps"] == 4
