"""`tardis::greedy_step`: the CPU op against the torch ops it replaces, the checks and the fake impl, and the Triton
kernels against torch.argmax (on the GPU, and in Triton's interpreter on the CPU), ties and NaNs included."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from tardis.kernels.greedy import greedy_step

HAS_CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# (rows, vocabulary, output columns, step): Falcon's vocabulary (32 chunks), a vocabulary one past a chunk and one
# inside one, a step past the last column (clamped), more rows than the merge kernel takes at a time
CASES = [(1, 65024, 8, 3), (3, 2049, 4, 10), (2, 7, 2, 0), (17, 4100, 5, 1)]


def _logits(b: int, v: int, dtype: torch.dtype, seed: int, device: str = "cpu") -> torch.Tensor:
    """[B, 2, V]: random rows, and in the last position row 1 with a tie for the largest (first index wins) and,
    where there are three rows, row 2 with NaNs (the first NaN wins, as torch.argmax has it)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 2, v, generator=g)
    if b > 1:
        at = torch.randperm(v, generator=g)[:2].sort().values
        x[1, -1, at] = x[1, -1].max() + 1
    if b > 2 and v > 3:
        x[2, -1, [v - 1, 1]] = float("nan")
    return x.to(device=device, dtype=dtype)


def _check(b: int, v: int, t: int, s: int, dtype: torch.dtype, device: str, seed: int) -> None:
    x = _logits(b, v, dtype, seed, device)
    last = x[:, -1]  # strided rows, as the decode loop passes them
    ids = torch.full((b, 1), -7, dtype=torch.long, device=device)
    tokens = torch.full((b, t), -7, dtype=torch.long, device=device)
    step = torch.tensor([s], device=device)
    greedy_step(last, ids, tokens, step)
    want = last.float().cpu().argmax(-1)  # the CPU's torch.argmax: first index of the largest, NaN the largest
    col = min(s, t - 1)
    assert torch.equal(ids[:, 0].cpu(), want) and torch.equal(tokens[:, col].cpu(), want), (ids, want)
    others = torch.cat([tokens[:, :col], tokens[:, col + 1 :]], 1)
    assert bool((others == -7).all()) and int(step) == s + 1


def test_the_cpu_op_is_argmax_then_the_writes() -> None:
    for i, (b, v, t, s) in enumerate(CASES):
        _check(b, v, t, s, torch.float32, "cpu", seed=i)


def test_inputs_are_checked_with_the_fix_named() -> None:
    logits = torch.zeros(2, 9)
    ids, tokens, step = torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long), torch.zeros(1).long()
    with pytest.raises(ValueError, match=r"greedy_step: logits \(2, 1, 9\) torch.float32: want floating \[B, V\]"):
        greedy_step(logits[:, None], ids, tokens, step)
    with pytest.raises(ValueError, match=r"ids \(3, 1\), tokens \(2, 4\): want ids \[B, 1\] and tokens \[B, T\]"):
        greedy_step(logits, torch.zeros(3, 1, dtype=torch.long), tokens, step)
    with pytest.raises(ValueError, match=r"want int64 ids and tokens and an int64 step of shape \[1\]"):
        greedy_step(logits, ids, tokens.int(), step)
    with pytest.raises(ValueError, match=r"want int64 ids and tokens and an int64 step of shape \[1\]"):
        greedy_step(logits, ids, tokens, torch.zeros(2, dtype=torch.long))


def test_the_op_under_torch_compile_and_the_fake_impl() -> None:
    x = _logits(2, 300, torch.float32, seed=5)[:, -1]
    ids, tokens, step = torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), torch.zeros(1).long()

    def body(x: torch.Tensor) -> torch.Tensor:
        greedy_step(x * 1.0, ids, tokens, step)
        return ids + 0

    got = torch.compile(body, backend="aot_eager", fullgraph=True)(x)
    assert torch.equal(got[:, 0], x.argmax(-1)) and int(step) == 1 and torch.equal(tokens[:, 0], x.argmax(-1))
    torch.library.opcheck(torch.ops.tardis.greedy_step.default, (x, ids.clone(), tokens.clone(), step.clone()))


@pytest.mark.skipif(not HAS_TRITON or not INTERPRET, reason="needs Triton and TRITON_INTERPRET=1")
@pytest.mark.parametrize("case", CASES)
def test_the_greedy_kernels_match_argmax_in_the_interpreter(case: tuple) -> None:
    from tardis.kernels.greedy_triton import launch_greedy_step

    b, v, t, s = case
    for dtype in (torch.float32, torch.bfloat16):
        x = _logits(b, v, dtype, seed=b + v)[:, -1]
        ids, tokens = torch.full((b, 1), -7, dtype=torch.long), torch.full((b, t), -7, dtype=torch.long)
        step = torch.tensor([s])
        launch_greedy_step(x, ids, tokens, step)  # the kernels themselves (the CPU op would run torch)
        want = x.float().argmax(-1)
        assert torch.equal(ids[:, 0], want) and torch.equal(tokens[:, min(s, t - 1)], want) and int(step) == s + 1
        assert int((tokens == -7).sum()) == b * (t - 1)


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", CASES)
def test_the_greedy_kernels_match_argmax_on_gpu(case: tuple, dtype: torch.dtype) -> None:
    _check(*case, dtype, "cuda", seed=sum(case))


@pytest.mark.skipif(not HAS_CUDA or not HAS_TRITON, reason="needs CUDA and Triton")
def test_the_greedy_step_replays_in_a_cuda_graph_on_gpu() -> None:
    # captured once, replayed for several steps on new logits: each replay writes its own column and advances step
    x = torch.zeros(4, 65024, dtype=torch.bfloat16, device="cuda")
    ids = torch.zeros(4, 1, dtype=torch.long, device="cuda")
    tokens = torch.zeros(4, 6, dtype=torch.long, device="cuda")
    step = torch.zeros(1, dtype=torch.long, device="cuda")
    greedy_step(x, ids, tokens, step)  # compile outside the capture
    step.zero_()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        greedy_step(x, ids, tokens, step)
    want = []
    for i in range(8):
        x.copy_(_logits(4, 65024, torch.bfloat16, seed=40 + i, device="cuda")[:, -1])
        want.append(x.float().argmax(-1).cpu())
        g.replay()
    torch.cuda.synchronize()
    assert int(step) == 8 and torch.equal(ids[:, 0].cpu(), want[-1])
    assert torch.equal(tokens.cpu(), torch.stack([*want[:5], want[-1]], 1))


@pytest.mark.skipif(not HAS_TRITON, reason="needs Triton (its compiler; no GPU)")
def test_the_greedy_kernels_compile_for_sm90_offline() -> None:
    from sm90 import compile_sm90

    from tardis.kernels import greedy_triton as gt

    ptrs = {"x_ptr": "*bf16", "pv_ptr": "*fp32", "pi_ptr": "*i32", "ids_ptr": "*i64", "tok_ptr": "*i64"}
    compile_sm90(gt._chunk_argmax_kernel, {"CH": gt.CHUNK}, 4, ptrs)
    compile_sm90(gt._greedy_merge_kernel, {"NCP": 32, "RB": gt.ROWS}, 4, ptrs | {"step_ptr": "*i64"})
