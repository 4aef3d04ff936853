"""How fast can kernel 1's predictor programs read their words at all? A bytes-only probe.

The predictor programs of the plane kernel read 20.9 MB of int2 words (Falcon-7B, g128) in ≈ 27–29 µs
(0.8 TB/s) while the Wf programs stream 41 MB in ≈ 15 µs. This probe streams the same words in the
same order and the same grid (one 64-row tile per program, the tile's groups one after another, 2 KB
each), but does no dequantization and no x loads: an integer sum per program, one store. If it reaches
the copy ceiling, the predictor is bound by its instructions (or L1/LSU traffic of x); if it is as slow,
by too few bytes in flight per SM for this access pattern. Variants: groups per load step (bytes in
flight per program), warps, and programs per tile (the groups split in chunks: more streams).
Each time is one launch inside a CUDA graph of 8 distinct word buffers (no buffer stays in L2).

    cd python-worker && python ../bench/pred_probe.py --out /tmp/pred_probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ffn_bench import SHAPES, copy_ceiling, graph_time

from tardis.kernels.blocks import PRED_ROWS as BR  # rows of a predictor tile

WPG = 8  # int2 g128: 8 words of 16 codes per row and group


@triton.jit
def _probe_kernel(qw_ptr, out_ptr, n_groups, chunk, GPS: tl.constexpr, TILE_WORDS: tl.constexpr):
    # program = (tile, chunk of groups): sum the chunk's words' low bytes, GPS groups (GPS·2 KB) per load
    pid = tl.program_id(0)
    n_chunks = tl.cdiv(n_groups, chunk)
    tile = pid // n_chunks
    g0 = (pid % n_chunks) * chunk
    g1 = tl.minimum(g0 + chunk, n_groups)
    base = qw_ptr + tile.to(tl.int64) * n_groups * TILE_WORDS
    offs = tl.arange(0, GPS * TILE_WORDS)
    acc = tl.zeros((GPS * TILE_WORDS,), dtype=tl.int32)
    for g in range(g0, g1, GPS):
        w = tl.load(base + g * TILE_WORDS + offs, mask=offs < (g1 - g) * TILE_WORDS, other=0)
        acc += w & 255  # (no int32 overflow; checked against torch)
    tl.store(out_ptr + pid, tl.sum(acc, axis=0))


def main() -> None:
    """Time each variant at every shape asked for; print a table; write JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="falcon7b")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "/tmp"), "pred_probe.json"))
    args = ap.parse_args()
    ceiling = copy_ceiling()
    rows_out = []
    for shape in args.shapes.split(","):
        d, f = SHAPES[shape]
        n_tiles, n_groups = -(-f // BR), -(-d // 128)
        words = n_tiles * n_groups * WPG * BR
        mb = words * 4 / 1e6
        bufs = [torch.randint(-(2**31), 2**31 - 1, (words,), dtype=torch.int32, device="cuda") for _ in range(8)]
        want = int((bufs[0].view(n_tiles, -1)[0] & 255).sum())  # program 0's words
        out = torch.zeros(n_tiles * n_groups, dtype=torch.int32, device="cuda")
        # the same bytes through a plain read (sum): torch's own streaming pattern, for comparison
        flat = [b.view(torch.float32) for b in bufs]
        t_ref = graph_time([lambda b=b: torch.sum(b.view(-1, 1024), dim=1) for b in flat])
        rows_out.append({"shape": shape, "variant": "torch row sums", "us": t_ref, "tbs": mb / t_ref})
        for gps in (1, 2, 4, 8):
            for warps in (4, 8):
                for split in (1, 4):
                    chunk = -(-n_groups // split)
                    n_prog = n_tiles * -(-n_groups // chunk)

                    def launch(b: torch.Tensor, gps: int = gps, warps: int = warps, chunk: int = chunk,
                               n_prog: int = n_prog, out: torch.Tensor = out, ng: int = n_groups) -> None:  # fmt: skip
                        _probe_kernel[(n_prog,)](b, out, ng, chunk, GPS=gps, TILE_WORDS=WPG * BR, num_warps=warps)

                    launch(bufs[0])
                    if split == 1:  # program 0's sum against torch's
                        assert int(out[0]) == want, (int(out[0]), want)
                    t = graph_time([lambda b=b: launch(b) for b in bufs])
                    rows_out.append({
                        "shape": shape, "variant": f"gps{gps} w{warps} split{split}", "programs": n_prog,
                        "us": t, "tbs": mb / t,
                    })  # fmt: skip
        del bufs, flat
    res = {"gpu": torch.cuda.get_device_name(), "copy_ceiling_tbs": ceiling, "rows": rows_out}
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1)
    print(f"{res['gpu']}  copy ceiling {ceiling:.2f} TB/s  (predictor words, bytes-only)")
    print(f"{'shape':10} {'variant':22} {'programs':>8} {'µs':>7} {'TB/s':>6}")
    for r in rows_out:
        print(f"{r['shape']:10} {r['variant']:22} {r.get('programs', ''):>8} {r['us']:7.1f} {r['tbs']:6.2f}")


if __name__ == "__main__":
    main()
