"""Tensor-parallel TARDIS FFN: 2 real processes (torch.distributed, gloo) against the unsharded reference."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tardis.core.layer import FoldedLayer
from tardis.core.predictor import quantize_rtn
from tardis.engines.vllm import merge_ranks
from tardis.engines.vllm.sharding import block, dense_partial, make_shard, predictor_rows, tardis_partial
from tardis.runtime.reference import dense_ffn, tardis_ffn

D, F, N = 32, 128, 9


def random_layer(seed: int, act: str) -> tuple[FoldedLayer, dict[str, torch.Tensor]]:
    """A folded layer with random (not calibrated) ranges, lines and hot neurons, and its base FFN (float64)."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(F, D, generator=g, dtype=torch.float64) / D**0.5
    b1 = torch.randn(F, generator=g, dtype=torch.float64) * 0.1
    w2 = torch.randn(D, F, generator=g, dtype=torch.float64) / F**0.5
    b2 = torch.randn(D, generator=g, dtype=torch.float64) * 0.1
    lo = -torch.rand(F, generator=g, dtype=torch.float64) - 0.2
    hi = torch.rand(F, generator=g, dtype=torch.float64) + 0.2
    slope = torch.rand(F, generator=g, dtype=torch.float64)
    intercept = torch.randn(F, generator=g, dtype=torch.float64) * 0.05
    hot = torch.zeros(F, dtype=torch.bool)
    hot[torch.randperm(F, generator=g)[:5]] = True
    wf = w2 @ (slope.unsqueeze(1) * w1)
    bf = w2 @ (slope * b1 + intercept) + b2
    layer = FoldedLayer(
        wf=wf,
        bf=bf,
        predictor=quantize_rtn(w1, bits=2, group_size=16),
        lo=lo.float(),
        hi=hi.float(),
        margin=torch.full((F,), 0.05),
        slope=slope.float(),
        intercept=intercept.float(),
        hot=hot,
        act=act,
    )
    return layer, {"w1": w1, "b1": b1, "w2t": w2.T.contiguous(), "b2": b2}


def unsharded(layer: FoldedLayer, base: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference TARDIS FFN on the whole layer."""
    lo_in, hi_in = layer.thresholds()
    return tardis_ffn(
        x, w1=base["w1"], b1=base["b1"], w2t=base["w2t"], wf=layer.wf, bf=layer.bf,
        w1q=layer.predictor.dequantize(torch.float64), lo_in=lo_in, hi_in=hi_in, lo=layer.lo, hi=layer.hi,
        slope=layer.slope, intercept=layer.intercept, act=layer.act,
    )  # fmt: skip


def rank_outputs(
    layer: FoldedLayer, base: dict[str, torch.Tensor], x: torch.Tensor, rank: int, world: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One rank's (TARDIS partial, its flags, dense partial), from its own shards only."""
    shard = make_shard(layer, rank, world, dtype=torch.float64, device="cpu")
    nb = block(F, rank, world)
    local = {"w1": base["w1"][nb], "b1": base["b1"][nb], "w2t": base["w2t"][nb]}
    y, flags = tardis_partial(x, shard, **local)
    dense = dense_partial(x, **local, b2=base["b2"] if rank == 0 else None, act=layer.act)
    return y, flags, dense


ACTS = ("gelu_tanh", "relu")


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for act in ACTS:
            layer, base = random_layer(0, act)
            x = torch.randn(N, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            y, flags, dense = rank_outputs(layer, base, x, rank, world)
            dist.all_reduce(y)  # the one all-reduce, as in vLLM's RowParallelLinear
            dist.all_reduce(dense)
            gathered = [torch.empty_like(flags) for _ in range(world)]
            dist.all_gather(gathered, flags)
            if rank == 0:
                torch.save({"y": y, "dense": dense, "flags": torch.cat(gathered, 1)}, Path(out_dir) / f"{act}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_gloo_ranks_sum_to_the_unsharded_tardis_ffn(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for act in ACTS:
        got: dict[str, Any] = torch.load(tmp_path / f"{act}.pt")
        layer, base = random_layer(0, act)
        x = torch.randn(N, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        y_ref, flags_ref = unsharded(layer, base, x)
        assert torch.equal(got["flags"], flags_ref)
        assert 0 < int(flags_ref.sum()) < flags_ref.numel()  # some neurons corrected, not all
        torch.testing.assert_close(got["y"], y_ref, rtol=1e-12, atol=1e-12)
        dense_ref = dense_ffn(x, base["w1"], base["b1"], base["w2t"], base["b2"], act)
        torch.testing.assert_close(got["dense"], dense_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_in_process_shards_sum_to_the_unsharded_result(world: int) -> None:
    layer, base = random_layer(3, "gelu_tanh")
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    parts = [rank_outputs(layer, base, x, r, world) for r in range(world)]
    y_ref, flags_ref = unsharded(layer, base, x)
    torch.testing.assert_close(sum(p[0] for p in parts), y_ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(torch.cat([p[1] for p in parts], 1), flags_ref)


def test_all_flagged_shards_reproduce_the_dense_ffn() -> None:
    """With every neuron hot, the sharded TARDIS FFN is the dense FFN (folding is undone exactly)."""
    layer, base = random_layer(5, "gelu_tanh")
    layer.hot = torch.ones(F, dtype=torch.bool)
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    y = sum(rank_outputs(layer, base, x, r, 2)[0] for r in range(2))
    torch.testing.assert_close(y, dense_ffn(x, base["w1"], base["b1"], base["w2t"], base["b2"], "gelu_tanh"))


def test_predictor_rows_are_the_rows_of_the_dequantized_predictor() -> None:
    layer, _ = random_layer(7, "relu")
    full = layer.predictor.dequantize()
    torch.testing.assert_close(predictor_rows(layer.predictor, slice(32, 64)).dequantize(), full[32:64])


def test_an_indivisible_split_is_refused_with_the_sizes() -> None:
    with pytest.raises(ValueError, match="1022 is not divisible by the tensor-parallel size 4"):
        block(1022, 0, 4)


def test_counters_of_tensor_parallel_ranks_merge_per_layer() -> None:
    """Ranks hold disjoint neuron blocks: flagged pairs, unions and neurons add; tokens and steps are shared."""
    rank0 = [{"layer": 0, "flagged": 5, "union": 4, "neurons": 64, "tokens": 3, "steps": 3, "dense_tokens": 7}]
    rank1 = [{"layer": 0, "flagged": 2, "union": 2, "neurons": 64, "tokens": 3, "steps": 3, "dense_tokens": 7}]
    assert merge_ranks([rank0, rank1]) == [
        {"layer": 0, "flagged": 7, "union": 6, "neurons": 128, "tokens": 3, "steps": 3, "dense_tokens": 7}
    ]
